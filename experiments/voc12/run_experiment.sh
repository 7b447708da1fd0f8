#!/usr/bin/env bash
# PASCAL VOC 2012 with DeepLab's variables, as DeepLab's exper/run_pascal.sh: train,
# test (MatWrite features), dense CRF, evaluation.  The steps and their completeness
# checks live in deeplab_compile/experiment/, the dataset's defaults (21 classes, the
# VOC label map and palette, train_aug / trainval_aug) in deeplab_compile/data/datasets.py.
#
#   bash experiments/voc12/run_experiment.sh                      # synthetic set, tiny net
#   DATA_ROOT=/data/VOCdevkit/VOC2012 NET_ID=deeplab_largefov bash experiments/voc12/run_experiment.sh
#   DATA_ROOT=/data/VOCdevkit/VOC2012 NET_ID=deeplab_v3plus_xception65 NUM_GPUS=4 bash experiments/voc12/run_experiment.sh
#
# DeepLab's variables, read from the environment:
#   EXP        the experiment folder: config/ list/ model/ log/ features/ res/ (default: here)
#   NET_ID     config/<NET_ID>/ (deeplab_largefov_tiny on the synthetic set, else deeplab_largefov)
#   DATA_ROOT  VOC2012 (+ SegmentationClassAug); empty: the synthetic VOC-layout set in ${EXP}/cache
#   DEV_ID     GPU id, a list of them (0,1,2,3: training on each under torchrun), or cpu
#              (cpu on the synthetic set, else 0)
#   NUM_GPUS   train on N GPUs under torchrun (GPUs 0..N-1 unless DEV_ID lists them); the
#              config's batch is the batch of all N, BatchNorm that trains is synchronized
#   NUM_PROCS  N training processes on DEV_ID's device (NUM_PROCS=2 DEV_ID=cpu: gloo)
#   NUM_LABELS (21), TRAIN_SET_SUFFIX (_aug; '' for train / trainval), TEST_SET (val), TEST_SET2 (test)
#   RUN_TRAIN RUN_TEST RUN_CRF RUN_EVAL (1), RUN_TRAIN2 RUN_TEST2 (0: stage 2 fine-tunes on
#   trainval${TRAIN_SET_SUFFIX} and tests ${TEST_SET2} into features2/), LABEL_MAP, PALETTE
# and the others of `python -c "import deeplab_compile.experiment as e; help(e)"`.
#
# Rerun it to resume: complete steps are skipped, an interrupted one goes on.
set -euo pipefail
export EXPERIMENT_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" DATASET=voc12
exec "${PYTHON:-python}" -m deeplab_compile.experiment "$@"

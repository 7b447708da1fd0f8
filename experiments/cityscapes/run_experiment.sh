#!/usr/bin/env bash
# Cityscapes (fine annotations) with DeepLab's variables: train, test (MatWrite
# features), dense CRF, evaluation on the 19 training classes.  The steps live in
# deeplab_compile/experiment/, the dataset's defaults (19 classes, labelIds -> trainIds,
# its palette, the list layout) in deeplab_compile/data/datasets.py; the configs of
# deeplab_largefov_tiny are experiments/common/config/, shared with ADE20K.
#
#   DATA_ROOT=/data/cityscapes bash experiments/cityscapes/run_experiment.sh
#
# DATA_ROOT (required) holds leftImg8bit/ and gtFine/; list/make_lists.py writes the lists.
# DeepLab's variables as in experiments/voc12/run_experiment.sh: EXP, NET_ID
# (deeplab_largefov_tiny), DEV_ID (0), NUM_LABELS (19), TRAIN_SET_SUFFIX (''), TEST_SET,
# RUN_TRAIN RUN_TEST RUN_CRF RUN_EVAL (1), RUN_TRAIN2 RUN_TEST2 (0), LABEL_MAP, PALETTE;
# several GPUs with NUM_GPUS=4 or DEV_ID=0,1,2,3 (the config's batch is their global batch).
set -euo pipefail
export EXPERIMENT_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" DATASET=cityscapes
exec "${PYTHON:-python}" -m deeplab_compile.experiment "$@"

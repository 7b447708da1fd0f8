#!/usr/bin/env bash
# ADE20K (SceneParsing, ADEChallengeData2016) with DeepLab's variables: train, test
# (MatWrite features), dense CRF, evaluation on the 150 classes.  The steps live in
# deeplab_compile/experiment/, the dataset's defaults (150 classes, annotations 1..150 ->
# 0..149 with 0 ignored, its palette, the list layout) in deeplab_compile/data/datasets.py;
# the configs of deeplab_largefov_tiny are experiments/common/config/, shared with Cityscapes.
#
#   DATA_ROOT=/data/ADEChallengeData2016 bash experiments/ade20k/run_experiment.sh
#
# DATA_ROOT (required) holds images/ and annotations/; list/make_lists.py writes the lists.
# DeepLab's variables as in experiments/voc12/run_experiment.sh: EXP, NET_ID
# (deeplab_largefov_tiny), DEV_ID (0), NUM_LABELS (150), TRAIN_SET_SUFFIX (''), TEST_SET,
# RUN_TRAIN RUN_TEST RUN_CRF RUN_EVAL (1), RUN_TRAIN2 RUN_TEST2 (0), LABEL_MAP, PALETTE;
# several GPUs with NUM_GPUS=4 or DEV_ID=0,1,2,3 (the config's batch is their global batch).
set -euo pipefail
export EXPERIMENT_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" DATASET=ade20k
exec "${PYTHON:-python}" -m deeplab_compile.experiment "$@"

#!/usr/bin/env bash
# PASCAL VOC 2012 with DeepLab's variables, as DeepLab's exper/run_pascal.sh: train,
# test (MatWrite features), dense CRF, evaluation.  The steps and their completeness
# checks live in deeplab_compile/experiment.py; this file only sets the variables.
#
#   bash experiments/voc12/run_experiment.sh                      # synthetic set, tiny net
#   DATA_ROOT=/data/VOCdevkit/VOC2012 NET_ID=deeplab_largefov bash experiments/voc12/run_experiment.sh
#
# Rerun it to resume: complete steps are skipped, an interrupted one goes on.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export EXPERIMENT_HOME="$HERE"            # shipped config/ and list/make_lists.py

export EXP="${EXP:-$HERE}"                 # the experiment folder: config/ list/ model/ log/ features/ res/
export DATA_ROOT="${DATA_ROOT:-}"          # empty: the synthetic VOC-layout set in ${EXP}/cache
if [[ -z "$DATA_ROOT" ]]; then
  export NET_ID="${NET_ID:-deeplab_largefov_tiny}"
  export DEV_ID="${DEV_ID:-cpu}"
else
  export NET_ID="${NET_ID:-deeplab_largefov}"
  export DEV_ID="${DEV_ID:-0}"             # GPU id, or cpu
fi
export NUM_LABELS="${NUM_LABELS:-21}"      # 20 classes + background
export TRAIN_SET_SUFFIX="${TRAIN_SET_SUFFIX-_aug}"   # train_aug / trainval_aug (SBD); '' for train / trainval
export TEST_SET="${TEST_SET:-val}"
export RUN_TRAIN="${RUN_TRAIN:-1}"
export RUN_TEST="${RUN_TEST:-1}"
export RUN_TRAIN2="${RUN_TRAIN2:-0}"       # stage 2: fine-tune on trainval${TRAIN_SET_SUFFIX}
export RUN_TEST2="${RUN_TEST2:-0}"         # stage 2: test on ${TEST_SET2:-test} into features2/
export RUN_CRF="${RUN_CRF:-1}"
export RUN_EVAL="${RUN_EVAL:-1}"
export LABEL_MAP="${LABEL_MAP:-voc}"
export PALETTE="${PALETTE:-voc}"

exec "${PYTHON:-python}" -m deeplab_compile.experiment "$@"

#!/usr/bin/env bash
# ADE20K (SceneParsing, ADEChallengeData2016) with DeepLab's variables: train, test (MatWrite
# features), dense CRF, evaluation on the 150 classes.  The steps live in
# deeplab_compile/experiment.py; this file only sets the variables.
#
#   DATA_ROOT=/data/ADEChallengeData2016 bash experiments/ade20k/run_experiment.sh
#
# DATA_ROOT holds images/ and annotations/; list/make_lists.py writes the lists.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export EXPERIMENT_HOME="$HERE"            # shipped config/ and list/make_lists.py
: "${DATA_ROOT:?set DATA_ROOT to ADEChallengeData2016 (images/, annotations/)}"
export EXP="${EXP:-$HERE}" DATA_ROOT
export NET_ID="${NET_ID:-deeplab_largefov_tiny}"
export DEV_ID="${DEV_ID:-0}"                 # GPU id, or cpu
export NUM_LABELS="${NUM_LABELS:-150}"       # SceneParsing's 150 classes (0 = other is ignored)
export TRAIN_SET_SUFFIX="${TRAIN_SET_SUFFIX-}"   # train / trainval (made from training + validation)
export TEST_SET="${TEST_SET:-val}"
export RUN_TRAIN="${RUN_TRAIN:-1}" RUN_TEST="${RUN_TEST:-1}" RUN_TRAIN2="${RUN_TRAIN2:-0}" RUN_TEST2="${RUN_TEST2:-0}"
export RUN_CRF="${RUN_CRF:-1}" RUN_EVAL="${RUN_EVAL:-1}"
export LABEL_MAP="${LABEL_MAP:-ade20k}"      # annotations 1..150 -> 0..149, 0 -> 255
export PALETTE="${PALETTE:-ade20k}"
exec "${PYTHON:-python}" -m deeplab_compile.experiment "$@"

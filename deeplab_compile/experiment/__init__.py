"""The experiment driver behind ``experiments/<dataset>/run_experiment.sh``.

DeepLab's ``run_pascal.sh`` as steps that check their own outputs.  The shell script
names its dataset (``DATASET``) and calls ``python -m deeplab_compile.experiment``;
everything is read from the environment, with the defaults of the dataset's entry in
:mod:`deeplab_compile.data.datasets`:

==================  ==============================================================
``DATASET``         ``voc12``, ``cityscapes`` or ``ade20k`` (set by the script)
``EXP``             the experiment folder (``experiments/voc12``); configs are read from
                    ``${EXP}/config/<NET_ID>``, else from ``EXPERIMENT_HOME`` (the
                    script's folder), else from ``experiments/common/config``
``NET_ID``          ``config/<NET_ID>/{solver,solver2,train,test,crf}.yaml``, or a DeepLab
                    user's own ``{train,test,solver,solver2}.prototxt`` used as they are
                    (:mod:`.caffe_config`)
``NUM_LABELS``      classes (the dataset's: 21, 19, 150)
``DATA_ROOT``       the dataset; empty (VOC only): the synthetic set, made once in
                    ``${CACHE_DIR}`` (``${EXP}/cache``)
``DEV_ID``          GPU id, a list of them (``0,1,2,3``), or ``cpu`` (default ``cpu`` on the
                    synthetic set, else 0)
``NUM_GPUS``        train on N GPUs under torchrun; ``NUM_PROCS``: N training processes on
                    ``DEV_ID``'s device (``cpu``: gloo).  See :mod:`.devices`: the config's
                    batch is the batch of all N processes, BatchNorm that trains is
                    synchronized, test/CRF/evaluation stay one process
``TRAIN_SET_SUFFIX`` VOC ``_aug``: stage 1 trains on ``train${SUFFIX}``, stage 2 on
                    ``trainval${SUFFIX}`` (as DeepLab)
``RUN_TRAIN`` ...   ``RUN_TRAIN``, ``RUN_TEST``, ``RUN_CRF``, ``RUN_EVAL`` (default 1),
                    ``RUN_TRAIN2``, ``RUN_TEST2`` (default 0): 1 runs the step
==================  ==============================================================

and the folders, each overridable: ``CONFIG_DIR``, ``LIST_DIR`` (``${EXP}/list``),
``MODEL_DIR``, ``LOG_DIR``, ``FEATURE_DIR``, ``FEATURE2_DIR``, ``RES_DIR``
(``${EXP}/<folder>/<NET_ID>``).  ``TEST_SET`` (val) and ``TEST_SET2`` (test) name the
lists tested; ``MAX_ITER``, ``MAX_ITER2``, ``SEED``, ``TEST_CROP``, ``TRAIN_CROP``,
``BATCH_SIZE``, ``ITER_SIZE``, ``TRAIN_OUTPUT_STRIDE``, ``OUTPUT_STRIDE``, ``EVAL_SCALES``,
``EVAL_FLIP`` and ``RESIZE_MIN``/``RESIZE_MAX``/``RESIZE_FACTOR`` (ADE20K's resize_to_range) are passed with ``-D`` to the configs that declare them, when set (a
test config's ``EVAL_SCALES``, ``EVAL_FLIP`` and ``PREPROCESS`` also pick the test
step's scales, flip and preprocessing), and so are ``PRECISION`` and ``CHANNELS_LAST``
(1, 0 or ``auto``; :func:`.settings.precision_defines`; the test step takes
``--channels-last`` for 1 only); ``NUM_IMAGES``, ``IMAGE_MIN``, ``IMAGE_MAX`` size the
synthetic set; ``LABEL_MAP`` and ``PALETTE`` override the dataset's label mapping and
colours; ``CRF_JOBS`` the images the CRF runs at once; ``SBD_ROOT`` (VOC) SBD's lists.

Each step skips itself when its outputs are complete, and otherwise does only what is
missing:

* train: ``<MODEL_DIR>/train_iter_<max_iter>.pt`` exists (``max_iter`` read from the
  solver with the same ``-D`` values); else it resumes from the snapshot with the largest
  iteration number in its name, never from the newest file;
* test: every id of the list has a readable, whole feature file newer than the model;
  else only the missing ids are tested;
* crf: every feature has a CRF PNG newer than it;
* eval: the JSON result is newer than every prediction it reads.

Each step also records what its outputs were made from (:mod:`.provenance`: DATA_ROOT,
the list's, configs' and model's digests); when the run's inputs differ, test, CRF,
evaluation and made lists are redone, and a trained model is refused in one line (exit
2).  Before the first step the layout of DATA_ROOT is checked: every folder the steps
read, all missing ones named in one line (exit 2).  ``RUN_*`` switches are 1/0
(true/false, yes/no, on/off); anything else is an error.

A step that fails stops the run with its name and its log file (exit status 1).

The modules: :mod:`.settings` (the variables and configs), :mod:`.caffe_config` (a
folder of DeepLab's prototxts), :mod:`.runner` (a step's log and errors), :mod:`.steps`
(data, train, test, CRF, evaluation), :mod:`.provenance` (the records), :mod:`.report`
(the table and the picture), :mod:`.driver` (the order of the steps, exit codes),
:mod:`.devices` (DEV_ID, NUM_GPUS, NUM_PROCS) and :mod:`.launch` (the training step
under torchrun).
"""
from .driver import main

__all__ = ["main"]

"""Training: ``caffe train --solver=... --weights=...`` for compiled nets, one concern per
module, each importing only those above it in this list:

==============  ==================================================================
lr_policy.py    Caffe's learning-rate policies and TF DeepLab's warm-up
solver.py       the solver file: schema, ``${VAR}`` substitution, loading, the check
                of a converted Caffe ``solver.prototxt``
optim.py        ``CaffeSGD``, Caffe's SGD update
mining.py       hard-pixel mining: ``TopKSoftmaxLoss`` and its annealed ratio
distributed.py  torchrun's processes, the device choice, ``SyncCaffeBatchNorm``, a dead rank
runlog.py       ``train.log``, TensorBoard events, the loss plot
net.py          ``build_train_net``: the solver's net compiled in the TRAIN phase
loop.py         ``train()``: setting up, resume, iterations, snapshots, the end
==============  ==================================================================

``deeplab-train`` (:mod:`deeplab_compile.cli.train`) calls
:func:`.solver.load_solver` and :func:`.loop.train`.
"""

"""``deeplab-train``: train a net with a Caffe-style solver.

    deeplab-train --solver config/solver.yaml [--weights init.caffemodel|init.pt]
                  [--resume model/train_iter_2000.pt] [--gpu 0|cpu] [-D name=value]
    torchrun --nproc_per_node=4 -m deeplab_compile.cli.train --solver config/solver.yaml \
             [--global-batch] [--sync-bn]

Under torchrun, process 0 writes the log, the progress bar and the last line; an error
that every process meets alike (a setting, a file, the batch split) is printed by
process 0 only.
"""
from __future__ import annotations

import argparse
import sys

from .common import Parser, add_param_limit, entry_point


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="deeplab-train", description="Train a compiled DeepLab net with a "
               "Caffe-style solver (caffe train --solver=... --weights=...).")
    p.add_argument("--solver", required=True, help="solver YAML, or a Caffe solver.prototxt")
    p.add_argument("--weights", help="initial weights: .pt state dict or snapshot, or .caffemodel "
                                     "(overrides the solver's 'weights')")
    p.add_argument("--resume", metavar="SNAPSHOT", help="continue from a <prefix>_iter_<N>.pt snapshot")
    p.add_argument("--gpu", help="CUDA device index, or 'cpu' (default: the solver's, if CUDA exists)")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                   help="set a solver/netdef variable (repeatable), e.g. -D num_classes=59")
    p.add_argument("--log-dir", help="where train.log, TensorBoard events and loss.png go "
                                     "(default: the solver's log_dir, else log/ beside the snapshots)")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: the data section's, 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--global-batch", action="store_true",
                   help="under torchrun: the data layer's batch_size is the batch of all N processes together, "
                        "each taking batch_size/N (the v3/v3+ papers' batch; default: each process takes "
                        "batch_size, as Caffe's multi-GPU training)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: BatchNorm statistics of the whole batch (the solver's sync_bn: true)")
    add_param_limit(p)
    return p


def _let_process_0_speak(wait: float = 30.0) -> None:
    """A process that keeps quiet about an error process 0 prints waits before it exits:
    torchrun stops every process as soon as one ends, and process 0 must not be stopped
    before it has said why.  torchrun's SIGTERM ends the wait."""
    import time
    time.sleep(wait)


@entry_point
def main(argv: list[str] | None = None) -> int:
    from ..errors import DeepLabError
    from ..training.loop import TrainingInterrupted, train
    from ..training.solver import load_solver
    from .compile import parse_defines
    from ..training.distributed import dist_env
    args = build_parser().parse_args(argv)
    rank = dist_env()[0]
    try:
        if args.weights and args.resume:
            raise DeepLabError("--weights and --resume exclude each other",
                               hint="--resume restores the weights of the snapshot")
        solver = load_solver(args.solver, parse_defines(args.defines))
        if args.sync_bn:
            solver.sync_bn = True
        result = train(solver, weights=args.weights, resume=args.resume, gpu=args.gpu, log_dir=args.log_dir,
                       progress=not args.no_progress and sys.stderr.isatty(), num_workers=args.workers,
                       global_batch=args.global_batch)
    except TrainingInterrupted as e:
        if e.main:                     # under torchrun, process 0 says it for all
            print(f"deeplab-train: {e}", file=sys.stderr)
        return 128 + e.signum          # 130 after Ctrl-C, 143 after SIGTERM
    except DeepLabError as e:
        # train() says which process prints it; an error before it (arguments, the
        # solver file) is the same in every process: process 0 prints it.  (Printed
        # here, not by entry_point: under torchrun sys.argv[0] is train.py.)
        if e.main if hasattr(e, "main") else rank == 0:
            print(f"deeplab-train: error: {e}", file=sys.stderr)
        else:
            _let_process_0_speak()
        return 2
    if result.snapshot and rank == 0:
        print(f"iteration {result.iter}, loss {result.loss:.6g}; snapshot {result.snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

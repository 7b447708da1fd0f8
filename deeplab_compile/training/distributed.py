"""Several processes under ``torchrun``: the process environment, the process group, the
device each process uses, and BatchNorm synchronized across processes (``sync_bn``).

``torchrun --nproc_per_node=N deeplab-train ...`` starts N processes; :func:`init_distributed`
joins them (gloo on CPU, NCCL on GPUs), the loop wraps the net in
DistributedDataParallel, and ``sync_bn: true`` swaps every BatchNorm for
:class:`SyncCaffeBatchNorm` (:func:`convert_sync_bn`), so that its statistics are those
of the whole batch.  :func:`pick_device` is the ``--gpu`` choice, shared with
``deeplab-test``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from ..errors import DeepLabError

if TYPE_CHECKING:
    from .solver import Solver


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) alone."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> tuple[int, int]:
    rank, world, _ = dist_env()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class SyncCaffeBatchNorm(nn.Module):
    """Wraps a CaffeBatchNorm so that, in training with batch statistics, mean and
    variance are those of the whole batch across processes (the gradient flows through
    the all-reduce).  Running estimates are updated exactly as Caffe's layer would with
    the global batch."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        use_global = (not self.training) if bn.use_global_stats is None else bn.use_global_stats
        if use_global or not dist.is_initialized() or dist.get_world_size() == 1:
            return bn(x)
        from torch.distributed.nn.functional import all_reduce
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() / max(x.shape[1], 1)])
        packed = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c:2 * c] / n - mean * mean).clamp_min(0)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
        if self.training:
            with torch.no_grad():
                unbiased = var * (n / (n - 1)) if n > 1 else var
                lam = bn.moving_average_fraction
                w_new = lam * bn.running_weight + 1.0
                keep = lam * bn.running_weight / w_new
                bn.running_mean.mul_(keep).add_(mean.detach() / w_new)
                bn.running_var.mul_(keep).add_(unbiased.detach() / w_new)
                bn.running_weight.copy_(w_new)
        return y


def convert_sync_bn(net: nn.Module) -> int:
    """Swap every BatchNorm of a compiled net for its synchronized form; returns how many."""
    from ..layers.batch_norm import CaffeBatchNorm
    n = 0
    for name, mod in list(net.named_children()):
        if isinstance(mod, CaffeBatchNorm):
            setattr(net, name, SyncCaffeBatchNorm(mod))
            n += 1
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, nn.SyncBatchNorm.convert_sync_batchnorm(mod))
            n += 1
    return n


def pick_device(gpu: str | int | None, solver: Solver | None = None) -> torch.device:
    """``--gpu``: ``cpu``, a CUDA index, or None (the solver's device when CUDA exists)."""
    _, world, local = dist_env()
    if gpu is not None and str(gpu).lower() == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if gpu is not None:
            raise DeepLabError(f"--gpu {gpu}: no CUDA device is available", hint="use --gpu cpu")
        return torch.device("cpu")
    if world > 1:
        return torch.device("cuda", local)
    if gpu is not None:
        try:
            idx = int(gpu)
        except ValueError:
            raise DeepLabError(f"--gpu takes a device index or 'cpu', got {gpu!r}") from None
        if not 0 <= idx < torch.cuda.device_count():
            raise DeepLabError(f"--gpu {idx}: there are {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", idx)
    if solver is not None and solver.solver_mode == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", solver.device_id if solver else 0)

"""Several processes under ``torchrun``: the process environment, the process group, the
device each process uses, and BatchNorm synchronized across processes (``sync_bn``).

``torchrun --nproc_per_node=N deeplab-train ...`` starts N processes; :func:`init_distributed`
joins them (gloo on CPU, NCCL on GPUs), the loop wraps the net in
DistributedDataParallel, and ``sync_bn: true`` swaps every BatchNorm for
:class:`SyncCaffeBatchNorm` (:func:`convert_sync_bn`), so that its statistics are those
of the whole batch; the swap keeps the layer's name and tensors, so snapshots hold the
net's own names.  :func:`pick_device` is the ``--gpu`` choice, shared with
``deeplab-test``.

When a process dies (killed, out of memory, its own error), a collective of the others
fails with gloo's or NCCL's error.  :func:`peer_lost` turns that into one
:class:`PeerLost` line naming the dead rank: each process learns every other one's host
and pid at start (:func:`process_table`), and a process of the same machine that is no
longer running is the one that died.
"""
from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from ..errors import DeepLabError
from ..layers.batch_norm import CaffeBatchNorm

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


class SyncCaffeBatchNorm(CaffeBatchNorm):
    """A CaffeBatchNorm whose batch statistics, in training, are those of the whole batch
    across processes (the gradient flows through the all-reduce).  Running estimates are
    updated exactly as Caffe's layer would with the global batch.

    It is the same layer with another forward: :meth:`of` shares the buffers of the
    layer it replaces, so the net's tensor names (``bn1.running_mean``) do not change and
    a snapshot of a SyncBN run loads into the plain net."""

    @classmethod
    def of(cls, bn: CaffeBatchNorm) -> "SyncCaffeBatchNorm":
        new = cls(channels=bn.channels, use_global_stats=bn.use_global_stats,
                  moving_average_fraction=bn.moving_average_fraction, eps=bn.eps,
                  update_global_stats=bn.update_global_stats)
        for name, buf in bn.named_buffers(recurse=False):
            setattr(new, name, buf)
        new.train(bn.training)
        return new

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        use_global = (not self.training) if self.use_global_stats is None else self.use_global_stats
        if use_global or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x, weight, bias)
        from torch.distributed.nn.functional import all_reduce
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() / max(x.shape[1], 1)])
        packed = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c:2 * c] / n - mean * mean).clamp_min(0)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.training:
            with torch.no_grad():
                unbiased = var * (n / (n - 1)) if n > 1 else var
                lam = self.moving_average_fraction
                w_new = lam * self.running_weight + 1.0
                keep = lam * self.running_weight / w_new
                self.running_mean.mul_(keep).add_(mean.detach() / w_new)
                self.running_var.mul_(keep).add_(unbiased.detach() / w_new)
                self.running_weight.copy_(w_new)
        if weight is not None:              # the Scale after it (deeplab_compile.lower.merge_bn_scale)
            y = y * weight.view(shape)
        if bias is not None:
            y = y + bias.view(shape)
        return y


def convert_sync_bn(net: nn.Module) -> int:
    """Swap every BatchNorm of a compiled net that normalizes with batch statistics in
    training for its synchronized form, under the same name and with the same tensors;
    returns how many.  A frozen one (``use_global_stats: true``, DeepLab v2's ResNets)
    reads its running estimates and stays as it is."""
    n = 0
    for name, mod in list(net.named_children()):
        if isinstance(mod, CaffeBatchNorm) and mod.use_global_stats is True:
            continue
        if isinstance(mod, CaffeBatchNorm) and not isinstance(mod, SyncCaffeBatchNorm):
            setattr(net, name, SyncCaffeBatchNorm.of(mod))
            n += 1
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and not isinstance(mod, nn.SyncBatchNorm):
            setattr(net, name, nn.SyncBatchNorm.convert_sync_batchnorm(mod))
            n += 1
    return n


def unwrap(model: nn.Module) -> nn.Module:
    """The net inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------- a process that dies

class PeerLost(DeepLabError):
    """Another process of the run died: this one stops too."""


def process_table() -> list[tuple[str, int]]:
    """(host, pid) of every process, by rank (a collective: every process calls it)."""
    me = (socket.gethostname(), os.getpid())
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [me]
    table: list = [None] * dist.get_world_size()
    dist.all_gather_object(table, me)
    return [tuple(t) for t in table]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def dead_ranks(table: list[tuple[str, int]], rank: int, wait: float = 5.0) -> list[int]:
    """The ranks of this machine's processes that are no longer running, waiting up to
    ``wait`` seconds for one to end (a process whose socket just closed is still exiting)."""
    host = socket.gethostname()
    peers = [(r, pid) for r, (h, pid) in enumerate(table) if r != rank and h == host]
    deadline = time.monotonic() + wait
    while True:
        dead = [r for r, pid in peers if not _alive(pid)]
        if dead or time.monotonic() >= deadline or not peers:
            return dead
        time.sleep(0.1)


_LINK_WORDS = ("connection", "gloo", "nccl", "peer", "broken pipe", "timed out", "timeout", "socket")


def peer_lost(err: BaseException, table: list[tuple[str, int]] | None, rank: int, at: int | None) -> PeerLost | None:
    """The one-line error for a collective that failed because another process died, or
    None when ``err`` is not such a failure."""
    if not isinstance(err, RuntimeError) or not table or len(table) < 2:
        return None
    text = str(err).lower()
    is_link = isinstance(err, getattr(dist, "DistError", ())) or any(w in text for w in _LINK_WORDS)
    dead = dead_ranks(table, rank, wait=5.0 if is_link else 1.0)
    where = f" at iteration {at}" if at is not None else ""
    if dead:
        who = ", ".join(f"rank {r} (pid {table[r][1]})" for r in dead)
        return PeerLost(f"the process of {who} died{where}; rank {rank} stops too",
                        hint="see that process's own message above (or torchrun's summary) for why; "
                             "continue with --resume from the last snapshot")
    if is_link:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return PeerLost(f"rank {rank} lost contact with the other processes{where} ({first[:160]})",
                        hint="another process stopped or the network failed; "
                             "continue with --resume from the last snapshot")
    return None


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

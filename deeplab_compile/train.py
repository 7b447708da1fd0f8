"""Training: ``caffe train --solver=... --weights=...`` for compiled nets.

``train(solver)`` runs Caffe's loop (``Solver::Step``) on the TRAIN phase of the solver's
net: for each iteration, ``iter_size`` forward/backward passes accumulate gradients,
the learning rate of the policy is set, and :class:`~deeplab_compile.solver.CaffeSGD`
applies Caffe's update.  Around that loop:

* data: the net's data layer through :func:`deeplab_compile.data.pipeline_for`
  (DataLoader workers; the batches depend only on the seed and the iteration);
* display every ``display`` iterations: the loss smoothed over ``average_loss``
  iterations as Caffe prints it, the rate, and every net output (SegAccuracy's
  accuracy / mean recall / mean IoU); a tqdm bar shows loss and rate;
* ``<log_dir>/train.log`` (plain text), TensorBoard event files in ``<log_dir>``, and
  ``<log_dir>/loss.png`` (the loss curve) when training stops;
* snapshots ``<snapshot_prefix>_iter_<N>.pt`` every ``snapshot`` iterations and at the
  end, written atomically, with model, optimizer, iteration and RNG states;
  ``resume=`` continues a run exactly (N straight iterations give the same weights as
  N/2, a resume, and N/2 more);
* Ctrl-C: the current iteration is abandoned, a snapshot of the last finished one is
  written, and :class:`TrainingInterrupted` is raised (exit 130 from the command);
* a NaN or infinite loss stops before the update with :class:`TrainingDiverged`,
  naming the iteration and the last good snapshot; nothing is written;
* ``torchrun --nproc_per_node=N deeplab-train ...``: DistributedDataParallel with a
  DistributedSampler share of the data per process (gloo on CPU, NCCL on GPUs), and
  ``sync_bn: true`` makes BatchNorm use the statistics of the whole batch.
"""
from __future__ import annotations

import collections
import datetime
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .caffe.caffemodel import check_state_dict
from .errors import DeepLabError
from .io.checkpoint import CheckpointError, rng_state, save_snapshot, set_rng_state
from .solver import CaffeSGD, Solver, SolverError, hard_pixel_ratio, install_hard_mining, resolve_path
from .weights import init_weights, load_snapshot


class TrainingDiverged(DeepLabError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(DeepLabError):
    """Ctrl-C: a snapshot of the last finished iteration was written."""


# --------------------------------------------------------------------------- distributed

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
    from .layers.batch_norm import CaffeBatchNorm
    n = 0
    for name, mod in list(net.named_children()):
        if isinstance(mod, CaffeBatchNorm):
            setattr(net, name, SyncCaffeBatchNorm(mod))
            n += 1
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, nn.SyncBatchNorm.convert_sync_batchnorm(mod))
            n += 1
    return n


# --------------------------------------------------------------------------- logging

class RunLog:
    """Plain-text log, TensorBoard events and the loss history (process 0 only)."""

    def __init__(self, log_dir: str | None, *, enabled: bool, echo, resume: bool):
        self.dir, self.enabled, self.echo = log_dir, enabled and bool(log_dir), echo
        self.file = None
        self.tb = None
        self.notes: list[str] = []
        if not self.enabled:
            return
        os.makedirs(log_dir, exist_ok=True)
        self.file = open(os.path.join(log_dir, "train.log"), "a" if resume else "w", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir)
        except Exception as e:      # tensorboard not installed: the text log still has everything
            self.notes.append(f"TensorBoard event files are not written ({type(e).__name__}: {e}); "
                              "pip install tensorboard to get them")

    def line(self, text: str, *, echo: bool = True) -> None:
        if self.file:
            stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            self.file.write(f"{stamp} {text}\n")
            self.file.flush()
        if echo and self.echo:
            self.echo(text)

    def scalars(self, it: int, values: dict[str, float]) -> None:
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, it)

    def close(self) -> None:
        if self.tb:
            self.tb.flush()
            self.tb.close()
        if self.file:
            self.file.close()


def plot_losses(history: dict[str, list], path: str, average: int = 1) -> str:
    """Write the loss curve (raw and smoothed over ``average``) and the rate as a PNG."""
    from .io.atomic import atomic_path
    its, losses, lrs = history["iter"], history["loss"], history["lr"]
    if not its:
        return ""
    k = max(average, 1)
    cs = np.cumsum(np.insert(np.asarray(losses, np.float64), 0, 0.0))
    smooth = [(cs[i + 1] - cs[max(0, i + 1 - k)]) / min(i + 1, k) for i in range(len(losses))]
    with atomic_path(path) as tmp:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
            ax.plot(its, losses, lw=0.6, alpha=0.4, color="tab:blue", label="loss")
            ax.plot(its, smooth, lw=1.5, color="tab:blue", label=f"loss (mean of {k})")
            ax.set_xlabel("iteration")
            ax.set_ylabel("loss")
            ax2 = ax.twinx()
            ax2.plot(its, lrs, lw=1, color="tab:orange", label="lr")
            ax2.set_ylabel("learning rate")
            ax.legend(loc="upper right")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(tmp, format="png")
            plt.close(fig)
        except ImportError:
            _plot_pillow(its, losses, smooth, tmp)
    return path


def _plot_pillow(its, losses, smooth, path) -> None:
    from PIL import Image, ImageDraw
    w, h, m = 800, 450, 40
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    lo, hi = min(losses), max(losses)
    hi = hi if hi > lo else lo + 1
    x0, x1 = its[0], max(its[-1], its[0] + 1)

    def pt(i, v):
        return m + (i - x0) / (x1 - x0) * (w - 2 * m), h - m - (v - lo) / (hi - lo) * (h - 2 * m)

    d.rectangle([m, m, w - m, h - m], outline="black")
    d.line([pt(i, v) for i, v in zip(its, losses)], fill=(160, 190, 230), width=1)
    d.line([pt(i, v) for i, v in zip(its, smooth)], fill=(20, 80, 180), width=2)
    d.text((m, 10), f"loss  {lo:.4g} .. {hi:.4g}   iterations {x0} .. {its[-1]}", fill="black")
    im.save(path, format="PNG")


# --------------------------------------------------------------------------- the run

@dataclass
class TrainResult:
    iter: int
    loss: float
    snapshot: str | None
    log_dir: str | None
    history: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)


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


def snapshot_path(prefix: str, it: int) -> str:
    return f"{prefix}_iter_{it}.pt"


def default_prefix(solver: Solver) -> str:
    if solver.snapshot_prefix:
        return solver.snapshot_prefix
    return os.path.splitext(solver.path)[0]


def _declared_vars(net_path: str, given: dict) -> dict:
    """The netdef's variables, its includes' too.  Its own values among ``given`` are
    passed to the expansion, so that a netdef with required (``~``) variables, such as a
    prototxt's ``${DATA_ROOT}``, can be read."""
    from .compiler import load_netdef
    from .netdef.parse import load
    own = load(net_path).get("vars") or {}
    return load_netdef(net_path, vars={k: v for k, v in given.items() if k in own}).get("vars") or {}


def build_train_net(solver: Solver, *, seed: int, batch_size: int | None = None):
    """Compile the solver's net in the TRAIN phase with inputs sized by its data layer.
    Returns ``(net, data_spec)``."""
    from .compiler import build_net, compile_net, load_netdef
    from .data.spec import resolve_spec
    net_path = resolve_path(solver, solver.net)
    if not os.path.exists(net_path):
        raise solver.error(f"net '{solver.net}' does not exist", "net", "give the netdef path")
    net_vars = solver.net_vars(_declared_vars(net_path, solver.vars))
    ir = build_net(net_path, phase="train", vars=net_vars)
    spec = resolve_spec(ir, "train", solver.data or None)
    if batch_size:
        spec.batch_size = batch_size
    inputs = {}
    b, h, w = spec.batch_size, spec.crop_height, spec.crop_width
    for name, shape in ir.inputs.items():
        if name == spec.tops[0]:
            inputs[name] = (b, shape[1], h, w)
        elif len(spec.tops) > 1 and name == spec.tops[1] and spec.label_type == "pixel":
            inputs[name] = (b, shape[1], h, w)
    torch.manual_seed(seed)
    # never fused: the passes are for inference, and training walks the netdef's layers
    net = compile_net(net_path, phase="train", vars=net_vars, inputs=inputs or None, fuse=False)
    if spec.num_classes is None:
        from .data.spec import net_num_classes
        spec.num_classes = net_num_classes(net.net)
    return net, spec


class _StopFlag:
    """SIGINT sets a flag checked between iterations; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:          # not the main thread
            self._old = None
        return self

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def train(solver: Solver, *, weights: str | None = None, resume: str | None = None,
          gpu: str | int | None = None, log_dir: str | None = None, progress: bool = True,
          num_workers: int | None = None, max_iter: int | None = None, echo=None) -> TrainResult:
    """Run the solver.  ``max_iter`` stops early (for tests; the schedule still uses the
    solver's).  ``echo`` receives display lines (default: ``tqdm.write``/print on
    process 0)."""
    device = pick_device(gpu, solver)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = init_distributed(device)
    main_proc = rank == 0

    snap = load_snapshot(resume) if resume else None
    if snap is not None:
        seed = int(snap["seed"])
        if snap.get("world_size", 1) != world:
            raise CheckpointError(f"'{resume}' was written by {snap.get('world_size', 1)} process(es), "
                                  f"this run has {world}", hint="resume with the same number of processes")
    elif solver.random_seed >= 0:
        seed = solver.random_seed
    else:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        if world > 1:
            t = torch.tensor([seed])
            dist.broadcast(t, 0)
            seed = int(t)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    net, spec = build_train_net(solver, seed=seed)
    # dropout and other module randomness: a distinct stream per process
    torch.manual_seed(seed + 1000003 * rank)

    prefix = default_prefix(solver)
    log_dir = log_dir or solver.log_dir or os.path.join(os.path.dirname(prefix) or ".", "log")
    if echo is None:
        def echo(text):
            try:
                from tqdm import tqdm
                tqdm.write(text, file=sys.stderr)
            except ImportError:
                print(text, file=sys.stderr)
    log = RunLog(log_dir, enabled=main_proc, echo=echo if main_proc else None, resume=snap is not None)
    try:
        return _run(solver, net, spec, device=device, rank=rank, world=world, seed=seed, snap=snap,
                    weights=weights, resume=resume, prefix=prefix, log=log, progress=progress and main_proc,
                    num_workers=num_workers, stop_at=max_iter)
    finally:
        log.close()


def _run(solver, net, spec, *, device, rank, world, seed, snap, weights, resume, prefix, log, progress,
         num_workers, stop_at) -> TrainResult:
    from .data import pipeline_for
    main_proc = rank == 0
    for note in log.notes:
        log.line(note)
    start = 0
    history = {"iter": [], "loss": [], "lr": []}
    if snap is not None:
        state = check_state_dict(net, snap["model"], resume)
        with torch.no_grad():
            net.load_state_dict(state)
        start = int(snap["iter"])
        history = {k: list(v) for k, v in snap.get("history", history).items()}
        log.line(f"Resuming from {resume} at iteration {start}")
    else:
        init = weights or (resolve_path(solver, solver.weights) if solver.weights else None)
        if init:
            log.line(init_weights(net, init).line(init))
    if solver.sync_bn and world > 1:
        n = convert_sync_bn(net)
        log.line(f"SyncBatchNorm: {n} layer(s) synchronized across {world} processes")
    miners = install_hard_mining(net) if solver.top_k_percent_pixels < 1.0 else []
    net.to(device)
    model: nn.Module = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = CaffeSGD(net.param_groups(), momentum=solver.momentum, regularization=solver.regularization_type,
                   iter_size=solver.iter_size, clip_gradients=solver.clip_gradients)
    if snap is not None:
        opt.load_state_dict(snap["optimizer"])
        states = snap.get("rng") or []
        if rank < len(states):
            set_rng_state(states[rank])

    per_iter = spec.batch_size * solver.iter_size
    pipe = pipeline_for(net, "train", spec, seed=seed, rank=rank, world_size=world, start=start * per_iter,
                        num_workers=num_workers)
    end = solver.max_iter if stop_at is None else min(stop_at, solver.max_iter)
    if main_proc and start == 0:
        n_params = sum(p.numel() for p in net.parameters())
        log.line(f"Net {net.net.name} from {solver.net}: {n_params:,} parameters; "
                 f"data {spec.source} ({len(pipe.dataset)} images, batch {spec.batch_size} x {world} "
                 f"process(es), crop {spec.crop_height}x{spec.crop_width}); seed {seed}; device {device}")
    smoothed: collections.deque = collections.deque(
        history["loss"][-solver.average_loss:], maxlen=solver.average_loss)
    last_snapshot = None
    it = start
    loss_value = float("nan")
    outputs: dict[str, float] = {}
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=end, initial=start, desc="train", unit="it", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            bar = None
    stream = iter(pipe)
    t0, it0 = time.perf_counter(), start

    def snapshot(at: int) -> str | None:
        nonlocal last_snapshot
        states = [rng_state()]
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if not main_proc:
            return None
        path = snapshot_path(prefix, at)
        save_snapshot(path, {"iter": at, "model": net.state_dict(), "optimizer": opt.state_dict(),
                             "rng": states, "seed": seed, "world_size": world, "history": history,
                             "solver": solver.to_dict(), "net": solver.net, "vars": dict(solver.vars)})
        log.line(f"Snapshotting to {path}")
        last_snapshot = path
        return path

    interrupted = False
    try:
        with _StopFlag() as stop:
            while it < end:
                rate = solver.lr(it)
                opt.set_rate(rate, solver.weight_decay)
                for m in miners:
                    m.ratio = hard_pixel_ratio(solver, it)
                opt.zero_grad(set_to_none=True)
                total, outs = 0.0, collections.defaultdict(float)
                try:
                    for k in range(solver.iter_size):
                        batch = next(stream)
                        feeds = pipe.feeds(batch, device)
                        sync = world == 1 or k == solver.iter_size - 1
                        ctx = model.no_sync() if not sync else _null()
                        with ctx:
                            out = model(*feeds)
                            loss = net.total_loss(out)
                            loss.backward()
                        total += float(loss.detach())
                        for name, v in out.items():
                            v = v.detach().reshape(-1)
                            for j, x in enumerate(v.tolist()):
                                outs[f"{name}" if v.numel() == 1 else f"{name}/{j}"] += x / solver.iter_size
                except (RuntimeError, StopIteration) as e:
                    if stop.set:             # a worker died of the same Ctrl-C
                        break
                    raise
                loss_value = total / solver.iter_size
                flags = torch.tensor([0.0 if math.isfinite(loss_value) else 1.0, 1.0 if stop.set else 0.0])
                if world > 1:
                    dist.all_reduce(flags)
                if flags[0] > 0:
                    keep = last_snapshot or (resume if resume else None)
                    raise TrainingDiverged(
                        f"loss is {loss_value} at iteration {it}" + (f" (on {int(flags[0])} process(es))"
                                                                      if world > 1 else ""),
                        hint=(f"the last good snapshot is {keep}; " if keep else "no snapshot was written; ")
                        + "lower base_lr, or check the data and the weights")
                opt.step()
                it += 1
                smoothed.append(loss_value)
                history["iter"].append(it)
                history["loss"].append(loss_value)
                history["lr"].append(rate)
                outputs = dict(outs)
                if main_proc:
                    log.scalars(it, {"train/loss": loss_value, "train/lr": rate,
                                     **{f"train/{k}": v for k, v in outputs.items()}})
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{sum(smoothed) / len(smoothed):.4f}", lr=f"{rate:.3g}")
                    if solver.display and it % solver.display == 0:
                        dt = time.perf_counter() - t0
                        speed = (it - it0) / dt if dt > 0 else 0.0
                        t0, it0 = time.perf_counter(), it
                        log.line(f"Iteration {it} ({speed:.3g} iter/s), loss = {sum(smoothed) / len(smoothed):.6g}"
                                 f", lr = {rate:.6g}", echo=bar is None)
                        for k, v in outputs.items():
                            log.line(f"    Train net output: {k} = {v:.6g}", echo=False)
                if solver.snapshot and it % solver.snapshot == 0 and it < solver.max_iter:
                    snapshot(it)
                if flags[1] > 0 or (world == 1 and stop.set):
                    break
            interrupted = stop.set
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        del stream
    if interrupted:
        path = snapshot(it)
        if main_proc:
            log.line(f"Interrupted at iteration {it}")
            plot_losses(history, os.path.join(log.dir, "loss.png"), solver.average_loss) if log.enabled else None
        raise TrainingInterrupted(f"interrupted at iteration {it}; snapshot {path or last_snapshot}",
                                  hint=f"continue with --resume {path or last_snapshot}")
    if it >= solver.max_iter and solver.snapshot_after_train and (last_snapshot is None or
                                                                  not last_snapshot.endswith(f"_iter_{it}.pt")):
        snapshot(it)
    if main_proc:
        log.line(f"Optimization done at iteration {it}, loss = {loss_value:.6g}")
        if log.enabled and history["iter"]:
            p = plot_losses(history, os.path.join(log.dir, "loss.png"), solver.average_loss)
            log.line(f"Loss curve: {p}", echo=False)
    if world > 1:
        dist.barrier()
    return TrainResult(iter=it, loss=loss_value, snapshot=last_snapshot, log_dir=log.dir if log.enabled else None,
                       history=history, outputs=outputs)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

"""The training loop: ``caffe train --solver=... --weights=...`` for compiled nets.

``train(solver)`` runs Caffe's loop (``Solver::Step``) on the TRAIN phase of the solver's
net (:func:`.net.build_train_net`): for each iteration, ``iter_size`` forward/backward
passes accumulate gradients, the learning rate of the policy (:mod:`.lr_policy`) is set,
and :class:`.optim.CaffeSGD` applies Caffe's update.  The steps, in this file's order:

* setting up (:func:`train`): device and processes (:mod:`.distributed`), the seed, the
  net, the run log (:mod:`.runlog`);
* starting (:func:`_start`, :func:`_prepare`): resume from a snapshot or load the
  initial weights, SyncBN, hard-pixel mining (:mod:`.mining`), DDP, the optimizer;
  the data is the net's data layer through :func:`deeplab_compile.data.pipeline_for`
  (DataLoader workers; the batches depend only on the seed and the iteration);
* precision (:mod:`.precision`): the solver's ``precision`` runs the forward under
  autocast (bf16/fp16; fp16 scales the loss with a ``torch.amp.GradScaler``, whose
  state goes into the snapshots) and ``channels_last`` puts the net and the input
  batches in that memory layout (``auto``, the default: on a CPU, not on CUDA); a
  snapshot's tensors keep the layout's strides and load into a net of either layout;
* one iteration (:func:`_iteration`, :func:`_check_loss`): forward/backward passes; a
  NaN or infinite loss stops before the update with :class:`TrainingDiverged`, naming
  the iteration and the last good snapshot (:func:`_last_good`: all its tensors finite,
  and written before the diverging iteration, since one written at it holds the
  weights that gave the NaN) or saying there is none; nothing is written;
* the report (:class:`_Report`): every ``display`` iterations the loss smoothed over
  ``average_loss`` iterations as Caffe prints it, the rate, and every net output
  (SegAccuracy's accuracy / mean recall / mean IoU); a tqdm bar shows loss and rate;
* snapshots (:func:`_snapshot`): ``<snapshot_prefix>_iter_<N>.pt`` every ``snapshot``
  iterations and at the end, written atomically, with model (under the net's own
  tensor names: no DDP or SyncBN wrapper in them), optimizer, iteration and RNG
  states; ``resume=`` continues a run exactly (N straight iterations give the same
  weights as N/2, a resume, and N/2 more).  Temporary files that a run killed while
  writing one left beside the snapshots are removed at start
  (:func:`_remove_stale_temp_files`);
* the end (:func:`_finish`): the last snapshot and the loss curve.  Ctrl-C or SIGTERM
  abandons the current iteration, writes a snapshot of the last finished one and
  raises :class:`TrainingInterrupted` (exit 128 + the signal from the command: 130,
  143), whose message says how to resume.

Under ``torchrun --nproc_per_node=N`` each process reads its DistributedSampler share of
the data; the processes agree on stopping and on divergence, and the loss and outputs
logged are their mean over the processes.  When a process dies, a collective of the
others fails: they stop with one line naming the dead rank
(:func:`.distributed.peer_lost`).
"""
from __future__ import annotations

import collections
import contextlib
import math
import os
import random
import re
import signal
import sys
import time
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..caffe.caffemodel import check_state_dict
from ..data.preprocess import of_spec
from ..errors import DeepLabError
from ..io.checkpoint import CheckpointError, rng_state, save_snapshot, set_rng_state
from ..weights import init_weights, load_snapshot
from .distributed import convert_sync_bn, init_distributed, peer_lost, pick_device, process_table, unwrap
from .mining import hard_pixel_ratio, install_hard_mining
from .net import build_train_net, split_batch, train_ir
from .optim import CaffeSGD
from .precision import Precision, resolve_channels_last
from .runlog import RunLog, plot_losses
from .solver import Solver, resolve_path


class TrainingDiverged(DeepLabError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(DeepLabError):
    """Ctrl-C or SIGTERM: a snapshot of the last finished iteration was written.
    ``signum`` is the signal (the command exits with 128 + signum)."""

    def __init__(self, message: str, *, signum: int = signal.SIGINT, main: bool = True, **kw):
        super().__init__(message, **kw)
        self.signum, self.main = int(signum), main


@dataclass
class TrainResult:
    iter: int
    loss: float
    snapshot: str | None
    log_dir: str | None
    history: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)


def snapshot_path(prefix: str, it: int) -> str:
    return f"{prefix}_iter_{it}.pt"


def default_prefix(solver: Solver) -> str:
    if solver.snapshot_prefix:
        return solver.snapshot_prefix
    return os.path.splitext(solver.path)[0]


class _StopFlag:
    """SIGINT (Ctrl-C) and SIGTERM (``timeout``, ``docker stop``, SLURM, Kubernetes, and
    torchrun passing either on) set a flag checked between iterations; a second signal
    interrupts at once.  ``signum`` is the first signal received."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False
        self.signum = signal.SIGINT
        self._old: dict = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:          # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set, self.signum = True, signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        return False


@dataclass
class _Run:
    """What the steps of one run share."""

    solver: Solver
    net: nn.Module
    spec: Any
    device: torch.device
    rank: int
    world: int
    seed: int
    prefix: str
    log: RunLog
    resume: str | None
    history: dict = field(default_factory=lambda: {"iter": [], "loss": [], "lr": []})
    model: nn.Module | None = None          # the net, or its DistributedDataParallel wrapper
    opt: CaffeSGD | None = None
    miners: list = field(default_factory=list)
    last_snapshot: str | None = None
    from_fillers: bool = False              # neither weights nor a snapshot: the netdef's fillers
    # (iteration, path) of the snapshots whose tensors were all finite: the resumed one
    # and those this run wrote, oldest first
    finite_snapshots: list = field(default_factory=list)
    it: int | None = None                   # the iteration under way, for error messages
    signum: int = signal.SIGINT             # the signal that stopped the run
    processes: list | None = None           # (host, pid) by rank, to name a process that dies
    precision: Precision = field(default_factory=Precision)
    scaler: Any = None                      # torch.amp.GradScaler under fp16
    global_batch: bool = False              # the data layer's batch_size is that of all processes

    @property
    def main(self) -> bool:
        return self.rank == 0


# --------------------------------------------------------------------------- setting up

def train(solver: Solver, *, weights: str | None = None, resume: str | None = None,
          gpu: str | int | None = None, log_dir: str | None = None, progress: bool = True,
          num_workers: int | None = None, max_iter: int | None = None, echo=None,
          global_batch: bool = False) -> TrainResult:
    """Run the solver.  ``max_iter`` stops early (for tests; the schedule still uses the
    solver's).  ``echo`` receives display lines (default: ``tqdm.write``/print on
    process 0).  ``global_batch``: under torchrun the data layer's ``batch_size`` is the
    batch of all processes together, each taking ``batch_size / N`` (else each takes
    ``batch_size``, as Caffe's multi-GPU training did).

    A :class:`DeepLabError` that every process meets alike (a setting, a file, the
    batch split, a diverged loss) carries ``main``: true on process 0 only, so that one
    process prints it."""
    device = pick_device(gpu, solver)
    precision = Precision(solver.precision, resolve_channels_last(solver.channels_last, device))
    try:
        precision.check(device)
    except DeepLabError as err:
        raise solver.error(err.message, "precision", err.hint) from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank, world = init_distributed(device)
    main_proc = rank == 0
    try:
        snap = load_snapshot(resume) if resume else None
        seed = _seed(solver, snap, resume, world)
        random.seed(seed)
        np.random.seed(seed % 2 ** 32)
        ir, spec = train_ir(solver)
        batch, passes = split_batch(solver, spec, world if global_batch else 1)
        # this process's share: its batch, and its forward/backward passes per iteration
        solver = dataclasses.replace(solver, iter_size=passes)
        net, spec = build_train_net(solver, seed=seed, batch_size=batch, ir_spec=(ir, spec))
    except DeepLabError as err:
        err.main = main_proc
        raise
    # dropout and other module randomness: a distinct stream per process
    torch.manual_seed(seed + 1000003 * rank)

    prefix = default_prefix(solver)
    log_dir = log_dir or solver.log_dir or os.path.join(os.path.dirname(prefix) or ".", "log")
    log = RunLog(log_dir, enabled=main_proc, echo=(echo or _echo) if main_proc else None, resume=snap is not None)
    run = _Run(solver, net, spec, device=device, rank=rank, world=world, seed=seed, prefix=prefix, log=log,
               resume=resume, from_fillers=not weights and not resume, precision=precision,
               global_batch=global_batch)
    try:
        if world > 1:
            run.processes = process_table()
        return _run(run, snap, weights=weights, progress=progress and main_proc, num_workers=num_workers,
                    stop_at=max_iter)
    except DeepLabError as err:
        # before the first iteration (weights, resume) and a diverged loss: the same in
        # every process; an error of one process's data is its own
        if not hasattr(err, "main"):
            err.main = main_proc or not (run.it is None or isinstance(err, TrainingDiverged))
        raise
    except RuntimeError as err:
        if world == 1:
            raise
        # a collective that failed because another process died: one line naming it.
        # torchrun sends this process SIGTERM as soon as it sees the death; it is
        # stopping already, so that signal must not kill it before it has said why.
        old = _hold_sigterm()
        lost = peer_lost(err, run.processes, rank, run.it)
        if lost is None:
            _restore_sigterm(old)
            raise
        lost.main = True               # each survivor says which process died
        raise lost from None
    finally:
        log.close()


def _hold_sigterm():
    try:
        return signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except ValueError:              # not the main thread
        return None


def _restore_sigterm(old) -> None:
    if old is not None:
        signal.signal(signal.SIGTERM, old)


def _seed(solver: Solver, snap: dict | None, resume: str | None, world: int) -> int:
    """The run's seed: the snapshot's on resume, else the solver's, else a random one
    (process 0's, under torchrun)."""
    if snap is not None:
        if snap.get("world_size", 1) != world:
            raise CheckpointError(f"'{resume}' was written by {snap.get('world_size', 1)} process(es), "
                                  f"this run has {world}", hint="resume with the same number of processes")
        return int(snap["seed"])
    if solver.random_seed >= 0:
        return solver.random_seed
    seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    if world > 1:
        t = torch.tensor([seed])
        dist.broadcast(t, 0)
        seed = int(t)
    return seed


def _echo(text: str) -> None:
    try:
        from tqdm import tqdm
        tqdm.write(text, file=sys.stderr)
    except ImportError:
        print(text, file=sys.stderr)


def _run(run: _Run, snap: dict | None, *, weights, progress, num_workers, stop_at) -> TrainResult:
    from ..data import pipeline_for
    solver, spec = run.solver, run.spec
    if run.main:
        _remove_stale_temp_files(run)
    start = _start(run, snap, weights)
    _prepare(run, snap)
    per_iter = spec.batch_size * solver.iter_size
    pipe = pipeline_for(run.net, "train", spec, seed=run.seed, rank=run.rank, world_size=run.world,
                        start=start * per_iter, num_workers=num_workers)
    end = solver.max_iter if stop_at is None else min(stop_at, solver.max_iter)
    if run.main and start == 0:
        n_params = sum(p.numel() for p in run.net.parameters())
        run.log.line(f"Net {run.net.net.name} from {solver.net}: {n_params:,} parameters; "
                     f"data {spec.source} ({len(pipe.dataset)} images, batch {_batch_words(run)}, "
                     f"crop {spec.crop_height}x{spec.crop_width}); seed {run.seed}; "
                     f"device {run.device}, precision {run.precision.describe()}")
    it, loss_value, outputs, interrupted = _loop(run, pipe, start, end, progress)
    return _finish(run, it, loss_value, outputs, interrupted)


def _batch_words(run: _Run) -> str:
    """``8``, ``8 = 4 x 2 processes`` (a global batch) or ``4 x 2 processes``."""
    b, i = run.spec.batch_size, run.solver.iter_size
    if run.world == 1:
        return str(b)
    if run.global_batch:
        if i > 1:
            return f"{b * i * run.world} = {b} x iter_size {i} x {run.world} processes"
        return f"{b * run.world} = {b} x {run.world} processes"
    return f"{b} x {run.world} processes"


# --------------------------------------------------------------------------- starting

def _remove_stale_temp_files(run: _Run) -> None:
    """Remove the temporary files a run killed while writing a snapshot left beside the
    snapshots (``.<prefix>_iter_<N>.<random>.tmp.pt``, see :mod:`..io.atomic`)."""
    folder = os.path.dirname(run.prefix) or "."
    stale = re.compile(r"\." + re.escape(os.path.basename(run.prefix)) + r"_iter_\d+\.[A-Za-z0-9_]+\.tmp\.pt")
    try:
        names = sorted(f for f in os.listdir(folder) if stale.fullmatch(f))
    except FileNotFoundError:
        return
    removed = []
    for name in names:
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    if removed:
        run.log.line(f"Removed {len(removed)} temporary file(s) left by an interrupted snapshot write in "
                     f"{folder}: {', '.join(removed)}")


def _all_finite(state: dict) -> bool:
    """Whether every floating tensor of a (nested) state is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(_all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(_all_finite(v) for v in state)
    return True


def _start(run: _Run, snap: dict | None, weights: str | None) -> int:
    """Resume from the snapshot, or load the initial weights; returns the first iteration."""
    log = run.log
    for note in log.notes:
        log.line(note)
    if snap is None:
        init = weights or (resolve_path(run.solver, run.solver.weights) if run.solver.weights else None)
        if init:
            log.line(init_weights(run.net, init).line(init))
        return 0
    if run.world > 1 and bool(snap.get("global_batch", False)) != run.global_batch:
        was = "global" if snap.get("global_batch") else "per process"
        raise CheckpointError(f"'{run.resume}' was written by a run whose batch_size was {was}, this run's is "
                              + ("global" if run.global_batch else "per process"),
                              hint="resume as it was started (with or without --global-batch)")
    state = check_state_dict(run.net, snap["model"], run.resume,
                             loose_hint="a snapshot resumes only the net it was written by: give "
                                        "the same netdef and vars, or start from it with --weights")
    with torch.no_grad():
        run.net.load_state_dict(state)
    start = int(snap["iter"])
    if _all_finite(snap["model"]) and _all_finite(snap.get("optimizer")):
        run.finite_snapshots.append((start, run.resume))
    run.history = {k: list(v) for k, v in snap.get("history", run.history).items()}
    log.line(f"Resuming from {run.resume} at iteration {start}")
    return start


def _prepare(run: _Run, snap: dict | None) -> None:
    """SyncBN, hard-pixel mining, the device, DDP and the optimizer (with the snapshot's
    optimizer and RNG states on resume)."""
    solver, net, world = run.solver, run.net, run.world
    if solver.sync_bn and world > 1:
        n = convert_sync_bn(net)
        run.log.line(f"SyncBatchNorm: {n} layer(s) synchronized across {world} processes" if n else
                     "SyncBatchNorm: no BatchNorm layer computes batch statistics in training; nothing to synchronize")
    run.miners = install_hard_mining(net) if solver.top_k_percent_pixels < 1.0 else []
    net.to(run.device)
    run.precision.model(net)
    run.model = net
    if world > 1:
        ids = [run.device.index] if run.device.type == "cuda" else None
        run.model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    run.opt = CaffeSGD(net.param_groups(), momentum=solver.momentum, regularization=solver.regularization_type,
                       iter_size=solver.iter_size, clip_gradients=solver.clip_gradients)
    run.scaler = run.precision.grad_scaler(run.device)
    if snap is not None:
        run.opt.load_state_dict(snap["optimizer"])
        if run.scaler is not None and snap.get("grad_scaler"):
            run.scaler.load_state_dict(snap["grad_scaler"])
        states = snap.get("rng") or []
        if run.rank < len(states):
            set_rng_state(states[run.rank])


# --------------------------------------------------------------------------- iterations

def _loop(run: _Run, pipe, start: int, end: int, progress: bool) -> tuple[int, float, dict, bool]:
    """Iterations ``start`` .. ``end``; returns (iterations done, last loss, last outputs,
    whether Ctrl-C stopped it)."""
    solver = run.solver
    stream = iter(pipe)
    report = _Report(run, start, end, progress)
    it, loss_value, outputs = start, float("nan"), {}
    interrupted, stop_all = False, 0
    try:
        with _StopFlag() as stop:
            while it < end:
                run.it = it
                rate = solver.lr(it)
                run.opt.set_rate(rate, solver.weight_decay)
                for m in run.miners:
                    m.ratio = hard_pixel_ratio(solver, it)
                run.opt.zero_grad(set_to_none=True)
                done = _iteration(run, pipe, stream, stop)
                if done is None:
                    break
                loss_value, outs = done
                stop_all, loss_value, outputs = _check_loss(run, it, loss_value, dict(outs), stop)
                if run.scaler is None:
                    run.opt.step()
                else:       # unscales first (CaffeSGD clips unscaled gradients); skips inf/NaN steps
                    run.scaler.step(run.opt)
                    run.scaler.update()
                it += 1
                report.iteration(it, rate, loss_value, outputs)
                if solver.snapshot and it % solver.snapshot == 0 and it < solver.max_iter:
                    _snapshot(run, it)
                if stop_all or (run.world == 1 and stop.set):
                    break
            # every process stops alike, whichever of them received the signal
            interrupted = bool(stop_all) if run.world > 1 else stop.set
            run.signum = stop_all or stop.signum
    except KeyboardInterrupt:
        interrupted = True
        run.signum = stop.signum
    finally:
        report.close()
        del stream
    return it, loss_value, outputs, interrupted


def _iteration(run: _Run, pipe, stream, stop: _StopFlag) -> tuple[float, dict] | None:
    """``iter_size`` forward/backward passes (gradients accumulate; DDP synchronizes on
    the last); returns (mean loss, mean of each net output), or None when Ctrl-C also
    stopped a data worker."""
    iter_size = run.solver.iter_size
    total, outs = 0.0, collections.defaultdict(float)
    try:
        for k in range(iter_size):
            batch = next(stream)
            feeds = run.precision.inputs(pipe.feeds(batch, run.device))
            sync = run.world == 1 or k == iter_size - 1
            with run.model.no_sync() if not sync else contextlib.nullcontext():
                with run.precision.autocast(run.device):
                    out = run.model(*feeds)
                    loss = run.net.total_loss(out)
                (loss if run.scaler is None else run.scaler.scale(loss)).backward()
            total += float(loss.detach())
            for name, v in out.items():
                v = v.detach().float().reshape(-1)
                for j, x in enumerate(v.tolist()):
                    outs[f"{name}" if v.numel() == 1 else f"{name}/{j}"] += x / iter_size
    except (RuntimeError, StopIteration):
        if stop.set:             # a worker died of the same Ctrl-C
            return None
        raise
    return total / iter_size, outs


def _check_loss(run: _Run, it: int, loss_value: float, outputs: dict,
                stop: _StopFlag) -> tuple[int, float, dict]:
    """Raise :class:`TrainingDiverged` when the loss of any process is not finite.
    Returns the signal that asked any process to stop (0: none; SIGTERM when one
    process received it), and the loss and the net outputs averaged over the processes
    (what is logged and kept in the history)."""
    names = sorted(outputs)
    packed = torch.tensor([0.0 if math.isfinite(loss_value) else 1.0, 1.0 if stop.set else 0.0,
                           1.0 if stop.set and stop.signum == signal.SIGTERM else 0.0, loss_value]
                          + [outputs[k] for k in names], dtype=torch.float64)
    if run.world > 1:
        dist.all_reduce(packed)
        packed[3:] /= run.world
    loss_value = float(packed[3])
    if packed[0] > 0:
        raise TrainingDiverged(
            f"loss is {loss_value} at iteration {it}" + (f" (on {int(packed[0])} process(es))"
                                                          if run.world > 1 else ""),
            hint=_last_good(run, it) + "; "
            + ("this run started from the netdef's fillers, without initial weights: a full-size net "
               "needs them (--weights FILE, or model/<NET_ID>/init.pt in the experiment tree; each config's "
               "header gives its deeplab-convert --from command), else lower base_lr"
               if run.from_fillers else "lower base_lr, or check the data and the weights"))
    signum = 0 if packed[1] == 0 else int(signal.SIGTERM if packed[2] > 0 else signal.SIGINT)
    return signum, loss_value, {k: float(v) for k, v in zip(names, packed[4:].tolist())}


def _last_good(run: _Run, diverged_at: int) -> str:
    """Name the newest snapshot whose tensors are all finite and whose weights gave a
    finite loss: one written at the iteration that diverged holds the weights that did."""
    good = [path for at, path in run.finite_snapshots if at < diverged_at]
    if good:
        return f"the last good snapshot is {good[-1]}"
    if run.last_snapshot or run.resume:
        return "no good snapshot exists (the weights of every snapshot of this run give a non-finite loss)"
    return "no snapshot was written"


class _Report:
    """The history of every process; on process 0 the TensorBoard scalars, the tqdm bar
    and Caffe's display lines, the loss smoothed over ``average_loss`` iterations."""

    def __init__(self, run: _Run, start: int, end: int, progress: bool):
        self.run, self.solver, self.log = run, run.solver, run.log
        history = run.history
        self.smoothed: collections.deque = collections.deque(
            history["loss"][-self.solver.average_loss:], maxlen=self.solver.average_loss)
        self.bar = None
        if progress:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=end, initial=start, desc="train", unit="it", dynamic_ncols=True,
                                file=sys.stderr)
            except ImportError:
                self.bar = None
        self.restart_clock(start)

    def restart_clock(self, it: int) -> None:
        self.t0, self.it0 = time.perf_counter(), it

    def iteration(self, it: int, rate: float, loss_value: float, outputs: dict) -> None:
        history = self.run.history
        self.smoothed.append(loss_value)
        history["iter"].append(it)
        history["loss"].append(loss_value)
        history["lr"].append(rate)
        if not self.run.main:
            return
        self.log.scalars(it, {"train/loss": loss_value, "train/lr": rate,
                              **{f"train/{k}": v for k, v in outputs.items()}})
        mean = sum(self.smoothed) / len(self.smoothed)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{mean:.4f}", lr=f"{rate:.3g}")
        if self.solver.display and it % self.solver.display == 0:
            dt = time.perf_counter() - self.t0
            speed = (it - self.it0) / dt if dt > 0 else 0.0
            self.restart_clock(it)
            self.log.line(f"Iteration {it} ({speed:.3g} iter/s), loss = {mean:.6g}, lr = {rate:.6g}",
                          echo=self.bar is None)
            for k, v in outputs.items():
                self.log.line(f"    Train net output: {k} = {v:.6g}", echo=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- snapshots and the end

def _snapshot(run: _Run, at: int) -> str:
    """Write ``<prefix>_iter_<at>.pt`` (process 0; every process's RNG state in it).
    Every process returns its path and records it (the weights are the same in all)."""
    states = [rng_state()]
    if run.world > 1:
        gathered = [None] * run.world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    path = snapshot_path(run.prefix, at)
    # the net's own tensor names: outside DDP, and SyncBN keeps the BatchNorm names
    model, optimizer = unwrap(run.model or run.net).state_dict(), run.opt.state_dict()
    if run.main:
        solver = run.solver
        extra = {"grad_scaler": run.scaler.state_dict()} if run.scaler is not None else {}
        save_snapshot(path, {"iter": at, "model": model, "optimizer": optimizer,
                             "rng": states, "seed": run.seed, "world_size": run.world, "global_batch": run.global_batch,
                             "history": run.history,
                             "solver": solver.to_dict(), "net": solver.net, "vars": dict(solver.vars),
                             "preprocess": of_spec(run.spec).to_dict(), **extra})
        run.log.line(f"Snapshotting to {path}")
    run.last_snapshot = path
    if _all_finite(model) and _all_finite(optimizer):
        run.finite_snapshots.append((at, path))
    return path


def _finish(run: _Run, it: int, loss_value: float, outputs: dict, interrupted: bool) -> TrainResult:
    """The last snapshot and the loss curve; :class:`TrainingInterrupted` after Ctrl-C."""
    solver, log, history = run.solver, run.log, run.history
    if interrupted:
        run.it = it
        path = _snapshot(run, it)
        why = "stopped by SIGTERM" if run.signum == signal.SIGTERM else "interrupted"
        if run.main:
            log.line(f"Interrupted ({signal.Signals(run.signum).name}) at iteration {it}")
            if log.enabled:
                plot_losses(history, os.path.join(log.dir, "loss.png"), solver.average_loss)
        raise TrainingInterrupted(f"{why} at iteration {it}; snapshot {path}",
                                  hint=f"continue with --resume {path}", signum=run.signum, main=run.main)
    if it >= solver.max_iter and solver.snapshot_after_train and (
            run.last_snapshot is None or not run.last_snapshot.endswith(f"_iter_{it}.pt")):
        _snapshot(run, it)
    if run.main:
        log.line(f"Optimization done at iteration {it}, loss = {loss_value:.6g}")
        if log.enabled and history["iter"]:
            p = plot_losses(history, os.path.join(log.dir, "loss.png"), solver.average_loss)
            log.line(f"Loss curve: {p}", echo=False)
    if run.world > 1:
        dist.barrier()
    return TrainResult(iter=it, loss=loss_value, snapshot=run.last_snapshot,
                       log_dir=log.dir if log.enabled else None, history=history, outputs=outputs)

"""Measure once, then use the faster path.

A fused op replaces a library call only where it is faster.  :func:`choose` times each
candidate on the real arguments the first time a key (op, device, dtype, shape bucket,
grad mode) is seen, interleaving the candidates and keeping each one's minimum, and
caches the winner for the rest of the process.  When gradients are on, the time
includes the backward.

Keys hold :func:`shape_bucket` of the input, not its exact shape: the batch and channel
sizes as they are, and the height and width each rounded up to a power of two (33..64
-> 64).  Which path is faster changes with the order of magnitude of the map, not with
a few pixels, and every image size of ``deeplab-predict`` or of a multi-scale test
would otherwise cost a measurement round of its own; within a bucket the first shape
seen is the one measured.

``DEEPLAB_KERNELS=ours`` or ``=library`` skips the measurement and forces one path
(``ours`` falls back to the library where no kernel exists); inside ``torch.compile``
tracing nothing is timed and an unmeasured key uses ``ours``, as the compiled graph is
what will run.  :func:`decisions` returns what was chosen and the times behind it.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Hashable, Mapping

import torch

_lock = threading.Lock()
_cache: dict[Hashable, str] = {}
_times: dict[Hashable, dict[str, float]] = {}

REPEATS = 3


def device_key(t: torch.Tensor) -> str:
    """The dispatch key of a tensor's device ("CPU", "CUDA"), or "" for others."""
    return {"cpu": "CPU", "cuda": "CUDA"}.get(t.device.type, "")


def shape_bucket(shape) -> tuple[int, ...]:
    """The shape a measurement stands for: N and C as they are, every later axis (H, W)
    rounded up to a power of two (1, 2, 4, ..., 32, 64, ...)."""
    dims = [int(d) for d in shape]
    return (*dims[:2], *(1 << max(d - 1, 0).bit_length() for d in dims[2:]))


def _sync(args) -> None:
    for a in _tensors(args):
        if a.is_cuda:
            torch.cuda.synchronize(a.device)
            return


def _tensors(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from _tensors(a)


def _fresh(args, grad: bool):
    """The arguments with every tensor detached (and a leaf needing grad where it did)."""
    def one(a):
        if isinstance(a, torch.Tensor):
            return a.detach().requires_grad_(grad and a.requires_grad and a.is_floating_point())
        if isinstance(a, list):
            return [one(b) for b in a]
        if isinstance(a, tuple):
            return tuple(one(b) for b in a)
        return a
    return tuple(one(a) for a in args)


def _time(fn: Callable, args, grad: bool) -> float:
    a = _fresh(args, grad)
    _sync(args)
    t0 = time.perf_counter()
    if grad:
        with torch.enable_grad():
            y = fn(*a)
            if y.requires_grad:
                y.sum().backward()
    else:
        with torch.no_grad():
            fn(*a)
    _sync(args)
    return time.perf_counter() - t0


def choose(key: Hashable, candidates: Mapping[str, Callable[..., Any]], args: tuple) -> str:
    """The name of the candidate to run for ``key``; see the module doc."""
    names = list(candidates)
    if len(names) == 1:
        return names[0]
    forced = os.environ.get("DEEPLAB_KERNELS", "auto").lower()
    if forced in names:
        return forced
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in _tensors(args))
    full_key = (key, grad)
    with _lock:
        if full_key in _cache:
            return _cache[full_key]
    if torch.compiler.is_compiling():
        return "ours" if "ours" in names else names[0]
    for name in names:                      # warm-up: allocator, BLAS and oneDNN caches
        _time(candidates[name], args, grad)
    best = {name: float("inf") for name in names}
    for _ in range(REPEATS):
        for name in names:
            best[name] = min(best[name], _time(candidates[name], args, grad))
    winner = min(names, key=lambda n: best[n])
    with _lock:
        _cache[full_key] = winner
        _times[full_key] = best
    return winner


def decisions() -> list[dict[str, Any]]:
    """What :func:`choose` decided so far: ``{"key", "grad", "choice", "seconds"}`` per key."""
    with _lock:
        return [{"key": k, "grad": g, "choice": _cache[(k, g)], "seconds": dict(_times.get((k, g), {}))}
                for (k, g) in _cache]


def clear() -> None:
    with _lock:
        _cache.clear()
        _times.clear()

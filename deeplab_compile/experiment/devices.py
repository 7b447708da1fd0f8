"""Where the experiment runs: ``DEV_ID``, ``NUM_GPUS`` and ``NUM_PROCS``.

DeepLab's ``DEV_ID`` names one GPU (``0``), several (``0,1,2,3``: as ``caffe train
--gpu=0,1,2,3``) or ``cpu``.  Several GPUs train under ``torchrun --standalone
--nproc_per_node N`` (one process each, DistributedDataParallel); the test, CRF and
evaluation steps stay one process, on the first of them.

* ``NUM_GPUS=N``: train on N GPUs; without ``DEV_ID`` they are 0..N-1.  With a ``DEV_ID``
  list it must equal the list's length.
* ``NUM_PROCS=N``: N training processes on whatever ``DEV_ID`` names: with ``cpu``,
  N CPU processes joined by gloo (a test, or a look at the multi-GPU path without GPUs);
  with GPUs, the same as ``NUM_GPUS``.

Several GPUs set ``CUDA_VISIBLE_DEVICES`` to the ones listed (read through a
``CUDA_VISIBLE_DEVICES`` already set, as CUDA numbers them), so process k takes
``cuda:k``.  Everything here is read from the environment without importing torch;
:func:`check_visible` compares the count with the GPUs torch sees.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from ..errors import DeepLabError


class DeviceError(DeepLabError):
    """A device setting that cannot be used: malformed, or more GPUs than are visible."""


@dataclass(frozen=True)
class Devices:
    dev_id: str                 # what the one-process steps pass as --gpu: 'cpu' or an index
    procs: int = 1              # training processes (1: no torchrun)
    visible: str | None = None  # CUDA_VISIBLE_DEVICES for the run, when several GPUs are named
    named_by: str = "DEV_ID"    # the setting that asked for the processes, for messages

    @property
    def cpu(self) -> bool:
        return self.dev_id == "cpu"

    def describe(self) -> str:
        """The console's words: ``DEV_ID=cpu``, ``DEV_ID=0``, ``2 GPUs (CUDA_VISIBLE_DEVICES=2,3)``."""
        if self.procs == 1:
            return f"DEV_ID={self.dev_id}"
        if self.cpu:
            return f"DEV_ID=cpu, {self.procs} training processes (gloo)"
        return f"{self.procs} GPUs (CUDA_VISIBLE_DEVICES={self.visible})"


_IDS = re.compile(r"\d+(,\d+)*")


def _count(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if text == "":
        return None
    if not text.isdigit() or int(text) < 1:
        raise DeviceError(f"{name}={env[name]!r} is not a number of {'GPUs' if name == 'NUM_GPUS' else 'processes'}",
                          hint=f"set it to a whole number of at least 1, e.g. {name}=2")
    return int(text)


def _ids(text: str) -> list[int] | None:
    """``0`` or ``0,1,2,3`` as indices; None for ``cpu``; a DeviceError otherwise."""
    if text.lower() == "cpu":
        return None
    compact = text.replace(" ", "")
    if not _IDS.fullmatch(compact):
        raise DeviceError(f"DEV_ID={text!r} is not a GPU id, a list of them or cpu",
                          hint="write DEV_ID=0, DEV_ID=0,1,2,3 or DEV_ID=cpu")
    ids = [int(v) for v in compact.split(",")]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise DeviceError(f"DEV_ID={text!r} names GPU {twice[0]} twice",
                          hint="list each GPU once, e.g. DEV_ID=0,1")
    return ids


def _visible(ids: list[int], env: Mapping[str, str]) -> str:
    """CUDA_VISIBLE_DEVICES for ``ids``, numbered as CUDA numbers them in ``env``."""
    outer = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not outer:
        return ",".join(str(i) for i in ids)
    shown = [v.strip() for v in outer.split(",") if v.strip()]
    over = [i for i in ids if i >= len(shown)]
    if over:
        raise DeviceError(f"DEV_ID names GPU {over[0]}, but CUDA_VISIBLE_DEVICES={outer} shows "
                          f"{len(shown)} GPU(s), numbered 0..{len(shown) - 1}",
                          hint="number DEV_ID's GPUs as CUDA_VISIBLE_DEVICES shows them, or unset it")
    return ",".join(shown[i] for i in ids)


def from_env(env: Mapping[str, str] | None = None, *, synthetic: bool = False) -> Devices:
    """The devices of a run; ``synthetic``: the default ``DEV_ID`` is ``cpu`` (else 0)."""
    env = os.environ if env is None else env
    gpus, procs = _count(env, "NUM_GPUS"), _count(env, "NUM_PROCS")
    if gpus is not None and procs is not None and gpus != procs:
        raise DeviceError(f"NUM_GPUS={gpus} and NUM_PROCS={procs} disagree",
                          hint="set one of them (NUM_PROCS is the number of processes on any device, "
                               "NUM_GPUS on GPUs)")
    n = gpus or procs
    named_by = "NUM_GPUS" if gpus else ("NUM_PROCS" if procs else "DEV_ID")
    raw = env.get("DEV_ID", "").strip()
    if raw == "":
        if gpus is not None or (procs is not None and procs > 1 and not synthetic):
            raw = ",".join(str(i) for i in range(n))
        else:
            raw = "cpu" if synthetic else "0"
    ids = _ids(raw)
    if ids is None:                                  # cpu
        if gpus is not None:
            raise DeviceError(f"NUM_GPUS={gpus} with DEV_ID=cpu: there are no GPUs to use",
                              hint=f"for {gpus} CPU training processes (gloo) set NUM_PROCS={gpus}; "
                                   "for GPUs unset DEV_ID or list them, e.g. DEV_ID=0,1")
        return Devices("cpu", procs or 1, None, named_by)
    if n is not None and len(ids) != n and not (len(ids) == 1 and n == 1):
        if len(ids) == 1:
            raise DeviceError(f"DEV_ID={raw} names one GPU but {named_by}={n}",
                              hint=f"list the {n} GPUs, e.g. DEV_ID={','.join(str(ids[0] + k) for k in range(n))}, "
                                   f"or unset DEV_ID for GPUs 0..{n - 1}")
        raise DeviceError(f"DEV_ID={raw} names {len(ids)} GPUs but {named_by}={n}",
                          hint=f"drop {named_by} (DEV_ID's list sets it) or list {n} GPUs")
    if len(ids) == 1:
        return Devices(str(ids[0]), 1, None, named_by)
    # process k takes cuda:k of the GPUs made visible; the one-process steps the first
    return Devices("0", len(ids), _visible(ids, env), "DEV_ID" if n is None else named_by)


def check_visible(devs: Devices, count: int) -> None:
    """A DeviceError when the run asks for more GPUs than ``count`` (what torch sees
    with ``CUDA_VISIBLE_DEVICES`` set to ``devs.visible``)."""
    if devs.procs == 1 or devs.cpu or count >= devs.procs:
        return
    asked = f"{devs.named_by}={devs.procs}" if devs.named_by != "DEV_ID" else f"DEV_ID lists {devs.procs} GPUs"
    if count == 0:
        raise DeviceError(f"{asked}, but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES={devs.visible})",
                          hint=f"on this machine run NUM_PROCS={devs.procs} DEV_ID=cpu for "
                               f"{devs.procs} CPU processes, or name GPUs that exist")
    raise DeviceError(f"{asked}, but only {count} of those GPUs are visible (CUDA_VISIBLE_DEVICES={devs.visible})",
                      hint=f"ask for at most {count} (NUM_GPUS={count}), or name GPUs that exist "
                           "(nvidia-smi -L lists them)")

"""Precision and memory layout of a run: the solver's ``precision`` / ``channels_last``
and the ``--precision`` / ``--channels-last`` flags of ``deeplab-test`` and
``deeplab-predict``.

* ``fp32`` (the default): no autocast.
* ``bf16``: the forward runs under ``torch.autocast(device, dtype=torch.bfloat16)``.
  Parameters, gradients and the optimizer's state stay float32 (autocast casts the
  operands of convolutions and matrix products; losses and softmaxes stay float32).
* ``fp16``: the same with ``torch.float16``, and a gradient scaler
  (``torch.amp.GradScaler``) in training, since float16 gradients underflow; its
  state goes into the snapshots.
* ``channels_last``: the net's 4-D parameters and the floating input batches in
  ``torch.channels_last`` (NHWC in memory; the convolution libraries' fast layout on
  GPUs with tensor cores and in oneDNN).  The solver's field is one of
  :data:`CHANNELS_LAST` (``auto``, the default, or true/false); :func:`resolve_channels_last`
  turns ``auto`` into channels_last on a CPU (oneDNN trains faster in it) and NCHW on
  CUDA, once the run's device is known, so :attr:`Precision.channels_last` is a bool.

The custom ops declare how they behave under autocast (:mod:`deeplab_compile.ops._autocast`).
Outputs written to disk (features, probabilities, label maps) are float32 whatever the
precision.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from ..errors import DeepLabError

PRECISIONS = ("fp32", "bf16", "fp16")
#: the solver's ``channels_last`` values (YAML's true/false are the last two)
CHANNELS_LAST = ("auto", "true", "false")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(DeepLabError):
    """A precision the device's autocast does not support."""


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``name`` (one of :data:`PRECISIONS`) and the memory layout."""

    name: str = "fp32"
    channels_last: bool = False

    def __post_init__(self):
        if self.name not in PRECISIONS:
            raise PrecisionError(f"precision '{self.name}' is not one of {', '.join(PRECISIONS)}")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"

    def describe(self) -> str:
        return self.name + (", channels_last" if self.channels_last else "")

    def check(self, device: torch.device | str) -> None:
        """Raise :class:`PrecisionError` when autocast on ``device`` lacks this dtype."""
        kind = torch.device(device).type
        if not self.reduced:
            return
        if not torch.amp.is_autocast_available(kind):
            raise PrecisionError(f"precision {self.name}: torch has no autocast for device '{kind}'",
                                 hint="use precision fp32")
        # torch either raises or warns and disables autocast for a dtype it lacks
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with torch.autocast(kind, dtype=self.dtype):
                    enabled = torch.is_autocast_enabled(kind)
                why = None if enabled else (str(caught[-1].message) if caught else "autocast stayed disabled")
            except (RuntimeError, AssertionError) as err:
                why = str(err)
        if why is not None:
            raise PrecisionError(f"precision {self.name}: torch's autocast on '{kind}' does not support "
                                 f"{self.dtype} ({why.splitlines()[0]})", hint="use precision fp32 or bf16")

    def autocast(self, device: torch.device | str):
        """The autocast region of the forward (a no-op context in fp32)."""
        if not self.reduced:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.dtype)

    def model(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` with its 4-D parameters and buffers in channels_last (in place)."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def input(self, x):
        """A floating 4-D batch in channels_last; anything else (labels, sizes) as given."""
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def inputs(self, xs):
        return [self.input(x) for x in xs]

    def grad_scaler(self, device: torch.device | str):
        """A ``torch.amp.GradScaler`` for fp16, else None."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(torch.device(device).type)


def resolve_channels_last(value: bool | str, device: torch.device | str) -> bool:
    """The solver's ``channels_last`` (``"auto"``, True or False) on ``device``: ``auto`` is
    channels_last on a CPU and NCHW elsewhere (CUDA)."""
    if value == "auto":
        return torch.device(device).type == "cpu"
    return bool(value)


def parse_precision(value, where: str) -> str:
    """``value`` as one of :data:`PRECISIONS` (any case), else a :class:`PrecisionError`
    naming ``where``."""
    text = str(value).strip().lower()
    if text not in PRECISIONS:
        raise PrecisionError(f"{where}: precision '{value}' is not one of {', '.join(PRECISIONS)}",
                             hint="e.g. --precision bf16, or 'precision: bf16' in the solver")
    return text

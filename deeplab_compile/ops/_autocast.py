"""How the ``deeplab`` ops behave inside a ``torch.autocast`` region.

A custom op has no autocast rule by default: autocast passes its inputs through as
they come, so a bfloat16 activation from an autocast convolution meets float32 weights
(the kernels refuse the mix), or a float32-only kernel receives bfloat16.  Each op
declares one of two policies, as PyTorch's own ops do:

* ``"lower"`` (``aspp_sum``, ``aspp_v3_head``: convolutions, whose kernels have
  bfloat16 and float16 paths accumulating in float): the floating inputs are cast to
  the region's dtype (``torch.get_autocast_dtype``), as autocast casts ``conv2d``'s;
* ``"float32"`` (``dense_crf``, ``permutohedral_filter``: float32 kernels): the
  floating inputs are cast to float32, as autocast does for its float32-only ops.

float64 inputs are left alone either way.  The rule is registered for every device
whose autocast torch supports (the ``AutocastCPU`` / ``AutocastCUDA`` dispatch keys),
like :func:`torch.library.register_autocast`, which takes one fixed dtype; the op
then runs with autocast excluded, so a kernel's own library calls see the dtypes it
was given.
"""
from __future__ import annotations

import torch
from torch.amp.autocast_mode import _cast

POLICIES = ("lower", "float32")
DEVICES = ("cpu", "cuda")

_lib = None


def _library():
    global _lib
    if _lib is None:
        _lib = torch.library.Library("deeplab", "IMPL")
    return _lib


def cast_dtype(policy: str, device_type: str) -> torch.dtype:
    """The dtype the floating inputs of an op with ``policy`` get in an autocast region."""
    return torch.get_autocast_dtype(device_type) if policy == "lower" else torch.float32


def register(qualname: str, policy: str) -> None:
    """Register ``policy`` for ``deeplab::<name>`` on every device with autocast."""
    if policy not in POLICIES:
        raise ValueError(f"autocast policy must be one of {POLICIES}, got {policy!r}")
    op = torch._library.utils.lookup_op(qualname)
    name = qualname.split("::", 1)[1]
    for device_type in DEVICES:
        if not torch.amp.is_autocast_available(device_type):
            continue
        key_name = "Autocast" + torch._C._dispatch_key_for_device(device_type)
        key = getattr(torch._C.DispatchKey, key_name)

        def run(*args, _key=key, _device=device_type):
            with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_key)):
                return op(*_cast(args, _device, cast_dtype(policy, _device)))

        # the Python dispatcher (torch.compile, make_fx) and the C++ one
        if op.has_kernel_for_dispatch_key(key):
            op.py_kernels.pop(key, None)
        op.py_impl(key)(run)
        _library().impl(name, lambda _keyset, *args, _run=run: _run(*args), key_name, with_keyset=True)


def to_float32(device_type: str, *tensors):
    """For a float32-only op called from Python inside an autocast region: reduced-precision
    floating tensors as float32 (others as given)."""
    if not torch.is_autocast_enabled(device_type):
        return tensors
    return tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t
                 for t in tensors)


def region(t: torch.Tensor):
    """The autocast dtype in force for ``t``'s device, or None outside a region (a
    dispatcher key: the same call measures differently inside one)."""
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None

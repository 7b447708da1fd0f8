"""Import a pretrained PyTorch state dict into a compiled zoo net by name table.

``convert_state_dict(src, source, net)`` returns a state dict for ``net`` (every key of
``net.state_dict()``): tensors named in the source's table (:mod:`.mappings`) are copied,
the rest keep the net's initial values and are listed in the report (for instance the
logits when importing an ImageNet backbone).  It is strict about the rest: a source key
the table does not know, a target the net lacks, a target fed twice or a shape mismatch
is a :class:`ZooError` naming the key.

BatchNorm: our Caffe-style BatchNorm keeps ``running_weight`` (Caffe's scale factor);
imported statistics get the steady-state value ``1 / (1 - moving_average_fraction)``
so that fine-tuning continues the running averages instead of restarting them.
Multi-scale nets (layers ending in ``_res075``/``_res05``) get the same statistics in
every scale's BatchNorm copy; their learnable tensors are shared already.

Before the table is read, a source's :data:`~.mappings.PREPARE` step reshapes its tensors
(VGG16's fc6/fc7), and :data:`~.mappings.CHECKS` refuses a net the weights do not fit.
``convert_file`` also refuses a netdef whose ``layout`` variable differs from the one the
source's weights were trained in (:data:`~.mappings.LAYOUTS`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from . import mappings
from .errors import ZooError

SCALE_SUFFIXES = ("_res075", "_res05")


@dataclass
class Report:
    copied: int = 0
    dropped: list[str] = field(default_factory=list)      # source keys with no counterpart
    left_at_init: list[str] = field(default_factory=list)  # our keys nobody fed

    def summary(self) -> str:
        s = f"{self.copied} tensors copied, {len(self.dropped)} source tensors dropped"
        if self.left_at_init:
            s += f", {len(self.left_at_init)} left at their initial values ({', '.join(self.left_at_init[:6])}"
            s += ", ...)" if len(self.left_at_init) > 6 else ")"
        return s


def unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """A state dict from what ``torch.load`` gave: the dict itself, or under 'state_dict'/'model'."""
    if isinstance(obj, Mapping):
        for k in ("state_dict", "model", "model_state"):
            if k in obj and isinstance(obj[k], Mapping):
                obj = obj[k]
                break
        sd = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if sd:
            return sd
    raise ZooError("the file holds no state dict (expected a mapping of tensor names to tensors)")


def convert_state_dict(src: Mapping[str, torch.Tensor], source: str, net: torch.nn.Module,
                       ) -> tuple[dict[str, torch.Tensor], Report]:
    if source not in mappings.SOURCES:
        raise ZooError(f"unknown weight source '{source}'; known: {', '.join(mappings.SOURCES)}")
    table = mappings.key_table(source)
    check = mappings.CHECKS.get(source)
    problem = check(net) if check is not None else None
    if problem is not None:
        raise ZooError(f"{source}: {problem[0]}: {problem[1]}")
    prepare = mappings.PREPARE.get(source)
    if prepare is not None:
        src = prepare(src)
    ours = net.state_dict()
    out = {k: v.clone() for k, v in ours.items()}
    fed: dict[str, str] = {}
    rep = Report()
    unknown = [k for k in src if k not in table]
    if unknown:
        raise ZooError(f"{len(unknown)} key(s) of the {source} state dict are not in its table, "
                       f"e.g. '{unknown[0]}': is this the right --from?")
    for key, value in src.items():
        dsts = table[key]
        if dsts is None:
            rep.dropped.append(key)
            continue
        dsts = (dsts,) if isinstance(dsts, str) else tuple(d for d in dsts if d in ours) or dsts[:1]
        for dst in dsts:
            _feed(key, value, dst, source, net, ours, out, fed)
        rep.copied += 1
    covered = set(fed) | {f"{k.rpartition('.')[0]}{s}.{k.rpartition('.')[2]}" for k in fed for s in SCALE_SUFFIXES}
    rep.left_at_init = [k for k in ours if k not in covered and not k.endswith(".running_weight")]
    return out, rep


def _feed(key: str, value: torch.Tensor, dst: str, source: str, net: torch.nn.Module,
          ours: Mapping[str, torch.Tensor], out: dict[str, torch.Tensor], fed: dict[str, str]) -> None:
    if dst not in ours:
        raise ZooError(f"'{key}' maps to '{dst}', which this net does not have: "
                       f"use a netdef built for {source}")
    if dst in fed:
        raise ZooError(f"'{dst}' is fed by both '{fed[dst]}' and '{key}'")
    if tuple(value.shape) != tuple(ours[dst].shape):
        raise ZooError(f"'{key}' has shape {tuple(value.shape)} but '{dst}' is {tuple(ours[dst].shape)} "
                       "(a different num_classes or depth multiplier?)")
    fed[dst] = key
    targets = [dst]
    mod, _, leaf = dst.rpartition(".")
    targets += [f"{mod}{s}.{leaf}" for s in SCALE_SUFFIXES if f"{mod}{s}.{leaf}" in ours]
    for t in targets:
        out[t] = value.detach().to(ours[t].dtype).clone()
    if leaf == "running_mean":
        for t in targets:
            wkey = t.rpartition(".")[0] + ".running_weight"
            bn = net.get_submodule(t.rpartition(".")[0])
            maf = getattr(bn, "moving_average_fraction", 0.999)
            if wkey in out:
                out[wkey] = torch.full_like(out[wkey], 1.0 / (1.0 - maf) if maf < 1 else 1.0)


def layout_of(netdef: str | os.PathLike, vars: Mapping[str, Any] | None = None) -> str | None:
    """The value of the netdef's ``layout`` variable (None: it has none)."""
    from ..compiler import load_netdef
    doc = load_netdef(netdef, dict(vars or {}))
    value = (doc.get("vars") or {}).get("layout")
    return None if value is None else str(value)


def check_layout(source: str, netdef: str | os.PathLike, vars: Mapping[str, Any] | None = None) -> str | None:
    """The layout ``source``'s weights need (None: any); a :class:`ZooError` when the
    netdef is compiled with another one."""
    need = mappings.LAYOUTS.get(source)
    if need is None:
        return None
    have = layout_of(netdef, vars)
    if have is not None and have != need:
        raise ZooError(f"{source} weights need layout '{need}', but {os.fspath(netdef)} is compiled with "
                       f"layout '{have}': add -D layout={need}")
    return need


def convert_file(src_path: str | os.PathLike, source: str, netdef: str | os.PathLike, out_path: str | os.PathLike,
                 *, vars: Mapping[str, Any] | None = None) -> Report:
    """``deeplab-convert SRC --from SOURCE --netdef N -o OUT``: write ``{"state_dict": ...,
    "netdef": N, "source": SOURCE, "vars": ...}`` for ``deeplab-predict``/``deeplab-train``."""
    from ..compiler import compile_net
    from ..io.atomic import atomic_path
    check_layout(source, netdef, vars)
    from ..weights import read_pt
    obj = read_pt(src_path)     # .pth/.bin (weights_only) or .safetensors (timm's files on the hub)
    # the mapping tables name the netdef's layers: map onto the unfused net
    net = compile_net(netdef, vars=vars, inputs={"data": "1x3x65x65"}, fuse=False)
    sd, rep = convert_state_dict(unwrap(obj), source, net)
    with atomic_path(out_path) as tmp:
        torch.save({"state_dict": sd, "netdef": os.fspath(netdef), "source": source, "vars": dict(vars or {})}, tmp)
    return rep

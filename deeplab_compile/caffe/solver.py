"""Caffe ``solver.prototxt`` -> this project's solver YAML.

``convert(text, filename) -> (fields, notes, locs)`` reads a SolverParameter (text
format, checked against ``caffe.proto``) and maps it onto the plain fields of the
solver file (:mod:`deeplab_compile.training.solver`, whose ``convert_caffe`` calls this
and checks the result, so a converted file is one the runtime accepts); ``to_yaml``
writes them.  Nothing here imports the training code: this module only knows Caffe's
field names and ours.  Fields that have no meaning here (``test_initialization``,
``snapshot_format``, ...) are dropped and listed in the notes, which become comments at
the top of the YAML.  ``${VAR}`` placeholders are kept; give them with ``-D`` when the
solver runs.
"""
from __future__ import annotations

from typing import Any

import yaml

from ..netdef.errors import Loc, NetDefSyntaxError
from . import proto
from .textformat import parse

__all__ = ["convert", "to_yaml", "FIELDS", "DROPPED"]

#: Caffe field -> our field (same name unless given).
FIELDS = {
    "net": "net", "train_net": "net", "base_lr": "base_lr", "lr_policy": "lr_policy",
    "gamma": "gamma", "power": "power", "stepsize": "stepsize", "stepvalue": "stepvalue",
    "max_iter": "max_iter", "momentum": "momentum", "weight_decay": "weight_decay",
    "regularization_type": "regularization_type", "clip_gradients": "clip_gradients",
    "iter_size": "iter_size", "display": "display", "average_loss": "average_loss",
    "snapshot": "snapshot", "snapshot_prefix": "snapshot_prefix",
    "snapshot_after_train": "snapshot_after_train", "random_seed": "random_seed",
    "solver_mode": "solver_mode", "device_id": "device_id", "test_interval": "test_interval",
    "test_iter": "test_iter", "type": "type", "solver_type": "type", "weights": "weights",
    "precision": "precision", "channels_last": "channels_last",     # ours (caffe.proto: 1001, 1002;
                                                                    # channels_last absent: auto)
}
#: Fields read and dropped, with the reason given in the notes.
DROPPED = {
    "test_net": "test nets are the netdef's test phase",
    "test_initialization": "no test pass runs before training",
    "test_compute_loss": "not used", "snapshot_diff": "snapshots hold weights only",
    "snapshot_format": "snapshots are PyTorch checkpoints", "debug_info": "not used",
    "layer_wise_reduce": "not used", "delta": "only SGD is implemented",
    "momentum2": "only SGD is implemented", "rms_decay": "only SGD is implemented",
    "train_state": "phases come from the netdef", "test_state": "phases come from the netdef",
}
_LOWER = ("lr_policy", "regularization_type", "solver_mode", "type", "precision")


def convert(text: str, filename: str) -> tuple[dict, list[str], dict[str, Loc]]:
    """Returns ``(fields, notes, locs)``: our solver fields in Caffe's order, the notes
    on dropped fields and the prototxt position of each field."""
    msg, placeholders = parse(text, filename, proto.descriptor("SolverParameter"))
    out: dict[str, Any] = {}
    notes: list[str] = []
    locs: dict[str, Loc] = {}
    for name, items in msg.fields.items():
        f = items[0]
        if name in ("net_param", "train_net_param", "test_net_param"):
            raise NetDefSyntaxError(f"an inline '{name}' is not supported", loc=f.loc,
                                    hint="put the net in its own prototxt and name it with net: \"...\"")
        if name in DROPPED:
            notes.append(f"dropped {name}: {DROPPED[name]}")
            continue
        ours = FIELDS[name]
        if ours in out:
            raise NetDefSyntaxError(f"'{name}' repeats '{ours}' given at line {locs[ours].line}",
                                    loc=f.loc, hint="keep one of them")
        values = [i.value for i in items]
        if name == "test_iter":
            if len(values) > 1:
                notes.append(f"test_iter: kept the first of {len(values)} values (one test net)")
            value: Any = values[0]
        elif name == "weights":
            if len(values) > 1:
                raise NetDefSyntaxError("more than one 'weights' file", loc=items[1].loc,
                                        hint="merge them into one checkpoint first")
            value = values[0]
        elif name == "stepvalue":
            value = values
        else:
            value = values[-1]
        if ours in _LOWER and isinstance(value, str) and not value.startswith("${"):
            value = value.lower()
        out[ours] = value
        locs[ours] = f.loc
    if placeholders:
        notes.append("placeholders to give with -D: " + ", ".join(placeholders))
    return out, notes, locs


def to_yaml(fields: dict, notes: list[str], source: str) -> str:
    head = [f"# Converted from the Caffe solver {source}."] + [f"# {n}" for n in notes]
    body = yaml.safe_dump(fields, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(head) + "\n" + body


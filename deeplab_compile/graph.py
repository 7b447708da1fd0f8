"""The intermediate representation between a netdef and a torch.fx graph.

A :class:`Net` is a list of :class:`Layer` in execution order plus the :class:`Blob`
values they read and write.  Blobs are in SSA form: Caffe's in-place layers
(``top == bottom``) rebind a blob name, so every write gets a fresh blob id
(``conv1_1``, then ``conv1_1@relu1_1``) while ``Layer.bottoms``/``Layer.tops`` keep the
names the user wrote.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import Loc

Shape = tuple[int, ...]


@dataclass
class ParamSpec:
    """One Caffe ``param { lr_mult decay_mult name }`` entry (index i applies to blob i)."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str | None = None


@dataclass
class Blob:
    id: str                       # unique SSA id
    name: str                     # the name the netdef uses
    shape: Shape | None = None
    producer: str | None = None   # layer name, None for net inputs
    stride: Fraction = Fraction(1)  # cumulative output stride (input pixels per blob pixel)
    rf: int = 1                   # receptive field in input pixels


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, Any]                     # validated, defaults filled in
    param_specs: list[ParamSpec] = field(default_factory=list)
    phase: str | None = None                   # None = both phases
    loc: Loc | None = None
    key_locs: dict[str, Loc] = field(default_factory=dict)
    loss_weight: list[float] = field(default_factory=list)
    # filled in by wiring / shape inference / passes
    bottom_ids: list[str] = field(default_factory=list)
    top_ids: list[str] = field(default_factory=list)
    in_shapes: list[Shape] = field(default_factory=list)
    out_shapes: list[Shape] = field(default_factory=list)
    fused_from: list[str] = field(default_factory=list)   # names of layers a pass merged into this one
    # layers a pass merged into this one whose tensors it still reads: codegen keeps their
    # modules under their own names, so parameter names (and state_dicts) do not change
    absorbed: list["Layer"] = field(default_factory=list)

    def error(self, message: str, *, key: str | None = None, hint: str | None = None, cls=None):
        """An error about this layer, located at ``key`` if given (else at the layer)."""
        from .netdef.errors import NetDefError
        cls = cls or NetDefError
        loc = self.key_locs.get(key, self.loc) if key else self.loc
        return cls(message, loc=loc, layer=self.name, type=self.type, hint=hint)


@dataclass
class Net:
    name: str
    phase: str                                  # "train" | "test"
    inputs: dict[str, Shape]                    # blob name -> N,C,H,W (graph placeholders)
    layers: list[Layer]
    blobs: dict[str, Blob] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)   # blob ids returned by the graph
    vars: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    input_ids: dict[str, str] = field(default_factory=dict)  # input blob name -> blob id

    def layer(self, name: str) -> Layer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

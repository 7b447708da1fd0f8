"""Inference shared by ``deeplab-test`` and ``deeplab-predict``: the net at any input size,
the score blob, and multi-scale / flipped averaging.

* :func:`compile_at` turns a test-phase IR (compiled once from the netdef, before the
  passes) into a runnable net at given input sizes: :func:`~deeplab_compile.compiler.reshape`,
  then the passes, then code generation.  The text is never read again.
* :class:`SizedNets` keeps such nets per input size, all with the weights of the first.
* :func:`score_reader` is the one rule for the score blob: the blob named by the user
  (``--blob``; it must be an output of the net), else the first bottom of the net's
  first ``MatWrite`` layer (what DeepLab's test prototxts save, ``fc8``), else the
  net's first output.
* :func:`multi_scale_probs` averages probabilities over scales and mirroring.
* :func:`net_preprocess` is the one rule for the input normalisation: the user's flag,
  else what the weights file records (``deeplab-train`` writes the training data's),
  else the netdef's ``preprocess:`` key, else its ImageSegData layer's ``mean_value`` and
  ``scale``, else Caffe's (DeepLab's mean on B G R), with a note.

Resizing: the input is resized as the *normalised float tensor* (the net's data blob:
mean subtracted, scaled), bilinearly with corners aligned, to ``round(H * s) x
round(W * s)`` (halves to even, as Python and OpenCV round).  This is what DeepLab's MSC nets do (a Caffe ``Interp`` on the data
blob, corners aligned) and, equally, what TF DeepLab does (``resize_bilinear`` of the
float image with ``align_corners=True``, normalised after): the normalisation is a
per-channel affine map and bilinear weights sum to one, so resizing before or after it
gives the same tensor up to float rounding.  Resizing the 8-bit image (OpenCV's
half-pixel grid, rounded back to integers) matches neither, so it is not used.
The scores of each run are mirrored back where the input was mirrored, resized to the
image size (bilinear, corners aligned), turned into probabilities with a softmax over
the channel axis and averaged with equal weights.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DeepLabError


class ScoreError(DeepLabError):
    """No score blob to predict from, or a named one that the net does not return."""


class Capture(nn.Module):
    """Stands in for a MatWrite module: keeps the bottoms of the last call."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.last: tuple = ()

    def forward(self, *xs):
        self.last = tuple(x.detach() for x in xs)
        return ()


def install_capture(net, layer) -> Capture:
    """The :class:`Capture` in place of ``layer``'s MatWrite module of ``net`` (installed
    once; a second call returns the same one)."""
    from .codegen import module_name
    name = module_name(layer.name)
    mod = getattr(net, name)
    if not isinstance(mod, Capture):
        mod = Capture(layer)
        setattr(net, name, mod)
    return mod


def score_reader(net, blob: str | None = None) -> tuple[str, Callable[[Mapping[str, torch.Tensor]], torch.Tensor]]:
    """``(blob name, read)`` where ``read(outputs)`` gives the score blob of the last
    forward of ``net``; see the module doc for the rule."""
    outputs = list(net.output_names)
    if blob is not None:
        if blob not in outputs:
            raise ScoreError(f"--blob '{blob}' is not an output of the net in the test phase",
                             hint="outputs: " + (", ".join(outputs) or "none") + "; list it under 'outputs:'")
        return blob, lambda out: out[blob]
    writers = [lay for lay in net.net.layers if lay.type == "MatWrite"]
    if writers:
        cap = install_capture(net, writers[0])
        return writers[0].bottoms[0], lambda out: cap.last[0]
    if outputs:
        first = outputs[0]
        return first, lambda out: out[first]
    raise ScoreError("the net has no output to predict from", hint="name one with --blob")


def compile_at(ir, inputs: Mapping[str, Any] | None = None, *, fuse: bool | None = None):
    """A :class:`~deeplab_compile.codegen.CompiledNet` of the shaped, unfused IR ``ir`` at
    the input sizes ``inputs`` (``None``: as shaped).  ``fuse`` as in
    :func:`~deeplab_compile.compiler.compile_net`: ``None`` runs the passes for the test
    phase only; the test phase is lowered for CPU inference (:func:`~deeplab_compile.compiler.lowered`)."""
    from .codegen import generate
    from .compiler import lowered, reshape
    net = reshape(ir, inputs) if inputs else ir
    if (ir.phase == "test") if fuse is None else fuse:
        from .passes import run_passes
        net = run_passes(net)
    return lowered(generate(net), fuse=fuse)


def input_shape(ir, name: str) -> tuple[int, ...]:
    """The shape of the net input ``name`` (a graph input or a data layer's top)."""
    return tuple(ir.blobs[ir.input_ids[name]].shape)


class SizedNets:
    """The nets of one test-phase IR at each input size, built on demand by
    :func:`compile_at` and given the weights of ``first`` (the net the caller built and
    loaded; any size).  ``get(h, w)`` returns the net for a ``1 x C x h x w`` input of
    the blob ``data``; ``prepare(net)`` runs on each new one (to install captures).  The
    ``keep`` most recently used nets are kept."""

    def __init__(self, ir, first, *, data: str = "data", device: torch.device | str = "cpu",
                 fuse: bool | None = None, prepare: Callable[[Any], None] | None = None, keep: int = 8):
        self.ir, self.data, self.device, self.fuse, self.prepare, self.keep = ir, data, device, fuse, prepare, keep
        self.state = first.state_dict()
        self._nets: OrderedDict[tuple[int, int], Any] = OrderedDict()
        shape = input_shape(first.net, data)
        if len(shape) == 4 and shape[0] == 1:
            self._nets[(shape[2], shape[3])] = first

    def get(self, h: int, w: int):
        key = (int(h), int(w))
        net = self._nets.get(key)
        if net is None:
            channels = input_shape(self.ir, self.data)[1]
            net = compile_at(self.ir, {self.data: (1, channels, *key)}, fuse=self.fuse)
            net.load_state_dict(self.state)
            net.to(self.device).eval()
            if self.prepare is not None:
                self.prepare(net)
            self._nets[key] = net
            while len(self._nets) > self.keep:
                self._nets.popitem(last=False)
        self._nets.move_to_end(key)
        return net


def scaled_size(h: int, w: int, s: float) -> tuple[int, int]:
    """The input size at scale ``s``: ``round(h * s) x round(w * s)`` (halves to even),
    at least 1."""
    return max(1, round(h * float(s))), max(1, round(w * float(s)))


@torch.no_grad()
def multi_scale_probs(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scales: Sequence[float],
                      flip: bool = False) -> torch.Tensor:
    """The mean probability (``1 x K x H x W``) over ``scales`` and, with ``flip``, the
    mirrored input; ``x`` is the normalised ``1 x C x H x W`` data blob and ``run(x)``
    returns the scores (``1 x K x h x w``) of the net for an input ``x``.  The resize
    rule is the module doc's."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    total, n = None, 0
    for s in scales:
        size = scaled_size(h, w, s)
        xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        for mirrored in ((False, True) if flip else (False,)):
            scores = run(xs.flip(-1) if mirrored else xs)
            if mirrored:
                scores = scores.flip(-1)
            scores = F.interpolate(scores.float(), size=(h, w), mode="bilinear", align_corners=True)
            p = torch.softmax(scores, dim=1)
            total = p if total is None else total + p
            n += 1
    return total / n


def data_layer_params(doc: Mapping) -> Mapping | None:
    """The parameters of the first ImageSegData layer of an expanded netdef (any phase)."""
    for lay in doc.get("layers") or ():
        if isinstance(lay, Mapping) and lay.get("type") == "ImageSegData":
            return lay
    return None


def net_preprocess(doc: Mapping, meta: Mapping | None = None, flag: Any = None):
    """``(Preprocess, where it came from)`` for an expanded netdef ``doc`` and the
    metadata of its weights file (:func:`deeplab_compile.weights.read_state_dict`); the
    rule is the module doc's."""
    from .data import preprocess as pp
    if flag is not None:
        return pp.from_value(flag, "--preprocess"), "--preprocess"
    if meta and meta.get("preprocess") is not None:
        return pp.from_value(meta["preprocess"], "the weights file's preprocess"), "the weights file"
    declared = pp.of_netdef(doc)
    if declared is not None:
        return declared, "the netdef's preprocess"
    lay = data_layer_params(doc)
    if lay is not None:
        return pp.of_layer(lay, str(lay.get("name"))), f"layer '{lay.get('name')}'"
    return pp.PRESETS["caffe"], "the default (nothing recorded)"

"""Caffe weights (``.caffemodel``, a binary NetParameter) in and out.

Reading
    :func:`read_layers` maps the file into memory and walks the protobuf wire format
    itself: it reads a layer's name, type, ``param`` names and blobs, and skips every
    other field (layer parameters of any Caffe fork included).  Blob data are views of
    the mapped file (``numpy.frombuffer``), so a 170 MB ResNet-101 model is never held
    twice while it is parsed; each blob is copied once, into its tensor.  Blob shapes
    come from ``shape { dim }`` or the legacy ``num/channels/height/width``.

Matching (:func:`caffe_state_dict`)
    Layers are matched by name; a layer's blobs map to its type's learnable tensors in
    Caffe's order (``weight``, ``bias``).  A tensor shared through ``param { name }``
    is filled by whichever layer of the group the file has.  BatchNorm's three blobs
    (``mean * f``, ``var * f``, ``f``) become ``running_mean = b0 / f``,
    ``running_var = b1 / f`` (0 where ``f`` is 0) and ``running_weight = f``.  A blob
    whose shape differs from the tensor only by size-1 axes is reshaped, and so is an
    InnerProduct weight loaded into a convolution (VGG's fc6 ``4096 x 25088`` into
    ``4096 x 512 x 7 x 7``) and back.  Missing, unexpected, wrongly shaped and
    wrongly counted blobs are collected and reported as one :class:`WeightsError`.

Writing (:func:`write_caffemodel`)
    One ``layer`` per layer with learnable tensors (name, type, blobs with ``shape``);
    float32 tensors go to ``data``, float64 to ``double_data``.  Shared tensors are
    written under every layer that uses them, as Caffe saves them.  Reading the file back
    gives identical tensors; for BatchNorm that holds when ``running_weight`` is a power
    of two (1 in converted ImageNet models), otherwise mean and variance may move by one
    float32 ulp through the multiplication and division by it.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import DeepLabError, Loc

__all__ = ["WeightsError", "CaffeBlob", "CaffeLayer", "read_layers", "expected_layers",
           "caffe_state_dict", "write_caffemodel", "check_state_dict", "Problems"]


class WeightsError(DeepLabError):
    """A weights file that cannot be read or does not fit the net."""


@dataclass
class CaffeBlob:
    shape: tuple[int, ...]
    data: np.ndarray          # a view of the mapped file (copy it before the file closes)
    legacy: bool = False


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list[CaffeBlob]
    param_names: list[str]
    index: int                 # 1-based position among the file's layers
    offset: int                # byte offset of the layer in the file


# ---------------------------------------------------------------- wire format

class _Corrupt(Exception):
    def __init__(self, pos: int, what: str):
        super().__init__(what)
        self.pos, self.what = pos, what


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _Corrupt(start, "the data end inside a number (the file is truncated)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt(start, "a number is longer than 10 bytes")


def _fields(buf, pos: int, end: int) -> Iterator[tuple[int, int, Any, int]]:
    """``(field number, wire type, value, field start)``; a length-delimited value is
    ``(start, end)``, a varint its int, fixed32/64 their byte offset."""
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos, end)
        number, wt = key >> 3, key & 7
        if number == 0:
            raise _Corrupt(start, "field number 0")
        if wt == 0:
            value, pos = _varint(buf, pos, end)
        elif wt == 1:
            value, pos = pos, pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            value = (pos, pos + n)
            pos += n
        elif wt == 5:
            value, pos = pos, pos + 4
        else:
            raise _Corrupt(start, f"wire type {wt} of field {number} is not valid here")
        if pos > end:
            raise _Corrupt(start, f"field {number} needs {pos - start} bytes but only "
                                  f"{end - start} remain (the file is truncated)")
        yield number, wt, value, start


def _text(buf, span) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(span[0], "a name is not UTF-8 text") from None


def _packed_varints(buf, span) -> list[int]:
    out, pos = [], span[0]
    while pos < span[1]:
        v, pos = _varint(buf, pos, span[1])
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _blob(buf, start: int, end: int) -> CaffeBlob:
    dims: list[int] = []
    legacy = {}
    chunks: list[np.ndarray] = []
    singles: list[float] = []
    double = None
    for number, wt, value, pos in _fields(buf, start, end):
        if number == 7 and wt == 2:                       # shape { dim }
            for n2, wt2, v2, p2 in _fields(buf, value[0], value[1]):
                if n2 == 1:
                    if wt2 == 2:
                        dims.extend(_packed_varints(buf, v2))
                    elif wt2 == 0:
                        dims.append(v2 - (1 << 64) if v2 >= 1 << 63 else v2)
        elif number in (1, 2, 3, 4) and wt == 0:
            legacy[number] = value
        elif number == 5:
            if wt == 2:
                if (value[1] - value[0]) % 4:
                    raise _Corrupt(pos, "float data whose length is not a multiple of 4")
                chunks.append(np.frombuffer(buf, dtype="<f4", count=(value[1] - value[0]) // 4,
                                            offset=value[0]))
            elif wt == 5:
                singles.append(struct.unpack_from("<f", buf, value)[0])
        elif number == 8:
            if wt == 2:
                if (value[1] - value[0]) % 8:
                    raise _Corrupt(pos, "double data whose length is not a multiple of 8")
                double = np.frombuffer(buf, dtype="<f8", count=(value[1] - value[0]) // 8,
                                       offset=value[0])
            elif wt == 1:
                singles.append(struct.unpack_from("<d", buf, value)[0])
    if singles:
        chunks.append(np.asarray(singles, dtype=np.float32))
    if double is not None and not chunks:
        data = double
    elif len(chunks) == 1:
        data = chunks[0]
    elif chunks:
        data = np.concatenate(chunks)
    else:
        data = np.zeros(0, dtype=np.float32)
    if dims:
        shape, is_legacy = tuple(dims), False
    elif legacy:
        shape, is_legacy = tuple(legacy.get(k, 0) for k in (1, 2, 3, 4)), True
    else:
        shape, is_legacy = (data.size,), False
    if any(d < 0 for d in shape) or prod(shape) != data.size:
        raise _Corrupt(start, f"a blob of shape {_fmt(shape)} holds {data.size} values")
    return CaffeBlob(shape, data, is_legacy)


def _v1_type(number: int) -> str:
    from . import proto
    enum = proto.descriptor("V1LayerParameter").enum_types_by_name["LayerType"]
    value = enum.values_by_number.get(number)
    return value.name if value is not None else f"V1 type {number}"


def _layer(buf, start: int, end: int, v1: bool, index: int, offset: int) -> CaffeLayer:
    name, ltype = "", ""
    blobs: list[CaffeBlob] = []
    params: list[str] = []
    name_no, type_no, blobs_no = (4, 5, 6) if v1 else (1, 2, 7)
    for number, wt, value, pos in _fields(buf, start, end):
        if number == name_no and wt == 2:
            name = _text(buf, value)
        elif number == type_no:
            ltype = _v1_type(value) if (v1 and wt == 0) else _text(buf, value) if wt == 2 else ltype
        elif number == blobs_no and wt == 2:
            blobs.append(_blob(buf, value[0], value[1]))
        elif not v1 and number == 6 and wt == 2:              # ParamSpec { name }
            pname = ""
            for n2, wt2, v2, _ in _fields(buf, value[0], value[1]):
                if n2 == 1 and wt2 == 2:
                    pname = _text(buf, v2)
            params.append(pname)
        elif v1 and number == 1001 and wt == 2:
            params.append(_text(buf, value))
    if v1 and ltype == "IMAGE_SEG_DATA" and blobs:
        ltype = "DECONVOLUTION"     # V1 type 39 in DeepLab v2's schema; a data layer has no blobs
    return CaffeLayer(name, ltype, blobs, params, index, offset)


# NetParameter's own fields and their wire types (a field that breaks these means the
# file is some other message).
_NET_FIELDS = {1: (2,), 2: (2,), 3: (2,), 4: (0, 2), 5: (0,), 6: (2,), 7: (0,), 8: (2,), 100: (2,)}


def _looks_like_text(head: bytes) -> bool:
    return bool(head) and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:256])


def read_layers(path: str | os.PathLike, *, progress: Callable[[int], None] | None = None
                ) -> Iterator[CaffeLayer]:
    """Yield the layers of the caffemodel at ``path`` in file order.  Their blob data
    are views of the mapped file, valid until the iteration ends.  ``progress(n)`` is
    called with the bytes consumed."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise WeightsError(f"no such weights file '{path}'", loc=Loc(path), hint="check the path") from None
    except OSError as err:
        raise WeightsError(f"cannot read '{path}': {err.strerror or err}", loc=Loc(path),
                           hint="check the path and its permissions") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise WeightsError("the file is empty", loc=Loc(path),
                               hint="give a binary .caffemodel (a NetParameter with weights)")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        head = mm[:256]
        index = 0
        seen_layers = False
        try:
            for number, wt, value, pos in _fields(mm, 0, size):
                if number in _NET_FIELDS and wt not in _NET_FIELDS[number]:
                    raise _Corrupt(pos, f"field {number} has wire type {wt}, which a NetParameter "
                                        "never has: this is not a NetParameter")
                if number in (100, 2):
                    index += 1
                    seen_layers = True
                    layer = _layer(mm, value[0], value[1], number == 2, index, pos)
                    if progress is not None:
                        progress(value[1] - pos)
                    yield layer
            if not seen_layers:
                raise _Corrupt(0, "the file has no layers: it is not a NetParameter with weights")
        except _Corrupt as err:
            if _looks_like_text(head):
                raise WeightsError("this is a text file (a prototxt?), not a binary caffemodel",
                                   loc=Loc(path), hint="give the .caffemodel with the weights") from None
            where = f" (in layer #{index})" if index else ""
            raise WeightsError(f"corrupt caffemodel at byte {err.pos}{where}: {err.what}",
                               loc=Loc(path), hint="the file is damaged or not a Caffe "
                               "NetParameter; download or export it again") from None
        finally:
            try:
                mm.close()
            except BufferError:
                pass        # numpy views are still alive; the map goes when they do


# ---------------------------------------------------------------- the net's side

@dataclass
class Slot:
    key: str                          # state_dict key
    shape: tuple[int, ...]
    dtype: torch.dtype
    share: str | None = None          # param { name } of a shared tensor


@dataclass
class ExpectedLayer:
    name: str
    type: str
    slots: list[Slot] = field(default_factory=list)


def expected_layers(net) -> list[ExpectedLayer]:
    """For a compiled net: each layer with learnable tensors (or BatchNorm statistics),
    its state_dict keys in Caffe's blob order.  A fused net (passes/) lists the layers
    the netdef wrote, under their own types: a ConvolutionBN is its Convolution, and the
    layers it and the ASPP layers absorbed follow it."""
    from ..codegen import module_name, param_layers
    from ..layers import registry
    out = []
    for lay in param_layers(net.net):       # fused layers' absorbed layers too (passes/)
        # a fused layer named after one it absorbed (ConvolutionBN: its conv) is that layer
        lay = next((a for a in lay.absorbed if a.name == lay.name), lay)
        spec = registry.get(lay.type)
        if spec is None or not spec.blobs:
            continue
        mname = module_name(lay.name)
        mod = getattr(net, mname, None)
        if mod is None:
            continue
        exp = ExpectedLayer(lay.name, lay.type)
        for i, blob in enumerate(spec.blobs):
            t = getattr(mod, blob, None)
            if not isinstance(t, torch.Tensor):
                continue
            share = lay.param_specs[i].name if i < len(lay.param_specs) else None
            exp.slots.append(Slot(f"{mname}.{blob}", tuple(t.shape), t.dtype, share or None))
        if exp.slots:
            out.append(exp)
    return out


def _fmt(shape) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


def _squeeze(shape) -> tuple:
    return tuple(d for d in shape if d != 1)


def _fits(blob_shape: tuple, target: tuple, ltype: str, slot_index: int) -> bool:
    if tuple(blob_shape) == tuple(target):
        return True
    if prod(blob_shape) != prod(target):
        return False
    if _squeeze(blob_shape) == _squeeze(target):
        return True
    # InnerProduct <-> Convolution weights (fc layers turned into convolutions)
    if slot_index == 0 and ltype in ("Convolution", "InnerProduct"):
        lead = [d for d in blob_shape]
        while len(lead) > 2 and lead[0] == 1:
            lead.pop(0)
        return lead[0] == target[0]
    return False


class Problems:
    """Missing, unexpected and mismatched blobs, reported together as one error."""

    # Said where missing or unexpected blobs fail; only deeplab-convert and the Python API
    # can load a partial match.
    LOOSE_HINT = ("the weights were made for another net (check the netdef and its vars); "
                  "deeplab-convert --allow-missing, or allow_missing=True in Python, loads what matches")

    def __init__(self, source: str, loose_hint: str | None = None):
        self.source = source
        self.loose_hint = loose_hint or self.LOOSE_HINT
        self.rows: list[tuple[str, str, str, str, str]] = []   # kind, layer, blob, file, net
        self.where: list[str | None] = []

    def add(self, kind: str, layer: str, blob: str, file_side: str, net_side: str,
            where: str | None = None) -> None:
        self.rows.append((kind, layer, blob, file_side, net_side))
        self.where.append(where)

    def count(self, kind: str) -> int:
        return sum(1 for r in self.rows if r[0] == kind)

    def raise_if_any(self, allow_missing: bool) -> None:
        fatal = [r for r in self.rows if r[0] in ("shape", "count")]
        loose = [r for r in self.rows if r[0] in ("missing", "unexpected")]
        if not fatal and (allow_missing or not loose):
            return
        rows = fatal + ([] if allow_missing else loose)
        n_missing, n_unexp = self.count("missing"), self.count("unexpected")
        n_shape, n_count = self.count("shape"), self.count("count")
        if len(rows) == 1:
            kind, layer, blob, file_side, net_side = rows[0]
            where = self.where[self.rows.index(rows[0])]
            what = {"missing": f"the net's {net_side} ({blob}) has no blob in the file",
                    "unexpected": f"the file has {file_side} for it, and the net has no such layer",
                    "shape": f"{blob} is {file_side} in the file but {net_side} in the net",
                    "count": f"the file has {file_side} for it but the net expects {net_side}"}[kind]
            hint = (self.loose_hint
                    if kind in ("missing", "unexpected") else
                    "the weights were made for a different net; rename the layer so it is not "
                    "matched, or fix its parameters")
            at = f" ({where})" if where else ""
            raise WeightsError(f"layer '{layer}'{at}: {what}", loc=Loc(self.source), hint=hint)
        parts = []
        if n_missing and not allow_missing:
            parts.append(f"{n_missing} missing")
        if n_unexp and not allow_missing:
            parts.append(f"{n_unexp} unexpected")
        if n_shape:
            parts.append(f"{n_shape} with the wrong shape")
        if n_count:
            parts.append(f"{n_count} with the wrong blob count")
        how = ("shape and count mismatches always fail; rename the layers so they are not matched"
               if fatal else self.loose_hint)
        head = f"{self.source}: the weights do not fit the net ({', '.join(parts)}); {how}"
        table = [("problem", "layer", "blob", "in the file", "in the net")] + [
            (k, l, b, f, n) for k, l, b, f, n in rows]
        widths = [max(len(r[i]) for r in table) for i in range(5)]
        lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
        raise WeightsError(head + "\n" + "\n".join(lines))


# ---------------------------------------------------------------- caffemodel -> state_dict

def caffe_state_dict(net, path: str | os.PathLike, *, allow_missing: bool = False,
                     progress: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict (our names) for ``net`` from the caffemodel at ``path``.  Raises a
    :class:`WeightsError` with one table for everything that does not fit; with
    ``allow_missing`` only shape and count mismatches fail."""
    path = os.fspath(path)
    expected = expected_layers(net)
    by_name = {e.name: e for e in expected}
    problems = Problems(path)
    state: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    failed: set[str] = set()        # keys and share names already reported as mismatched
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc="caffemodel",
                   leave=False)
    try:
        for cl in read_layers(path, progress=bar.update if bar is not None else None):
            if not cl.blobs or cl.name in seen:
                continue
            seen.add(cl.name)
            exp = by_name.get(cl.name)
            where = f"layer #{cl.index} at byte {cl.offset}"
            if exp is None:
                problems.add("unexpected", cl.name, "-", f"{len(cl.blobs)} blob(s) ("
                             + ", ".join(_fmt(b.shape) for b in cl.blobs) + ")", "-", where)
                continue
            if len(cl.blobs) != len(exp.slots):
                problems.add("count", cl.name, "-", f"{len(cl.blobs)} blob(s)",
                             f"{len(exp.slots)} ({', '.join(s.key for s in exp.slots)})", where)
                failed.update(x for s in exp.slots for x in (s.key, s.share) if x)
                continue
            if exp.type == "BatchNorm":
                _batch_norm(cl, exp, state, problems, where)
                for slot in exp.slots:
                    if slot.share and slot.key in state:
                        shared.setdefault(slot.share, state[slot.key])
                continue
            for i, (blob, slot) in enumerate(zip(cl.blobs, exp.slots)):
                if not _fits(blob.shape, slot.shape, exp.type, i):
                    problems.add("shape", cl.name, slot.key, _fmt(blob.shape), _fmt(slot.shape), where)
                    failed.update(x for x in (slot.key, slot.share) if x)
                    continue
                t = torch.from_numpy(np.array(blob.data, dtype=np.float32 if slot.dtype == torch.float32
                                              else None, copy=True)).reshape(slot.shape).to(slot.dtype)
                state[slot.key] = t
                if slot.share:
                    shared.setdefault(slot.share, t)
    finally:
        if bar is not None:
            bar.close()
    for exp in expected:
        for slot in exp.slots:
            if slot.key in state or slot.key in failed or (slot.share and slot.share in failed):
                continue
            if slot.share and slot.share in shared:
                state[slot.key] = shared[slot.share]
                continue
            problems.add("missing", exp.name, slot.key, "-", _fmt(slot.shape))
    problems.raise_if_any(allow_missing)
    return {k: v for k, v in state.items() if v is not None}


def _batch_norm(cl: CaffeLayer, exp: ExpectedLayer, state: dict, problems: Problems, where: str) -> None:
    mean_s, var_s, w_s = exp.slots
    b0, b1, b2 = cl.blobs
    c = mean_s.shape[0] if mean_s.shape else 1
    ok = True
    for blob, slot, n in ((b0, mean_s, c), (b1, var_s, c), (b2, w_s, 1)):
        if prod(blob.shape) != n or len(_squeeze(blob.shape)) > 1:
            problems.add("shape", cl.name, slot.key, _fmt(blob.shape), _fmt(slot.shape), where)
            ok = False
    if not ok:
        state.update({s.key: None for s in exp.slots})   # reported: not missing as well
        return
    factor = float(np.asarray(b2.data, dtype=np.float64).reshape(-1)[0])
    mean = np.asarray(b0.data, dtype=np.float64) / (factor or np.inf)    # 0 when the factor is 0
    var = np.asarray(b1.data, dtype=np.float64) / (factor or np.inf)
    state[mean_s.key] = torch.from_numpy(mean.astype(np.float32)).reshape(mean_s.shape).to(mean_s.dtype)
    state[var_s.key] = torch.from_numpy(var.astype(np.float32)).reshape(var_s.shape).to(var_s.dtype)
    state[w_s.key] = torch.tensor(factor, dtype=w_s.dtype).reshape(w_s.shape)


# ---------------------------------------------------------------- state_dict checks

def check_state_dict(net, state: dict, source: str, *, allow_missing: bool = False,
                     loose_hint: str | None = None) -> dict:
    """Compare a checkpoint's state_dict with ``net``'s: the same table of missing,
    unexpected and wrongly shaped entries.  Returns the entries that fit.  ``loose_hint``
    replaces the fix said for missing or unexpected entries."""
    own = net.state_dict()
    problems = Problems(source, loose_hint)
    key_layer = {s.key: e.name for e in expected_layers(net) for s in e.slots}
    out = {}
    for key, t in state.items():
        if key not in own:
            problems.add("unexpected", key.rsplit(".", 1)[0], key, _fmt(tuple(t.shape)), "-")
            continue
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(own[key].shape):
            shape = _fmt(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__
            problems.add("shape", key_layer.get(key, key.rsplit(".", 1)[0]), key, shape,
                         _fmt(tuple(own[key].shape)))
            continue
        out[key] = t
    for key, t in own.items():
        if key not in state:
            problems.add("missing", key_layer.get(key, key.rsplit(".", 1)[0]), key, "-", _fmt(tuple(t.shape)))
    problems.raise_if_any(allow_missing)
    return out


# ---------------------------------------------------------------- state_dict -> caffemodel

def _key(number: int, wt: int) -> bytes:
    return _enc_varint((number << 3) | wt)


def _enc_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(payload)) + payload


def _blob_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    dims = b"".join(_enc_varint(d) for d in t.shape)
    shape = _len_field(7, _len_field(1, dims) if dims else b"")
    if t.dtype == torch.float64:
        data = _len_field(8, t.numpy().astype("<f8", copy=False).tobytes())
    else:
        data = _len_field(5, t.to(torch.float32).numpy().astype("<f4", copy=False).tobytes())
    return shape + data


def write_caffemodel(net, state: dict[str, torch.Tensor], f, *, name: str | None = None,
                     progress: bool = False) -> None:
    """Write ``state`` (our names, complete for ``net``) as a caffemodel to the binary
    file object ``f``."""
    from . import proto
    expected = expected_layers(net)
    problems = Problems("the checkpoint")
    for e in expected:
        for s in e.slots:
            if s.key not in state:
                problems.add("missing", e.name, s.key, "-", _fmt(s.shape))
            elif tuple(state[s.key].shape) != tuple(s.shape):
                problems.add("shape", e.name, s.key, _fmt(tuple(state[s.key].shape)), _fmt(s.shape))
    problems.raise_if_any(False)
    f.write(_len_field(1, (name or net.net.name).encode("utf-8")))
    it = expected
    if progress:
        from tqdm import tqdm
        it = tqdm(expected, unit="layer", desc="caffemodel", leave=False)
    for e in it:
        head = proto.LayerParameter(name=e.name, type=e.type).SerializeToString()
        if e.type == "BatchNorm":
            mean, var, w = (state[s.key].detach().cpu().double() for s in e.slots)
            factor = float(w.reshape(-1)[0])
            tensors = [(mean * factor).float(), (var * factor).float(), w.reshape(1).float()]
        else:
            tensors = [state[s.key] for s in e.slots]
        body = head + b"".join(_len_field(7, _blob_bytes(t)) for t in tensors)
        f.write(_key(100, 2) + _enc_varint(len(body)))
        f.write(body)

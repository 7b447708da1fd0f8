"""Testing: ``caffe test`` with DeepLab's MatWrite, plus PNG predictions and TF DeepLab's
multi-scale and flipped inference.

``run_test(net, weights, list)`` compiles the TEST phase, feeds it the images of the
list (crop from the top-left, padding with the mean at the bottom and right, as
DeepLab's test prototxts with ``crop_size: 513``) and, for every image:

* every ``MatWrite`` layer of the net writes its bottoms as DeepLab did:
  ``<prefix><id>_blob_<i>.mat`` with the variable ``data`` (single, [W, H, C, N]),
  ids taken in order from its ``source`` list (``strip`` characters cut off their end),
  on every ``period``-th call.  In the graph MatWrite is a no-op; the runner swaps in a
  module that captures its bottoms and writes them here.
* ``features_dir``: the score blob (``blob``, else the net's first output) is written the
  same way, ``<features_dir>/<id>_blob_0.mat``;
* ``png_dir``: the arg-max of the score blob, cropped to the image size, as a VOC
  palette PNG ``<png_dir>/<id>.png``.

An image larger than the crop is never cropped: when the list holds one, every image is
tested alone, padded at the bottom and right to ``max(crop, image size)`` (the net
reshaped from the IR to that size), and a note says how many were larger.

The score blob is picked by :func:`deeplab_compile.inference.score_reader` (``blob``,
else the first MatWrite's bottom, else the first output).

With ``scales`` other than ``[1]`` or ``flip``, each image is run whole (no crop) at
every scale and, with ``flip``, mirrored too, by
:func:`deeplab_compile.inference.multi_scale_probs` (the normalised image resized
bilinearly with corners aligned; the net reshaped to each size from the IR compiled
once); the scores are resized to the image size, turned into probabilities and
averaged, as TF DeepLab's ``eval_scales`` / ``add_flipped_images``.  The features
written are then ``log`` of the mean probability at the image size, so a softmax of
them (what the dense CRF does with scores) gives back the mean probability.

With the data layer's ``resize_to_range`` (TF DeepLab's min/max_resize_value and
resize_factor) the net sees each image resized; what is written comes back at the image's
own size: a blob at the net's input size is cropped to the resized image and resized
bilinearly (corners aligned) to the original height and width before the arg-max and
before it is written (with scales or flip: the mean probability), so evaluation reads the
original labels.  A blob of another size (an fc8 at stride 8) is written as the net made it.

``precision`` (``fp32``, ``bf16``, ``fp16``) runs the net under ``torch.autocast`` on
its device and ``channels_last`` puts the net and its inputs in that memory layout
(:mod:`deeplab_compile.training.precision`); what is written (features, PNGs) is
computed from float32 scores either way.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch

from .errors import DeepLabError


class TestError(DeepLabError):
    """A test run that cannot go on: no score blob, weights that leave the net unset."""


@dataclass
class _Writer:
    prefix: str
    ids: list[str] | None
    period: int
    capture: Any
    calls: int = 0
    written: int = 0
    cursor: int = 0


def save_png(path: str, labels: np.ndarray) -> str:
    """A class-id map as a VOC palette PNG, written atomically."""
    from .io.palette import write_label_png
    write_label_png(path, labels.astype(np.uint8))
    return path


@dataclass
class TestResult:
    images: int
    files: list[str] = field(default_factory=list)
    blob: str | None = None


def _device(gpu) -> torch.device:
    from .training.distributed import pick_device
    return pick_device(gpu)


def run_test(net_path: str, weights: str | None, *, list_path: str | None = None, root: str | None = None,
             vars: dict | None = None, data: dict | None = None, gpu: Any = None, batch_size: int | None = None,
             scales: Sequence[float] = (1.0,), flip: bool = False, features_dir: str | None = None,
             blob: str | None = None, png_dir: str | None = None, num_workers: int | None = None,
             progress: bool = True, allow_missing: bool = False, precision: str = "fp32",
             channels_last: bool = False) -> TestResult:
    from .compiler import load_netdef, net_from_doc
    from .data import pipeline_for
    from .data.dataset import collate
    from .data.listfile import read_ids
    from .data.spec import CAFFE_MEAN_BGR, find_data_layer, resolve_spec
    from .inference import ScoreError, SizedNets, compile_at, install_capture, multi_scale_probs, score_reader
    from .weights import CHECKPOINT_SUFFIXES, check_state_dict, load_weights, read_state_dict
    from .io.features import feature_path, write_blob
    from .training.precision import Precision, parse_precision

    device = _device(gpu)
    prec = Precision(parse_precision(precision, "--precision"), bool(channels_last))
    prec.check(device)
    # read once: the data spec comes from this IR, and every input size is a reshape of it
    doc = load_netdef(net_path, vars)
    ir = net_from_doc(doc, phase="test", source=net_path)
    state, meta = (None, {})
    if weights and os.path.splitext(weights)[1].lower() in CHECKPOINT_SUFFIXES:
        state, meta = read_state_dict(weights)
    overrides: dict[str, Any] = dict(data or {})
    if list_path:
        overrides["source"] = list_path
    if root is not None:
        overrides["root_folder"] = root
    has_layer = find_data_layer(ir) is not None
    _preprocess(overrides, doc, ir, meta, net_path, weights)
    if not has_layer:
        if overrides.get("preprocess", "caffe") == "caffe":
            overrides.setdefault("mean_value", list(CAFFE_MEAN_BGR))
        if "label" not in ir.inputs or not _consumes(ir, "label"):
            overrides["label_type"] = "none"
    overrides.setdefault("num_workers", 2)
    spec = resolve_spec(ir, "test", overrides)
    if batch_size:
        spec.batch_size = batch_size
    inputs = None
    if not has_layer:
        inputs = {spec.tops[0]: (spec.batch_size, ir.inputs[spec.tops[0]][1], spec.crop_height, spec.crop_width)}
    net = compile_at(ir, inputs)
    if state is not None:
        with torch.no_grad():
            net.load_state_dict(check_state_dict(net, state, weights, allow_missing=allow_missing), strict=False)
    elif weights:
        load_weights(net, weights, allow_missing=allow_missing)
    net.to(device).eval()
    prec.model(net)

    writers: list[_Writer] = []
    for lay in net.net.layers:
        if lay.type == "MatWrite":
            cap = install_capture(net, lay)
            p = lay.params
            ids = read_ids(p["source"], p["strip"]) if p["source"] else None
            writers.append(_Writer(prefix=p["prefix"], ids=ids, period=p["period"], capture=cap))
    try:
        blob_name, read_score = score_reader(net, blob)
    except ScoreError as err:
        raise TestError(err.message, hint=err.hint) from None

    def score_of(out):          # what is written is float32, whatever the precision
        return read_score(out).float()

    pipe = pipeline_for(net, "test", spec, num_workers=0 if (len(scales) > 1 or flip or scales[0] != 1) else
                        num_workers)
    files: list[str] = []
    multi = len(scales) > 1 or flip or float(scales[0]) != 1.0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(pipe.dataset), desc="test", unit="img", file=sys.stderr, dynamic_ncols=True)
    n_done = 0

    def emit(batch, scores, lasts) -> int:
        """Write the features and PNGs of one batch; ``lasts``: each writer's bottoms."""
        ids = batch["id"]
        back = _restore if spec.resize_to_range else (lambda x, *_: x)
        for w, last in zip(writers, lasts):
            w.calls += 1
            if (w.calls - 1) % w.period:
                continue
            for n in range(len(ids)):
                name = _next_id(w, ids[n])
                for i, x in enumerate(last):
                    x = back(x[n:n + 1].float(), batch, n, batch[spec.tops[0]].shape[-2:])
                    files.append(write_blob(feature_path(w.prefix, name, i), x.cpu().numpy()))
        for n, image_id in enumerate(ids):
            score = back(scores[n:n + 1], batch, n, batch[spec.tops[0]].shape[-2:])
            if features_dir:
                files.append(write_blob(feature_path(os.path.join(features_dir, ""), image_id),
                                        score.cpu().numpy()))
            if png_dir:
                h, w_ = (int(v) for v in batch["size" if not spec.resize_to_range else "orig_size"][n])
                lab = score[0, :, :h, :w_].argmax(0).cpu().numpy()
                files.append(save_png(os.path.join(png_dir, image_id + ".png"), lab))
        if bar is not None:
            bar.update(len(ids))
        return len(ids)

    sizes = [] if multi else _sizes(pipe.dataset)
    big = [i for i, (h, w) in enumerate(sizes) if h > spec.crop_height or w > spec.crop_width]
    if big:
        e = pipe.dataset.entries[big[0]]
        print(f"note: {len(big)} of {len(sizes)} images are larger than the crop {spec.crop_height}x"
              f"{spec.crop_width} (first: {e.image}, {sizes[big[0]][0]}x{sizes[big[0]][1]}); each image is "
              "tested whole, padded at the bottom and right to at least the crop", file=sys.stderr)
    with torch.no_grad(), prec.autocast(device):
        if not multi and not big:
            for batch in pipe:
                out = net(*prec.inputs(pipe.feeds(batch, device)))
                n_done += emit(batch, score_of(out), [w.capture.last for w in writers])
        elif not multi:
            # one image at a time, at max(crop, image size): the net reshaped from the IR
            ds, base = pipe.dataset, pipe.dataset.params
            nets = SizedNets(ir, net, data=spec.tops[0], device=device, prepare=prec.model)
            mats = [w.capture.layer for w in writers]
            try:
                for i, (h, w) in enumerate(sizes):
                    ds.params = replace(base, crop_height=max(base.crop_height, h), crop_width=max(base.crop_width, w))
                    item = ds[i]
                    if "error" in item:
                        raise item["error"]
                    batch = collate([item])
                    sized = nets.get(ds.params.crop_height, ds.params.crop_width)
                    caps = [install_capture(sized, lay) for lay in mats]
                    out = sized(*prec.inputs(pipe.feeds(batch, device)))
                    n_done += emit(batch, score_reader(sized, blob)[1](out).float(), [c.last for c in caps])
            finally:
                ds.params = base
        else:
            ds = pipe.dataset
            tp = spec.transform_params(False)
            mean = np.zeros(3) if not tp.mean else np.asarray(tp.mean if len(tp.mean) == 3 else tp.mean * 3)
            nets = SizedNets(ir, net, data=spec.tops[0], device=device, prepare=prec.model)

            def run(x: torch.Tensor) -> torch.Tensor:
                sized = nets.get(*x.shape[-2:])
                return score_reader(sized, blob)[1](sized(prec.input(x.to(device)))).float()

            for i in range(len(ds)):
                img, _, entry, orig = ds.read(i)
                x = torch.from_numpy(((img.astype(np.float64) - mean) * np.asarray(tp.scale, np.float64))
                                     .astype(np.float32)
                                     .transpose(2, 0, 1).copy())[None]
                probs = multi_scale_probs(run, x, scales, flip)
                if spec.resize_to_range:       # the averaged probabilities, back at the image's own size
                    probs = _interp(probs, orig)
                feats = torch.log(probs.clamp_min(1e-12))
                for w in writers[:1]:
                    name = _next_id(w, entry.id)
                    files.append(write_blob(feature_path(w.prefix, name, 0), feats.cpu().numpy()))
                if features_dir:
                    files.append(write_blob(feature_path(os.path.join(features_dir, ""), entry.id),
                                            feats.cpu().numpy()))
                if png_dir:
                    files.append(save_png(os.path.join(png_dir, entry.id + ".png"),
                                          probs[0].argmax(0).cpu().numpy()))
                n_done += 1
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return TestResult(images=n_done, files=files, blob=blob_name)


def _preprocess(overrides: dict, doc, ir, meta: dict, net_path: str, weights: str | None) -> None:
    """Make the data spec normalise as the net was trained: the options given win; else
    the weights file's record, else the netdef's ``preprocess:`` key, for a net without a
    data layer or with one that sets neither ``mean_value`` nor ``scale`` (a data layer
    that normalises otherwise than the record is an error)."""
    from .data.preprocess import from_value, of_layer, of_netdef, spec_overrides
    from .data.spec import find_data_layer
    from .inference import data_layer_params
    if any(k in overrides for k in ("preprocess", "mean_value", "scale")):
        return
    recorded = from_value(meta["preprocess"], f"{weights}: preprocess") if meta.get("preprocess") else None
    lay = find_data_layer(ir)
    raw = data_layer_params(doc) or {}
    if lay is not None and ("mean_value" in raw or "scale" in raw):
        if recorded is not None:
            own = of_layer(lay.params, lay.name)
            if not own.close_to(recorded):
                raise TestError(f"{net_path}: layer '{lay.name}' normalises as {own.describe()} but {weights} "
                                f"was trained with {recorded.describe()}",
                                hint="give the data layer the training mean_value and scale, or pass --preprocess")
        return
    pre = recorded or of_netdef(doc)
    if pre is not None:
        overrides.update(spec_overrides(pre))


def _sizes(ds) -> list[tuple[int, int]]:
    """Each list image's height and width as the data layer reads it (its header only);
    an unreadable one counts as fitting, and the data layer reports it."""
    from PIL import Image
    from .data.transforms import range_size
    s = ds.spec
    r = s.resize_to_range
    out = []
    for e in ds.entries:
        if s.new_height and s.new_width:
            out.append((s.new_height, s.new_width))
            continue
        try:
            with Image.open(e.image) as im:
                out.append(range_size(im.height, im.width, r["min"], r["max"], r["factor"]) if r
                           else (im.height, im.width))
        except (OSError, ValueError):
            out.append((0, 0))
    return out


def _interp(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear, corners aligned: the inverse of resize_to_range's mapping."""
    size = tuple(int(v) for v in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return torch.nn.functional.interpolate(x.float(), size=size, mode="bilinear", align_corners=True)


def _restore(x: torch.Tensor, batch, n: int, net_hw) -> torch.Tensor:
    """Scores of a resize_to_range image back at the image's own size: a blob at the net's
    input size is cropped to the resized image (the rest is padding) and resized bilinearly
    to the original height and width; a blob of another size is written as it is."""
    if tuple(x.shape[-2:]) != tuple(net_hw):
        if not _restore.noted:
            _restore.noted = True
            print(f"note: resize_to_range: a {x.shape[-2]}x{x.shape[-1]} blob is not at the input size "
                  f"{net_hw[0]}x{net_hw[1]} and is written at the resized image's scale, not the original's",
                  file=sys.stderr)
        return x
    h, w = (int(v) for v in batch["size"][n])
    return _interp(x[..., :h, :w], batch["orig_size"][n])


_restore.noted = False


def _consumes(ir, name: str) -> bool:
    bid = ir.input_ids.get(name)
    return any(bid in lay.bottom_ids for lay in ir.layers)


def _next_id(w: _Writer, fallback: str) -> str:
    if w.ids is None:
        return fallback
    if w.cursor >= len(w.ids):
        raise TestError(f"MatWrite source list has {len(w.ids)} ids but more images were tested",
                        hint="give MatWrite the same list as the data layer")
    name = w.ids[w.cursor]
    w.cursor += 1
    return name

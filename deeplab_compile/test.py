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

With ``scales`` other than ``[1]`` or ``flip``, each image is run whole (no crop) at
every scale (bilinear resize, OpenCV rules) and, with ``flip``, mirrored too; the scores
are resized to the image size (bilinear, corners aligned), turned into probabilities
and averaged, as TF DeepLab's ``eval_scales`` / ``add_flipped_images``.  The features
written are then ``log`` of the mean probability at the image size, so a softmax of
them (what the dense CRF does with scores) gives back the mean probability.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DeepLabError


class TestError(DeepLabError):
    """A test run that cannot go on: no score blob, weights that leave the net unset."""


class _Capture(nn.Module):
    """Stands in for a MatWrite module: keeps the bottoms of the last call."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.last: tuple = ()

    def forward(self, *xs):
        self.last = tuple(x.detach() for x in xs)
        return ()


@dataclass
class _Writer:
    prefix: str
    ids: list[str] | None
    period: int
    capture: _Capture
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
    from .train import pick_device
    return pick_device(gpu)


def run_test(net_path: str, weights: str | None, *, list_path: str | None = None, root: str | None = None,
             vars: dict | None = None, data: dict | None = None, gpu: Any = None, batch_size: int | None = None,
             scales: Sequence[float] = (1.0,), flip: bool = False, features_dir: str | None = None,
             blob: str | None = None, png_dir: str | None = None, num_workers: int | None = None,
             progress: bool = True, allow_missing: bool = False) -> TestResult:
    from .codegen import module_name
    from .compiler import build_net, compile_net
    from .data import pipeline_for
    from .data.listfile import read_ids
    from .data.spec import CAFFE_MEAN_BGR, find_data_layer, resolve_spec
    from .weights import load_weights
    from .io.features import feature_path, write_blob

    device = _device(gpu)
    ir = build_net(net_path, phase="test", vars=vars)
    overrides: dict[str, Any] = dict(data or {})
    if list_path:
        overrides["source"] = list_path
    if root is not None:
        overrides["root_folder"] = root
    has_layer = find_data_layer(ir) is not None
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
    net = compile_net(net_path, phase="test", vars=vars, inputs=inputs)
    if weights:
        load_weights(net, weights, allow_missing=allow_missing)
    net.to(device).eval()

    writers: list[_Writer] = []
    for lay in net.net.layers:
        if lay.type == "MatWrite":
            cap = _Capture(lay)
            setattr(net, module_name(lay.name), cap)
            p = lay.params
            ids = read_ids(p["source"], p["strip"]) if p["source"] else None
            writers.append(_Writer(prefix=p["prefix"], ids=ids, period=p["period"], capture=cap))
    outputs = list(net.output_names)
    if blob is None:
        if writers:
            score_of = lambda out: writers[0].capture.last[0]          # noqa: E731
            blob_name = net.net.layer(writers[0].capture.layer.name).bottoms[0]
        elif outputs:
            blob_name = outputs[0]
            score_of = lambda out: out[blob_name]                      # noqa: E731
        else:
            raise TestError("the net has no output to predict from", hint="name one with --blob")
    else:
        if blob not in outputs:
            raise TestError(f"--blob '{blob}' is not an output of the net in the test phase",
                            hint="outputs: " + (", ".join(outputs) or "none") + "; list it under 'outputs:'")
        blob_name = blob
        score_of = lambda out: out[blob]                               # noqa: E731

    pipe = pipeline_for(net, "test", spec, num_workers=0 if (len(scales) > 1 or flip or scales[0] != 1) else
                        num_workers)
    files: list[str] = []
    multi = len(scales) > 1 or flip or float(scales[0]) != 1.0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(pipe.dataset), desc="test", unit="img", file=sys.stderr, dynamic_ncols=True)
    n_done = 0
    with torch.no_grad():
        if not multi:
            for batch in pipe:
                out = net(*pipe.feeds(batch, device))
                scores = score_of(out)
                ids = batch["id"]
                for w in writers:
                    w.calls += 1
                    if (w.calls - 1) % w.period:
                        continue
                    for n in range(len(ids)):
                        name = _next_id(w, ids[n])
                        for i, x in enumerate(w.capture.last):
                            files.append(write_blob(feature_path(w.prefix, name, i), x[n:n + 1].cpu().numpy()))
                for n, image_id in enumerate(ids):
                    if features_dir:
                        files.append(write_blob(feature_path(os.path.join(features_dir, ""), image_id),
                                                scores[n:n + 1].cpu().numpy()))
                    if png_dir:
                        h, w_ = (int(v) for v in batch["size"][n])
                        lab = scores[n, :, :h, :w_].argmax(0).cpu().numpy()
                        files.append(save_png(os.path.join(png_dir, image_id + ".png"), lab))
                n_done += len(ids)
                if bar is not None:
                    bar.update(len(ids))
        else:
            ds = pipe.dataset
            tp = spec.transform_params(False)
            mean = np.zeros(3) if not tp.mean else np.asarray(tp.mean if len(tp.mean) == 3 else tp.mean * 3)
            for i in range(len(ds)):
                img, _, entry = ds.load(i)
                probs = _multi_scale(net, img, scales, flip, mean, tp.scale, score_of, device)
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


def _multi_scale(net, img: np.ndarray, scales, flip: bool, mean: np.ndarray, scale: float, score_of,
                 device) -> torch.Tensor:
    from .data.transforms import resize_linear
    h, w = img.shape[:2]
    total = None
    count = 0
    for s in scales:
        im = img if float(s) == 1.0 else resize_linear(img, float(s))
        x = torch.from_numpy(((im.astype(np.float64) - mean) * scale).astype(np.float32).transpose(2, 0, 1))[None]
        for mirrored in ((False, True) if flip else (False,)):
            xi = torch.flip(x, dims=[3]) if mirrored else x
            logits = score_of(net(xi.to(device)))
            if mirrored:
                logits = torch.flip(logits, dims=[3])
            logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=True)
            p = torch.softmax(logits, dim=1)
            total = p if total is None else total + p
            count += 1
    return total / count

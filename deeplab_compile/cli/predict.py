"""``deeplab-predict``: segment images with a compiled zoo net.

    deeplab-predict --netdef netdef/deeplab_v3_resnet101.yaml --weights model.pt img.jpg DIR -o out/
        [--scales 0.5,0.75,1] [--flip] [--crf deeplab_largefov] [--palette voc|cityscapes|ade20k]
        [--probs] [--preprocess caffe|imagenet|tf] [--resize-to-range MIN[,MAX[,FACTOR]]] [-D NAME=VALUE]
        [--precision fp32|bf16|fp16] [--channels-last]

For each image it writes ``out/<stem>.png`` (the labels as a palette PNG), ``out/<stem>_overlay.png``
(the colours over the image) and with ``--probs`` ``out/<stem>_probs.npy`` (C x H x W float16).
Scores from every scale (and the mirrored image with ``--flip``) are resized to the image, turned
into probabilities and averaged by :mod:`deeplab_compile.inference`, as in ``deeplab-test``;
``--crf PRESET`` then runs the dense CRF on them.  The netdef is compiled once; each new
image size is a reshape of that IR.
Input normalisation is the net's own (:func:`deeplab_compile.inference.net_preprocess`):
what the weights file records (``deeplab-train`` writes the training data's), else the
netdef's ``preprocess:`` key, else its ImageSegData layer's ``mean_value``/``scale``.
``--preprocess caffe|imagenet|tf`` overrides it: ``caffe`` (BGR minus DeepLab's mean,
0..255), ``imagenet`` (RGB, torchvision's mean/std), ``tf`` (RGB, x / 127.5 - 1).
``--resize-to-range MIN[,MAX[,FACTOR]]`` resizes each image first as the data layer's
``resize_to_range`` does (TF DeepLab's min/max_resize_value and resize_factor, bilinear with
corners aligned) and the probabilities back to the image's own size; without the flag, the
range the weights file's solver ``data:`` section records applies, else the netdef's
ImageSegData layer's, else none.
``--precision bf16|fp16`` runs the net under CPU autocast and ``--channels-last`` in that
memory layout; the probabilities are averaged, and the labels taken, in float32.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from ..errors import DeepLabError
from .common import (Parser, Where, add_param_limit, add_precision_flags, atomic_path, entry_point,
                     parse_resize_to_range, parse_scales)
from .compile import parse_defines

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="deeplab-predict", description="Segment images with a zoo net.")
    p.add_argument("images", nargs="+", help="image files or directories")
    p.add_argument("--netdef", required=True)
    p.add_argument("--weights", help="checkpoint (.pt from deeplab-convert / deeplab-train) or a state dict")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--scales", default="1", help="comma-separated input scales, e.g. 0.5,0.75,1")
    p.add_argument("--flip", action="store_true", help="also average the left-right mirrored image")
    p.add_argument("--crf", metavar="PRESET", help="refine with the dense CRF (deeplab_compile.crf presets)")
    p.add_argument("--palette", default=None, help="voc, cityscapes or ade20k (default voc)")
    p.add_argument("--probs", action="store_true", help="also write C x H x W probabilities (.npy)")
    p.add_argument("--preprocess", choices=("caffe", "imagenet", "tf"), help="input normalisation")
    p.add_argument("--resize-to-range", metavar="MIN[,MAX[,FACTOR]]",
                   help="resize each image as TF DeepLab's min/max_resize_value and resize_factor, e.g. 513,513,16 "
                        "(default: the weights file's solver data section, else the netdef's data layer); the "
                        "outputs are at the image's own size")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
    add_precision_flags(p)
    add_param_limit(p)
    return p


def list_images(items: list[str]) -> list[str]:
    out = []
    for it in items:
        if os.path.isdir(it):
            out += sorted(os.path.join(it, f) for f in os.listdir(it) if f.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(it):
            out.append(it)
        else:
            raise DeepLabError(f"{it}: no such file or directory")
    if not out:
        raise DeepLabError("no images found", hint="give image files or a directory with " + ", ".join(IMAGE_SUFFIXES))
    return out


def normalise(rgb: np.ndarray, how) -> torch.Tensor:
    """The ``1 x 3 x H x W`` net input of an RGB image; ``how`` is a preset name or a
    :class:`~deeplab_compile.data.preprocess.Preprocess`."""
    from ..data.preprocess import from_value
    return from_value(how).apply(rgb)


class Predictor:
    """Reads and compiles the netdef once; each new input size is a reshape of that IR
    (:class:`deeplab_compile.inference.SizedNets`), and the scales and flips are averaged
    by :func:`deeplab_compile.inference.multi_scale_probs`."""

    def __init__(self, netdef: str, state_dict: dict | None, vars: dict, preprocess=None,
                 weights_path: str = "the weights", meta: dict | None = None, text=None, precision=None,
                 resize_to_range: dict | None = None):
        from ..caffe.caffemodel import check_state_dict
        from ..compiler import load_netdef, net_from_doc
        from ..inference import SizedNets, compile_at, net_preprocess
        from ..training.precision import Precision
        self.precision = precision or Precision()
        self.precision.check("cpu")
        doc = load_netdef(text if text is not None else netdef, vars)   # text: the file as parsed
        self.netdef = netdef
        self.preprocess, self.preprocess_from = net_preprocess(doc, meta, preprocess)
        self.resize, self.resize_from = _resize_rule(doc, meta, resize_to_range)
        ir = net_from_doc(doc, phase="test", source=netdef)
        first = compile_at(ir)
        if state_dict is not None:
            with torch.no_grad():
                first.load_state_dict(check_state_dict(first, state_dict, weights_path))
        self.precision.model(first)
        self.nets = SizedNets(ir, first, prepare=self.precision.model)

    def net(self, h: int, w: int):
        return self.nets.get(h, w)

    @torch.no_grad()
    def probs(self, rgb: np.ndarray, scales: list[float], flip: bool) -> torch.Tensor:
        from ..inference import multi_scale_probs, score_reader

        def run(x: torch.Tensor) -> torch.Tensor:
            net = self.net(*x.shape[-2:])
            with self.precision.autocast("cpu"):
                return score_reader(net)[1](net(self.precision.input(x))).float()

        r, (h0, w0) = self.resize, rgb.shape[:2]
        if r:
            from ..data.transforms import range_size, resize_aligned
            rgb = resize_aligned(rgb, *range_size(h0, w0, r["min"], r["max"], r["factor"]), nearest=False)
        probs = multi_scale_probs(run, normalise(rgb, self.preprocess), scales, flip)
        if tuple(probs.shape[-2:]) != (h0, w0):      # back at the image's own size, corners aligned
            probs = torch.nn.functional.interpolate(probs, size=(h0, w0), mode="bilinear", align_corners=True)
        return probs[0]


def _resize_rule(doc, meta: dict | None, flag: dict | None) -> tuple[dict, str]:
    """``(resize_to_range, where it came from)``: the flag, else the weights file's solver
    ``data:`` section, else the netdef's ImageSegData layer, else none (``{}``)."""
    from ..inference import data_layer_params
    from ..layers.data import resize_range

    if flag:
        return flag, "--resize-to-range"
    solver = (meta or {}).get("solver") or {}
    data = solver.get("data") if isinstance(solver, dict) else None
    if isinstance(data, dict) and data.get("resize_to_range"):
        where = "the weights file's solver data section"
        return resize_range(data["resize_to_range"], Where(where)), where
    lay = data_layer_params(doc)
    if lay is not None and lay.get("resize_to_range"):
        where = f"layer '{lay.get('name')}'"
        return resize_range(lay["resize_to_range"], Where(where)), where
    return {}, "none"


def _load_weights(path: str | None) -> tuple[dict | None, dict]:
    if path is None:
        return None, {}
    from ..weights import read_state_dict
    return read_state_dict(path)


def _declared(doc, values: dict) -> dict:
    """The recorded values the netdef (``doc``, as parsed) declares as variables: a
    snapshot records its solver's (``MAX_ITER``, ``MODEL_DIR``, ...) beside its net's."""
    names = set((doc.get("vars") or {}) if isinstance(doc, dict) else ())
    return {k: v for k, v in values.items() if k in names or getattr(doc, "sed_vars", False)}


@entry_point
def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from ..io.palette import colorize, get_palette, write_label_png

    args = build_parser().parse_args(argv)
    scales = parse_scales(args.scales)
    palette = args.palette or "voc"
    get_palette(palette)
    from ..netdef.search import find_netdef, missing_netdef_hint
    args.netdef = find_netdef(args.netdef)          # a path, or a zoo name
    if not os.path.isfile(args.netdef):
        raise DeepLabError(f"{args.netdef}: no such netdef", hint=missing_netdef_hint(args.netdef))
    state, meta = _load_weights(args.weights)
    from ..compiler import load
    text = load(args.netdef)                  # parsed once; the Predictor expands it
    vars = {**_declared(text, meta.get("vars") or {}), **parse_defines(args.defines)}
    crf_params = None
    if args.crf:
        from ..crf import presets
        crf_params = presets.get_preset(args.crf)
    images = list_images(args.images)
    from ..training.precision import Precision
    resize = parse_resize_to_range(args.resize_to_range) if args.resize_to_range is not None else None
    pred = Predictor(args.netdef, state, vars, args.preprocess, args.weights or "the weights", meta, text,
                     Precision(args.precision, args.channels_last), resize)
    rng = (f"; resize_to_range {pred.resize['min']},{pred.resize['max']},{pred.resize['factor']} from "
           f"{pred.resize_from}" if pred.resize else "")
    print(f"input normalisation: {pred.preprocess.describe()}, from {pred.preprocess_from}; "
          f"precision {pred.precision.describe()}{rng}", file=sys.stderr)
    os.makedirs(args.output, exist_ok=True)
    for path in images:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        probs = pred.probs(rgb, scales, args.flip)
        if crf_params is not None:
            from ..crf import dense_crf
            probs = torch.as_tensor(dense_crf(np.ascontiguousarray(rgb), probs.numpy(), crf_params, kind="probs"))
        labels = probs.argmax(0).numpy().astype(np.uint8)
        stem = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        write_label_png(stem + ".png", labels, palette)
        over = (rgb * (1 - args.alpha) + colorize(labels, palette) * args.alpha).astype(np.uint8)
        with atomic_path(stem + "_overlay.png") as tmp:
            Image.fromarray(over).save(tmp, format="PNG")
        if args.probs:
            with atomic_path(stem + "_probs.npy") as tmp:
                np.save(tmp, probs.numpy().astype(np.float16))
        print(f"{path} -> {stem}.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``deeplab-predict``: segment images with a compiled zoo net.

    deeplab-predict --netdef netdef/deeplab_v3_resnet101.yaml --weights model.pt img.jpg DIR -o out/
        [--scales 0.5,0.75,1] [--flip] [--crf deeplab_largefov] [--palette voc|cityscapes|ade20k]
        [--probs] [--preprocess caffe|imagenet|tf] [-D NAME=VALUE]

For each image it writes ``out/<stem>.png`` (the labels as a palette PNG), ``out/<stem>_overlay.png``
(the colours over the image) and with ``--probs`` ``out/<stem>_probs.npy`` (C x H x W float16).
Scores from every scale (and the mirrored image with ``--flip``) are resized to the image, turned
into probabilities and averaged by :mod:`deeplab_compile.inference`, as in ``deeplab-test``;
``--crf PRESET`` then runs the dense CRF on them.  The netdef is compiled once; each new
image size is a reshape of that IR.
Input normalisation: ``caffe`` (BGR minus DeepLab's mean, 0..255; the default for v1/v2
nets), ``imagenet`` (RGB, torchvision's mean/std; the default otherwise), ``tf`` (x / 127.5 - 1).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from ..errors import DeepLabError
from .common import add_param_limit, atomic_path, entry_point, parse_scales
from .compile import parse_defines

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
from ..data.spec import CAFFE_MEAN_BGR  # noqa: E402  (DeepLab's prototxts; defined once, in data/spec.py)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deeplab-predict", description="Segment images with a zoo net.")
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
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
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


def normalise(rgb: np.ndarray, how: str) -> torch.Tensor:
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)
    if how == "caffe":
        x = x.flip(0) - torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)
    elif how == "imagenet":
        x = (x / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    else:
        x = x / 127.5 - 1
    return x[None]


class Predictor:
    """Reads and compiles the netdef once; each new input size is a reshape of that IR
    (:class:`deeplab_compile.inference.SizedNets`), and the scales and flips are averaged
    by :func:`deeplab_compile.inference.multi_scale_probs`."""

    def __init__(self, netdef: str, state_dict: dict | None, vars: dict, preprocess: str,
                 weights_path: str = "the weights"):
        from ..caffe.caffemodel import check_state_dict
        from ..compiler import load_netdef, net_from_doc
        from ..inference import SizedNets, compile_at
        self.netdef, self.preprocess = netdef, preprocess
        ir = net_from_doc(load_netdef(netdef, vars), phase="test", source=netdef)
        first = compile_at(ir)
        if state_dict is not None:
            with torch.no_grad():
                first.load_state_dict(check_state_dict(first, state_dict, weights_path))
        self.nets = SizedNets(ir, first)

    def net(self, h: int, w: int):
        return self.nets.get(h, w)

    @torch.no_grad()
    def probs(self, rgb: np.ndarray, scales: list[float], flip: bool) -> torch.Tensor:
        from ..inference import multi_scale_probs, score_reader

        def run(x: torch.Tensor) -> torch.Tensor:
            net = self.net(*x.shape[-2:])
            return score_reader(net)[1](net(x))

        return multi_scale_probs(run, normalise(rgb, self.preprocess), scales, flip)[0]


def _load_weights(path: str | None) -> tuple[dict | None, dict]:
    if path is None:
        return None, {}
    from ..weights import read_state_dict
    return read_state_dict(path)


@entry_point
def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from ..io.palette import colorize, get_palette, write_label_png

    args = build_parser().parse_args(argv)
    scales = parse_scales(args.scales)
    palette = args.palette or "voc"
    get_palette(palette)
    if not os.path.isfile(args.netdef):
        raise DeepLabError(f"{args.netdef}: no such netdef")
    state, meta = _load_weights(args.weights)
    vars = {**meta.get("vars", {}), **parse_defines(args.defines)}
    name = os.path.basename(args.netdef)
    pre = args.preprocess or ("caffe" if name.startswith(("deeplab_largefov", "deeplab_v2", "deeplab_v1")) else "imagenet")
    crf_params = None
    if args.crf:
        from ..crf import presets
        crf_params = presets.get_preset(args.crf)
    images = list_images(args.images)
    pred = Predictor(args.netdef, state, vars, pre, args.weights or "the weights")
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

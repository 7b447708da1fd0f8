"""Compile time of the zoo netdefs, and the compiled LargeFOV against a hand-written model.

    python benchmarks/compile.py [--repeat 20] [--threads 2] [--size 321] [--write]

Prints two tables.  The first: parse -> expand -> IR -> shapes (``build_net``), and the
whole ``compile`` (codegen and filler initialisation included), per netdef.  The second:
the forward pass of the compiled DeepLab-LargeFOV against an ``nn.Sequential`` written by
hand with the same weights, measured in the same run; the ratio is compiled / hand-written.
``--write`` appends the figures to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

from timing import ROOT, append_results, device_line, interleaved, min_median, timeit

import deeplab_compile  # noqa: E402
from deeplab_compile.compiler import build_net  # noqa: E402

NETS = ["deeplab_largefov", "deeplab_v2_vgg16_aspp_l"]


class Upsample(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x):
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=True)


def hand_written_largefov(num_classes: int, size: int) -> nn.Sequential:
    """DeepLab-LargeFOV written directly in PyTorch (the baseline)."""
    layers: list[nn.Module] = []
    cin = 3
    for stage, (n, cout) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        d = 2 if stage == 5 else 1
        for _ in range(n):
            layers += [nn.Conv2d(cin, cout, 3, padding=d, dilation=d), nn.ReLU()]
            cin = cout
        stride = 2 if stage <= 3 else 1
        layers.append(nn.MaxPool2d(3, stride, 1, ceil_mode=True))
    layers.append(nn.AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=True))
    layers += [nn.Conv2d(512, 1024, 3, padding=12, dilation=12), nn.ReLU(), nn.Dropout(0.5),
               nn.Conv2d(1024, 1024, 1), nn.ReLU(), nn.Dropout(0.5),
               nn.Conv2d(1024, num_classes, 1), Upsample(size)]
    return nn.Sequential(*layers)


def copy_weights(src: nn.Module, dst: nn.Sequential) -> None:
    convs_src = [m for m in src.modules() if isinstance(m, nn.Conv2d)]
    convs_dst = [m for m in dst if isinstance(m, nn.Conv2d)]
    assert len(convs_src) == len(convs_dst)
    with torch.no_grad():
        for a, b in zip(convs_src, convs_dst):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=321)
    ap.add_argument("--write", action="store_true", help="append the results to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = device_line("cpu", args.threads)
    out = []

    out.append(f"### Compile time ({datetime.date.today()}, {device})\n")
    out.append("| netdef | build_net (parse..shapes) | compile (incl. codegen + fillers) | layers |")
    out.append("|---|---:|---:|---:|")
    for name in NETS:
        path = os.path.join(ROOT, "netdef", name + ".yaml")
        t_build = timeit(lambda: build_net(path, phase="test"), args.repeat)
        t_comp = timeit(lambda: deeplab_compile.compile(path, phase="test"), max(3, args.repeat // 3))
        n = len(build_net(path).layers)
        out.append(f"| {name} | {t_build * 1e3:.1f} ms | {t_comp * 1e3:.1f} ms | {n} |")

    s = args.size
    path = os.path.join(ROOT, "netdef", "deeplab_largefov.yaml")
    gm = deeplab_compile.compile(path, phase="test", vars={"crop": s}).eval()
    ref = hand_written_largefov(21, (s, s)).eval()
    copy_weights(gm, ref)
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        torch.testing.assert_close(gm(x)["fc8_interp"], ref(x), rtol=1e-4, atol=1e-4)
        # interleave the two so drift in machine load hits both equally
        t = interleaved({"compiled": lambda: gm(x), "hand": lambda: ref(x)}, args.repeat, warmup=2)
    (cm, c), (hm, h) = min_median(t["compiled"]), min_median(t["hand"])
    out.append("")
    out.append(f"### LargeFOV forward, 1x3x{s}x{s}, eval, {args.repeat} interleaved runs "
               f"({datetime.date.today()}, {device})\n")
    out.append("| model | median | min | ratio (median) | ratio (min) |")
    out.append("|---|---:|---:|---:|---:|")
    out.append(f"| hand-written nn.Sequential | {h * 1e3:.1f} ms | {hm * 1e3:.1f} ms | 1.00 | 1.00 |")
    out.append(f"| deeplab-compile GraphModule | {c * 1e3:.1f} ms | {cm * 1e3:.1f} ms | {c / h:.3f} | {cm / hm:.3f} |")
    text = "\n".join(out) + "\n"
    print(text)
    if args.write:
        append_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

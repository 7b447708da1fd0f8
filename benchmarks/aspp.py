"""ASPP kernels against the library path, in one run.

    python benchmarks/aspp.py [--threads 2] [--repeats 5] [--quick] [--write]

v2 ASPP at DeepLab v2 ResNet-101 shapes (2048 -> 21, rates 6/12/18/24; 41x41 and 65x65,
batch 1 and 10; forward, and forward+backward):
    unfused   four F.conv2d (the library convolution, oneDNN on CPU) and the sum
    fused     deeplab::aspp_sum (on CPU in float32: the direct kernel where the CPU has
              AVX-512, see --info; its backward is the banded GEMMs)
    gemm      deeplab::aspp_sum with DEEPLAB_ASPP_CPU_KERNEL=gemm (CPU only): the banded
              tap GEMMs, the forward used before the direct kernel and on other CPUs
    auto      what the fused layer runs: the dispatcher's pick of unfused and fused
              (measured once)
v3 ASPP head (2048 -> 5 x 256 -> 256; 33x33 and 65x65, batch 1, inference):
    unfused   the eager graph: conv/BN/ReLU branches, image pooling, upsampling, concat,
              1x1 projection/BN/ReLU (nn modules in eval mode)
    folded    the same with BatchNorm folded (the library path of the fused op)
    fused     deeplab::aspp_v3_head, every branch through the library convolution
    fused+taps  deeplab::aspp_v3_head with the 3x3 branches that measured faster through
              aspp_sum (what aspp_v3_head_auto runs; the row names them)
Atrous 3x3 (one convolution): library F.conv2d against aspp_sum with one rate, at the
shapes where DeepLab has one: LargeFOV's fc6, v3 head branches, a ResNet-101 block.

Candidates run interleaved (one call of each in turn) so machine load hits all of them;
each reports its minimum and median.  Ratios are baseline time / candidate time from the
minimums (> 1: the candidate is faster).  ``--write`` appends the tables to
benchmarks/RESULTS.md with the date and device.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

from timing import append_results, device_line, interleaved, load_average, min_median

from deeplab_compile.ops import _ext, dispatch  # noqa: E402
from deeplab_compile.ops.aspp_sum import aspp_sum_auto, aspp_sum_reference  # noqa: E402
from deeplab_compile.ops.aspp_v3_head import aspp_v3_head_reference, pick_tap_branches  # noqa: E402


@contextlib.contextmanager
def cpu_kernel(name):
    """DEEPLAB_ASPP_CPU_KERNEL=name for the duration (the kernel reads it on every call)."""
    old = os.environ.get("DEEPLAB_ASPP_CPU_KERNEL")
    os.environ["DEEPLAB_ASPP_CPU_KERNEL"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["DEEPLAB_ASPP_CPU_KERNEL"]
        else:
            os.environ["DEEPLAB_ASPP_CPU_KERNEL"] = old


def bench(cands: dict, repeats: int, sync) -> dict:
    return {k: min_median(v) for k, v in interleaved(cands, repeats, sync=sync).items()}


def fmt(t):
    return f"{t[0] * 1e3:.0f} / {t[1] * 1e3:.0f}"


def v2_rows(dev, dtype, repeats, quick, sync):
    rows = []
    rates = [6, 12, 18, 24]
    configs = [(1, 41), (1, 65), (10, 41), (10, 65)]
    if quick:
        configs = configs[:2]
    for n, s in configs:
        for mode in ("fwd", "fwd+bwd"):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(n, 2048, s, s, generator=g).to(dev, dtype)
            ws = [(torch.randn(21, 2048, 3, 3, generator=g) * 0.01).to(dev, dtype) for _ in rates]
            bs = [torch.randn(21, generator=g).to(dev, dtype) for _ in rates]
            train = mode != "fwd"
            for t in [x, *ws, *bs]:
                t.requires_grad_(train)

            def run(fn):
                def f():
                    with torch.set_grad_enabled(train):
                        y = fn(x, ws, bs, rates)
                        if train:
                            y.sum().backward()
                return f
            def gemm(*a):
                with cpu_kernel("gemm"):
                    return torch.ops.deeplab.aspp_sum(*a)
            cands = {"unfused": run(aspp_sum_reference),
                     "fused": run(lambda *a: torch.ops.deeplab.aspp_sum(*a)),
                     "auto": run(aspp_sum_auto)}
            if dev.type == "cpu":
                cands["gemm"] = run(gemm)
            r = bench(cands, repeats, sync)
            rows.append((f"v2 {n}x2048x{s}x{s} {mode}", r,
                         [r["unfused"][0] / r[k][0] for k in ("fused", "gemm", "auto") if k in r]))
            del x, ws, bs
    return rows


class V3Eager(nn.Module):
    def __init__(self, rates, c=2048, cb=256):
        super().__init__()
        cbr = lambda cin, k, r: nn.Sequential(nn.Conv2d(cin, cb, k, padding=r * (k - 1) // 2, dilation=r, bias=False),
                                              nn.BatchNorm2d(cb), nn.ReLU())
        self.branches = nn.ModuleList([cbr(c, 1, 1)] + [cbr(c, 3, r) for r in rates])
        self.pool = cbr(c, 1, 1)
        self.proj = cbr(5 * cb, 1, 1)
        self.rates = rates
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
                m.weight.data.normal_(1, 0.1), m.bias.data.normal_(0, 0.1)

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        p = self.pool(F.adaptive_avg_pool2d(x, 1))
        outs.append(F.interpolate(p, size=x.shape[2:], mode="bilinear", align_corners=True))
        return self.proj(torch.cat(outs, 1))

    def folded_args(self):
        def fold(seq):
            conv, bn = seq[0], seq[1]
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            return conv.weight * s.view(-1, 1, 1, 1), bn.bias - bn.running_mean * s
        wb = [fold(b) for b in self.branches]
        pw, pb = fold(self.pool)
        jw, jb = fold(self.proj)
        jw = jw.flatten(1)
        projs = list(torch.split(jw, 256, 1))
        return ([w for w, _ in wb], [b for _, b in wb], [1] + list(self.rates), projs[:4], pw.flatten(1), pb,
                projs[4], jb, True)


def v3_rows(dev, dtype, repeats, quick, sync):
    rows = []
    for s, rates in [(33, (6, 12, 18)), (65, (12, 24, 36))][: 1 if quick else 2]:
        torch.manual_seed(0)
        m = V3Eager(rates).to(dev, dtype).eval()
        x = torch.randn(1, 2048, s, s, device=dev, dtype=dtype)
        with torch.no_grad():
            args = m.folded_args()
            taps = pick_tap_branches(x, args[0], args[1], args[2])
            cands = {"unfused": lambda: m(x), "folded": lambda: aspp_v3_head_reference(x, *args),
                     "fused": lambda: torch.ops.deeplab.aspp_v3_head(x, *args),
                     "fused+taps": lambda: torch.ops.deeplab.aspp_v3_head(x, *args, tap_branches=taps)}
            ref = m(x)
            err = max((f() - ref).abs().max().item() / ref.abs().max().item()
                      for f in (cands["fused"], cands["fused+taps"]))
            r = bench(cands, repeats, sync)
        tap_rates = "/".join(str(args[2][i]) for i in taps) or "none"
        rows.append((f"v3 1x2048x{s}x{s} rates {'/'.join(map(str, rates))}, taps at {tap_rates} "
                     f"(rel. err {err:.1e})", r,
                     [r["unfused"][0] / r["fused+taps"][0], r["folded"][0] / r["fused"][0],
                      r["folded"][0] / r["fused+taps"][0], r["fused"][0] / r["fused+taps"][0]]))
    return rows


def atrous_rows(dev, dtype, repeats, quick, sync):
    rows = []
    configs = [(512, 1024, 41, 12), (2048, 256, 33, 18), (512, 1024, 65, 12), (2048, 256, 33, 6),
               (2048, 256, 65, 12), (2048, 256, 65, 36), (2048, 21, 41, 24), (512, 512, 65, 2)]
    for cin, co, s, r in configs[:2] if quick else configs:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, cin, s, s, generator=g).to(dev, dtype)
        w = (torch.randn(co, cin, 3, 3, generator=g) * 0.01).to(dev, dtype)
        b = torch.zeros(co).to(dev, dtype)
        with torch.no_grad():
            cands = {"library": lambda: F.conv2d(x, w, b, padding=r, dilation=r),
                     "ours": lambda: torch.ops.deeplab.aspp_sum(x, [w], [b], [r])}
            res = bench(cands, repeats, sync)
        rows.append((f"atrous {cin}->{co} {s}x{s} rate {r}", res, [res["library"][0] / res["ours"][0]]))
    return rows


def table(title, rows, cols, ratio_names):
    out = [f"**{title}** (ms, min / median)", "",
           "| shape | " + " | ".join(cols) + " | " + " | ".join(ratio_names) + " |",
           "|---" * (1 + len(cols) + len(ratio_names)) + "|"]
    for name, r, ratios in rows:
        out.append(f"| {name} | " + " | ".join(fmt(r[c]) if c in r else "-" for c in cols) + " | "
                   + " | ".join(f"{v:.2f}x" for v in ratios) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--quick", action="store_true", help="batch 1 and the smaller shapes only")
    ap.add_argument("--write", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    if not (_ext.has_kernel("aspp_sum", "CPU") or _ext.has_kernel("aspp_sum", "CUDA")):
        print("deeplab_compile._C has no ASPP kernels; build it first (pip install -e . --no-build-isolation)")
        return 1
    torch.set_num_threads(a.threads)
    dev, dtype = torch.device(a.device), getattr(torch, a.dtype)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    head = (f"{datetime.date.today()}, {device_line(dev.type, a.threads)}, {a.dtype}, "
            f"CPU aspp_sum forward {_ext.aspp_cpu_kernel()}, "
            f"repeats {a.repeats}, load average at start {load_average():.1f}")
    print(head, flush=True)
    parts = []
    rows = v2_rows(dev, dtype, a.repeats, a.quick, sync)
    cols, ratios = ["unfused", "fused", "gemm", "auto"], ["unfused/fused", "unfused/gemm", "unfused/auto"]
    if dev.type != "cpu":
        cols, ratios = ["unfused", "fused", "auto"], ["unfused/fused", "unfused/auto"]
    parts.append(table("v2 ASPP", rows, cols, ratios))
    print(parts[-1], "\n", flush=True)
    rows = v3_rows(dev, dtype, a.repeats, a.quick, sync)
    parts.append(table("v3 ASPP head, inference", rows, ["unfused", "folded", "fused", "fused+taps"],
                       ["unfused/fused+taps", "folded/fused", "folded/fused+taps", "fused/fused+taps"]))
    print(parts[-1], "\n", flush=True)
    rows = atrous_rows(dev, dtype, a.repeats, a.quick, sync)
    parts.append(table("atrous 3x3, forward", rows, ["library", "ours"], ["library/ours"]))
    print(parts[-1], "\n", flush=True)
    picks = [f"{d['key'][0]} {d['key'][3]} rates {'/'.join(map(str, d['key'][6]))} grad={d['grad']}: {d['choice']}"
             if d["key"][0] == "aspp_sum" else f"{d['key'][0]} {d['key'][3]}: {d['choice']}"
             for d in dispatch.decisions()]
    parts.append("dispatcher picks (v2 layers, and the v3 head's one-rate branches): " + "; ".join(picks))
    print(parts[-1])
    if a.write:
        path = append_results("## benchmarks/aspp.py\n\n" + head + "\n\n" + "\n\n".join(parts) + "\n")
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

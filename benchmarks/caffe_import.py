"""Caffemodel import speed and memory on a synthetic model of ResNet-101 size.

Writes a DeepLab-v2-style ResNet-101 prototxt and a caffemodel of random weights
(about 170 MB) to a temporary folder, then converts it to a state_dict in a fresh child
process and reports the time, the throughput, and the child's peak memory above its
baseline (resident set, which counts the memory-mapped file, and the largest Python
allocation peak under tracemalloc).  The file is mapped, not read, so the peak should be
about one copy of the weights (the tensors) plus the mapped pages: at most two copies.

    python benchmarks/caffe_import.py            # print the table
    python benchmarks/caffe_import.py --write    # and append it to benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from timing import append_results, device_line


def resnet101_prototxt() -> str:
    out = ['name: "resnet101_synthetic"', 'input: "data"',
           'input_shape { dim: 1 dim: 3 dim: 65 dim: 65 }']

    def conv(name, bottom, n, k, stride=1, pad=0, dil=1, bias=False):
        out.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                   f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {stride} pad: {pad} '
                   f'dilation: {dil} bias_term: {"true" if bias else "false"} }} }}')

    def bn(blob, suffix):
        out.append(f'layer {{ name: "bn{suffix}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" '
                   'batch_norm_param { use_global_stats: true } }')
        out.append(f'layer {{ name: "scale{suffix}" type: "Scale" bottom: "{blob}" top: "{blob}" '
                   'scale_param { bias_term: true } }')

    def relu(blob):
        out.append(f'layer {{ name: "{blob}_relu" type: "ReLU" bottom: "{blob}" top: "{blob}" }}')

    conv("conv1", "data", 64, 7, 2, 3)
    bn("conv1", "_conv1")
    relu("conv1")
    out.append('layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
               'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }')
    prev, cin = "pool1", 64
    for stage, (blocks, mid, cout, stride, dil) in enumerate(
            [(3, 64, 256, 1, 1), (4, 128, 512, 2, 1), (23, 256, 1024, 1, 2), (3, 512, 2048, 1, 4)], 2):
        for b in range(blocks):
            name = f"res{stage}{'a' if b == 0 else 'b' + str(b)}"
            s = stride if b == 0 else 1
            if b == 0:
                conv(f"{name}_branch1", prev, cout, 1, s)
                bn(f"{name}_branch1", f"{stage}{name[4:]}_branch1")
                short = f"{name}_branch1"
            else:
                short = prev
            conv(f"{name}_branch2a", prev, mid, 1, s)
            bn(f"{name}_branch2a", f"{name}_branch2a")
            relu(f"{name}_branch2a")
            conv(f"{name}_branch2b", f"{name}_branch2a", mid, 3, 1, dil, dil)
            bn(f"{name}_branch2b", f"{name}_branch2b")
            relu(f"{name}_branch2b")
            conv(f"{name}_branch2c", f"{name}_branch2b", cout, 1)
            bn(f"{name}_branch2c", f"{name}_branch2c")
            out.append(f'layer {{ name: "{name}" type: "Eltwise" bottom: "{short}" '
                       f'bottom: "{name}_branch2c" top: "{name}" }}')
            relu(name)
            prev, cin = name, cout
    conv("fc1", prev, 21, 3, 1, 6, 6, bias=True)
    return "\n".join(out) + "\n"


def child(model: str, net_path: str) -> None:
    import resource
    import tracemalloc

    import torch

    from deeplab_compile.caffe.caffemodel import caffe_state_dict
    from deeplab_compile.compiler import compile_net

    def rss_mib() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    with torch.device("meta"):
        net = compile_net(net_path, fuse=False)
    base = rss_mib()
    tracemalloc.start()
    t0 = time.perf_counter()
    state = caffe_state_dict(net, model)
    dt = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    print(json.dumps({"seconds": dt, "base_mib": base, "peak_mib": peak, "py_peak_mib": py_peak / 2 ** 20,
                      "tensor_mib": nbytes / 2 ** 20, "tensors": len(state)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    import torch

    from deeplab_compile.caffe.caffemodel import expected_layers, write_caffemodel
    from deeplab_compile.compiler import compile_net
    with tempfile.TemporaryDirectory() as d:
        net_path = os.path.join(d, "resnet101.prototxt")
        with open(net_path, "w") as f:
            f.write(resnet101_prototxt())
        with torch.device("meta"):
            net = compile_net(net_path, fuse=False)
        gen = torch.Generator().manual_seed(0)
        state = {}
        for e in expected_layers(net):
            for s in e.slots:
                state[s.key] = (torch.rand(s.shape, generator=gen) + 0.5 if s.key.endswith("running_weight")
                                else torch.randn(s.shape, generator=gen))
        model = os.path.join(d, "resnet101.caffemodel")
        with open(model, "wb") as f:
            write_caffemodel(net, state, f)
        del state
        size = os.path.getsize(model)
        runs = []
        for _ in range(3):
            res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", model, net_path],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    mib = size / 2 ** 20
    rows = [
        ("caffemodel size", f"{mib:.1f} MiB ({best['tensors']} tensors, {best['tensor_mib']:.1f} MiB)"),
        ("convert time (best of 3)", f"{best['seconds']:.2f} s"),
        ("throughput", f"{mib / best['seconds']:.0f} MiB/s"),
        ("peak RSS above baseline", f"{best['peak_mib'] - best['base_mib']:.0f} MiB "
                                    f"({(best['peak_mib'] - best['base_mib']) / mib:.2f} x the file)"),
        ("Python allocation peak (tracemalloc)", f"{best['py_peak_mib']:.1f} MiB"),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"| {a.ljust(width)} | {b} |" for a, b in rows)
    table = f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|\n" + table
    print(table)
    if args.write:
        stamp = datetime.date.today().isoformat()
        append_results(f"## benchmarks/caffe_import.py\n\n{stamp}, {device_line()}. "
                       "Synthetic DeepLab-v2 ResNet-101 caffemodel -> state_dict "
                       "(caffe_state_dict), in a fresh process.\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Zoo nets: compiled vs hand-written PyTorch, CPU fp32 (GPU when one is present).

    python benchmarks/models.py [--size 513] [--repeat 5] [--nets v3,v3plus_mnv2] [--write]

For each net: inference latency (min and median of interleaved runs, so both sides see
the same load on a shared machine) and peak memory of the compiled net, its
channels-last variant, and (for DeepLabv3 ResNet-101) the hand-written reference --
torchvision's deeplabv3_resnet101 where it imports, else the replica in
tests/data/zoo/replicas.py with the same weights.  fold_bn / fused ASPP passes are used
when deeplab_compile.passes provides them.  Then a few training steps of v3+ at the
given size.  --write appends the table to benchmarks/RESULTS.md with date and device.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch

from timing import ROOT, append_results, device_line, interleaved

sys.path.insert(0, os.path.join(ROOT, "tests", "data", "zoo"))

import deeplab_compile  # noqa: E402
from deeplab_compile.zoo.convert import convert_state_dict  # noqa: E402

NETS = {"v3": "deeplab_v3_resnet101", "v3plus_xception": "deeplab_v3plus_xception65",
        "v3plus_mnv2": "deeplab_v3plus_mobilenetv2", "v3_mnv2": "deeplab_v3_mobilenetv2"}
TV_VARS = {"output_stride": 8, "d4_first": 1, "d5_1": 2, "d5_2": 4, "d5_3": 4}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_mb(fn, dev) -> float:
    """Peak memory one call of ``fn`` adds: the CUDA allocator's peak on a GPU; on the CPU
    the resident set sampled every millisecond during the call, above its level just
    before (after handing freed heap back to the system, so earlier calls don't hide it)."""
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
        fn()
        return torch.cuda.max_memory_allocated() / 2**20
    import ctypes
    import gc
    import threading
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            done.wait(0.001)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    peak[0] = max(peak[0], _rss_bytes())
    return (peak[0] - base) / 2**20


def reference_v3(net_state, size):
    try:
        import torchvision
        ref = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                                  num_classes=21, aux_loss=False)
        name = "torchvision deeplabv3_resnet101"
        fwd = lambda x: ref(x)["out"]  # noqa: E731
    except ImportError:
        import replicas
        ref = replicas.DeepLabV3ResNet101()
        name = "hand-written replica (torchvision layout)"
        fwd = ref.logits
    return ref, fwd, name


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=513)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--nets", default="v3,v3plus_mnv2")
    p.add_argument("--train-steps", type=int, default=3, help="0 skips the training row")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    unknown = [k for k in args.nets.split(",") if k not in NETS]
    if unknown:
        p.error(f"--nets: unknown {', '.join(unknown)}; choose from {', '.join(NETS)}")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    s = args.size
    x = torch.randn(1, 3, s, s, device=dev)
    lines = [f"### Zoo nets, {datetime.date.today()}, {device_line(dev, torch.get_num_threads())}, fp32, 1x3x{s}x{s}, "
             f"{args.repeat} interleaved runs",
             "", "| net | variant | min ms | median ms | peak MB |", "|---|---|---:|---:|---:|"]
    for key in args.nets.split(","):
        name = NETS[key]
        path = os.path.join(ROOT, "netdef", name + ".yaml")
        vars_ = TV_VARS if key == "v3" else {}
        net = deeplab_compile.compile(path, vars=vars_, inputs={"data": f"1x3x{s}x{s}"}, fuse=False).to(dev).eval()
        fns = {"compiled": lambda: net(x)}
        if key == "v3":
            ref, fwd, ref_name = reference_v3(None, s)
            ref = ref.to(dev).eval()
            fns[ref_name] = lambda: fwd(x)
        net_cl = deeplab_compile.compile(path, vars=vars_, inputs={"data": f"1x3x{s}x{s}"}, fuse=False).to(dev).eval()
        net_cl = net_cl.to(memory_format=torch.channels_last)
        xcl = x.contiguous(memory_format=torch.channels_last)
        fns["compiled, channels-last"] = lambda: net_cl(xcl)
        net_f = deeplab_compile.compile(path, vars=vars_, inputs={"data": f"1x3x{s}x{s}"}, fuse=True).to(dev).eval()
        net_f.load_state_dict(net.state_dict())
        fns["compiled, fold_bn + fuse_aspp"] = lambda: net_f(x)
        with torch.no_grad():
            times = interleaved(fns, args.repeat, sync=torch.cuda.synchronize if dev == "cuda" else None)
            for k, f in fns.items():
                mb = peak_mb(f, dev)
                ts = times[k]
                row = f"| {name} | {k} | {min(ts) * 1e3:.0f} | {statistics.median(ts) * 1e3:.0f} | {mb:.0f} |"
                lines.append(row)
                print(row, flush=True)
    # training throughput, v3+ (MobileNetV2 by default; the Xception net is heavy on CPU)
    if args.train_steps < 1:
        return _write(args, lines)
    tname = NETS["v3plus_xception"] if dev == "cuda" else NETS["v3plus_mnv2"]
    tnet = deeplab_compile.compile(os.path.join(ROOT, "netdef", tname + ".yaml"), phase="train",
                                   vars={"crop": s}).to(dev)
    opt = torch.optim.SGD(tnet.param_groups(base_lr=1e-3, weight_decay=1e-4), lr=1e-3, momentum=0.9)
    data = torch.randn(2, 3, s, s, device=dev)
    label = torch.randint(0, 21, (2, 1, s, s), device=dev).float()
    steps = []
    for i in range(args.train_steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        tnet.total_loss(tnet(data, label)).backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        if i:
            steps.append(time.perf_counter() - t)
    row = (f"| {tname} | train step, batch 2 | {min(steps) * 1e3:.0f} | {statistics.median(steps) * 1e3:.0f} | "
           f"{2 / statistics.median(steps):.2f} img/s |")
    lines.append(row)
    print(row)
    return _write(args, lines)


def _write(args, lines) -> int:
    if args.write:
        append_results("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training speed: the data pipeline, a LargeFOV training step compiled vs plain PyTorch,
and (``--precision``) fp32 against bf16 training steps.

    python benchmarks/train.py [--iters 3] [--batch 10] [--size 321] [--threads 2]
                               [--device cpu|cuda] [--write]
    python benchmarks/train.py --precision [--net deeplab_v3_mobilenetv2] [--batch 4] [--size 193]
                               [--repeats 5] [--channels-last] [--threads 2] [--device cpu|cuda] [--write]

1. Data: images per second through ``pipeline_for`` (ImageSegData rules: random crop
   321, mirror, scale factors 0.5..1.5, 2 DataLoader workers) on a synthetic VOC-sized
   set (350..500 px JPEGs).  It must outrun the training step.
2. Training step of DeepLab-LargeFOV (20.5M parameters) at batch x 3 x size x size:
   forward, loss, backward and the Caffe SGD update, for the compiled net and for the
   same step written as plain PyTorch (an ``nn.Sequential`` with the same weights,
   ``F.interpolate`` for the label shrink, ``F.cross_entropy`` and ``torch.optim.SGD``),
   in the same run.  Each variant runs in its own process so that its peak memory
   (max RSS on CPU, ``max_memory_allocated`` on CUDA) is its own.
The ratio is compiled / plain (seconds per iteration).  ``--write`` appends the table to
benchmarks/RESULTS.md with the date and the device.

``--precision``: one training step of a zoo net (forward and loss under the precision's
autocast, backward, Caffe SGD update; :class:`deeplab_compile.training.precision.Precision`,
as ``deeplab-train`` runs it) in fp32 and in bf16, each on its own copy of the net and
optimizer with the same batch, interleaved (one step of each in turn per repeat, so a
change in the load of a shared machine hits both alike).  It reports seconds per step
(minimum and median), steps per second, the ratio bf16 / fp32 of steps per second, and
the 1-minute load average before and after.  ``--write`` puts the table in RESULTS.md's
section "benchmarks/train.py --precision" (replacing an older one).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from timing import ROOT, append_results, device_line, interleaved, load_average, min_median, replace_section


def step_bench(variant: str, iters: int, batch: int, size: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    import deeplab_compile
    from deeplab_compile.training.optim import CaffeSGD
    torch.manual_seed(0)
    dev = torch.device(device)
    net = deeplab_compile.compile(os.path.join(ROOT, "netdef", "deeplab_largefov.yaml"), phase="train",
                                  inputs={"data": (batch, 3, size, size), "label": (batch, 1, size, size)})
    x = torch.randn(batch, 3, size, size, device=dev) * 50
    y = torch.randint(0, 21, (batch, 1, size, size), device=dev).float()
    if variant == "compiled":
        net.to(dev)
        opt = CaffeSGD(net.param_groups(), momentum=0.9)
        opt.set_rate(1e-3, 5e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            net.total_loss(net(x, y)).backward()
            opt.step()
    else:
        from compile import copy_weights, hand_written_largefov
        model = hand_written_largefov(21, size)
        copy_weights(net, model)
        model = torch.nn.Sequential(*list(model.children())[:-1]).to(dev).train()     # no test-time upsample
        del net
        groups = [{"params": [p for n, p in model.named_parameters() if n.endswith("weight")], "weight_decay": 5e-4},
                  {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            score = model(x)
            lab = F.interpolate(y, size=score.shape[-2:], mode="bilinear", align_corners=True)
            F.cross_entropy(score, lab[:, 0].long(), ignore_index=255).backward()
            opt.step()
    step()                                  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"s_per_iter": sorted(ts)[len(ts) // 2], "peak_bytes": peak}


def precision_steps(net_name: str, batch: int, size: int, device: str, channels_last: bool) -> dict:
    """name -> one training step (a closure) for fp32 and bf16, each on its own net copy."""
    import copy

    import torch

    import deeplab_compile
    from deeplab_compile.training.optim import CaffeSGD
    from deeplab_compile.training.precision import Precision
    torch.manual_seed(0)
    dev = torch.device(device)
    base = deeplab_compile.compile(os.path.join(ROOT, "netdef", net_name + ".yaml"), phase="train",
                                   inputs={"data": (batch, 3, size, size), "label": (batch, 1, size, size)})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g).to(dev)
    y = torch.randint(0, 21, (batch, 1, size, size), generator=g).float().to(dev)
    steps = {}
    for name in ("fp32", "bf16"):
        prec = Precision(name, channels_last)
        prec.check(dev)
        net = prec.model(copy.deepcopy(base).to(dev).train())
        opt = CaffeSGD(net.param_groups(), momentum=0.9)
        opt.set_rate(1e-4, 5e-4)
        feeds = prec.inputs([x, y])

        def step(net=net, opt=opt, prec=prec, feeds=feeds):
            opt.zero_grad(set_to_none=True)
            with prec.autocast(dev):
                loss = net.total_loss(net(*feeds))
            loss.backward()
            opt.step()
            return float(loss.detach())
        steps[name] = step
    return steps


def precision_bench(a) -> str:
    import torch
    steps = precision_steps(a.net, a.batch, a.size, a.device, a.channels_last)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else None
    load0 = load_average()
    times = interleaved(steps, a.repeats, warmup=1, sync=sync)
    load1 = load_average()
    stats = {k: min_median(v) for k, v in times.items()}
    rate = {k: 1 / med for k, (_, med) in stats.items()}
    layout = "channels_last" if a.channels_last else "contiguous"
    lines = ["## benchmarks/train.py --precision", "",
             f"### fp32 against bf16 training steps, {datetime.date.today()} ({device_line(a.device, a.threads)})", "",
             f"{a.net}, train phase, batch {a.batch} x 3 x {a.size} x {a.size}, {layout}: forward and loss under "
             f"autocast, backward, CaffeSGD update; {a.repeats} interleaved steps of each after one warm-up; "
             f"load average {load0:.2f} before, {load1:.2f} after.", "",
             "| precision | s / step (min) | s / step (median) | steps / s (median) |", "|---|---:|---:|---:|"]
    for k, (mn, med) in stats.items():
        lines.append(f"| {k} | {mn:.3f} | {med:.3f} | {rate[k]:.3f} |")
    lines += ["", f"bf16 / fp32 steps per second: {rate['bf16'] / rate['fp32']:.2f} "
                  f"(minimum times: {stats['fp32'][0] / stats['bf16'][0]:.2f}).", ""]
    return "\n".join(lines)


def data_bench(n_batches: int, batch: int, size: int, workers: int) -> float:
    from deeplab_compile.compiler import build_net
    from deeplab_compile.data import pipeline_for
    from deeplab_compile.data.synthetic import generate
    tmp = tempfile.mkdtemp(prefix="dlc-bench-")
    syn = generate(os.path.join(tmp, "voc"), num_images=60, min_size=350, max_size=500, seed=0)
    ir = build_net(os.path.join(ROOT, "netdef", "deeplab_largefov.yaml"), phase="train")
    pipe = pipeline_for(ir, "train", {"source": os.path.join(syn, "list", "train.txt"), "root_folder": syn,
                                      "batch_size": batch, "crop_size": size, "mirror": True, "shuffle": True,
                                      "scale_factors": [0.5, 0.75, 1.0, 1.25, 1.5],
                                      "mean_value": [104.008, 116.669, 122.675], "num_workers": workers})
    it = iter(pipe)
    next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--batch", type=int, help="default 10 (--precision: 4)")
    ap.add_argument("--size", type=int, help="default 321 (--precision: 193)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--precision", action="store_true", help="fp32 against bf16 training steps (interleaved)")
    ap.add_argument("--net", default="deeplab_v3_mobilenetv2", help="zoo net for --precision")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved steps of each precision")
    ap.add_argument("--channels-last", action="store_true", help="--precision: both in channels_last")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    a.batch = a.batch or (4 if a.precision else 10)
    a.size = a.size or (193 if a.precision else 321)
    if a.precision:
        text = precision_bench(a)
        print(text)
        if a.write:
            replace_section("benchmarks/train.py --precision", text)
        return 0
    if a.variant:
        print(json.dumps(step_bench(a.variant, a.iters, a.batch, a.size, a.device)))
        return 0
    ips = data_bench(6, a.batch, a.size, a.workers)
    res = {}
    for v in ("compiled", "plain"):
        out = subprocess.run([sys.executable, __file__, "--variant", v, "--iters", str(a.iters), "--batch",
                              str(a.batch), "--size", str(a.size), "--threads", str(a.threads), "--device", a.device],
                             capture_output=True, text=True, check=True)
        res[v] = json.loads(out.stdout.strip().splitlines()[-1])
    dev = device_line(a.device, a.threads)
    c, p = res["compiled"], res["plain"]
    lines = [f"### Training step, {datetime.date.today()} ({dev})", "",
             f"DeepLab-LargeFOV, batch {a.batch} x 3 x {a.size} x {a.size}, median of {a.iters} iterations "
             f"after one warm-up.", "",
             "| | s / iteration | iterations / s | peak memory |", "|---|---:|---:|---:|",
             f"| compiled (CaffeSGD) | {c['s_per_iter']:.2f} | {1 / c['s_per_iter']:.3f} | "
             f"{c['peak_bytes'] / 2**30:.2f} GiB |",
             f"| plain PyTorch (torch SGD) | {p['s_per_iter']:.2f} | {1 / p['s_per_iter']:.3f} | "
             f"{p['peak_bytes'] / 2**30:.2f} GiB |",
             f"| ratio compiled / plain | {c['s_per_iter'] / p['s_per_iter']:.3f} | | "
             f"{c['peak_bytes'] / p['peak_bytes']:.3f} |", "",
             f"Data pipeline ({a.workers} workers, crop {a.size}, mirror, 5 scale factors, 350-500 px JPEGs): "
             f"{ips:.1f} images/s; the step consumes {a.batch / c['s_per_iter']:.1f} images/s.", ""]
    text = "\n".join(lines)
    print(text)
    if a.write:
        append_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

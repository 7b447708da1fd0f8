"""Zoo nets: compiled vs the peer's own PyTorch model, CPU fp32 (GPU when one is present).

    python benchmarks/models.py [--size 513] [--threads 2] [--repeat 5] [--runs 3] [--nets v3,v3plus_mnv2]
                                [--train-crop 257] [--train-steps 3] [--inductor] [--write]

DeepLabv3 ResNet-101 (``layout=torchvision``) against torchvision's real
``deeplabv3_resnet101`` (imported through tests/peers.py; the hand-written replica in
tests/data/zoo/replicas.py only where torchvision does not import), with the same weights:
torchvision's random initialisation with non-trivial BatchNorm statistics, converted as
``deeplab-convert --from torchvision:deeplabv3_resnet101`` does.  Variants of ours:

  default             ``deeplab_compile.compile(..., phase="test")``: fold_bn + fuse_aspp,
                      lowered for CPU (deeplab_compile/lower.py)
  fuse=False          the netdef's layers, lowered (packed weights, channels-last)
  lower=False         the passes without the lowering (the default before the lowering)
  fuse=False, lower=False   the plain modules
  --inductor          torch.compile(default net with lower=False), inductor with frozen
                      weights; its compile time is printed on its own row

Inference: all variants run interleaved, one call of each in turn per round, under
``torch.no_grad()``; min and median over the rounds of all ``--runs`` runs, ratio =
torchvision's time / ours (above 1: ours is faster) by median and by min, and the spread
(min / median / max) of each run's median ratio.  Training: one step (forward, loss,
backward, SGD step) of the train-phase net against torchvision's model in train mode
with CrossEntropyLoss(ignore_index=255), batch 2 at ``--train-crop``, interleaved, in both
memory layouts of the solver's ``channels_last``: the default ``auto`` (channels-last on a
CPU, NCHW on CUDA, as ``deeplab-train`` resolves it) and the other one written out
(``channels_last: false`` on a CPU, ``true`` on CUDA).  The load average is printed
before and after.  ``--write`` puts the tables in place of
RESULTS.md's ``## benchmarks/models.py`` section.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch

from timing import ROOT, device_line, interleaved, load_average, replace_section, spread

sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "data", "zoo"))

import deeplab_compile  # noqa: E402
from deeplab_compile.training.precision import resolve_channels_last  # noqa: E402
from deeplab_compile.zoo.convert import convert_state_dict  # noqa: E402

NETS = {"v3": "deeplab_v3_resnet101", "v3plus_xception": "deeplab_v3plus_xception65",
        "v3plus_mnv2": "deeplab_v3plus_mobilenetv2", "v3_mnv2": "deeplab_v3_mobilenetv2"}
TV = {"layout": "torchvision"}
SECTION = "benchmarks/models.py"
INTRO = """DeepLabv3 ResNet-101 compiled from netdef/deeplab_v3_resnet101.yaml with
`layout=torchvision`, against torchvision's own `deeplabv3_resnet101` (eager, imported
through tests/peers.py) with the same weights, converted as `deeplab-convert --from
torchvision:deeplabv3_resnet101` does; every output agrees with torchvision's `out` to
1e-5 relative (checked in the run).  Candidates run interleaved in one process; the
baseline is torchvision's row of the same table.
"""


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


def torchvision_v3():
    """(model, name): torchvision's deeplabv3_resnet101 through the test suite's import
    shim, else the hand-written replica.  Random weights, non-trivial BN statistics."""
    torch.manual_seed(0)
    try:
        import peers
        tv = peers.torchvision()
        model = tv.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                           num_classes=21, aux_loss=False)
        name = "torchvision deeplabv3_resnet101 (eager)"
    except BaseException as exc:  # noqa: BLE001 - pytest.skip raises a BaseException
        print(f"torchvision does not import ({exc}); using the hand-written replica", flush=True)
        import replicas
        model = replicas.DeepLabV3ResNet101()
        name = "hand-written replica of torchvision's deeplabv3_resnet101"
        return _randomize_bn(model), name, "replica"
    return _randomize_bn(model), name, "torchvision"


def _randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
    return model


def _out(model, kind):
    if kind == "torchvision":
        return lambda x: model(x)["out"]
    return model.logits


def v3_path() -> str:
    return os.path.join(ROOT, "netdef", NETS["v3"] + ".yaml")


def ours_v3(sd_src, size, *, phase="test", **kw):
    net = deeplab_compile.compile(v3_path(), phase=phase, vars=dict(TV, crop=size),
                                  inputs={"data": f"1x3x{size}x{size}"} if phase == "test" else None, **kw)
    sd, _ = convert_state_dict(sd_src, "torchvision:deeplabv3_resnet101", net)
    net.load_state_dict(sd)
    return net


def timed_runs(fns, args, dev, repeat) -> list[dict]:
    """``args.runs`` interleaved runs of ``repeat`` rounds each: a list of {key: [seconds]}."""
    sync = torch.cuda.synchronize if dev == "cuda" else None
    out = []
    for r in range(args.runs):
        out.append(interleaved(fns, repeat, sync=sync))
        if args.runs > 1:
            print(f"run {r + 1}/{args.runs} done, load average {load_average():.2f}", flush=True)
    return out


def rows(runs, base_key, dev, fns, lines, net_name, mem=True):
    """One row per candidate: min and median over every round of every run, the ratios of
    the pooled times, and the spread (min / median / max) of each run's median ratio."""
    pooled = {k: [t for run in runs for t in run[k]] for k in runs[0]}
    tb_med, tb_min = statistics.median(pooled[base_key]), min(pooled[base_key])
    for k, ts in pooled.items():
        mb = f"{peak_mb(fns[k], dev):.0f}" if mem else ""
        per_run = [statistics.median(run[base_key]) / statistics.median(run[k]) for run in runs]
        row = (f"| {net_name} | {k} | {min(ts) * 1e3:.0f} | {statistics.median(ts) * 1e3:.0f} | "
               f"{tb_med / statistics.median(ts):.2f} | {tb_min / min(ts):.2f} | {spread(per_run)} | {mb} |")
        lines.append(row)
        print(row, flush=True)


def bench_v3(args, dev, lines):
    s = args.size
    ref, ref_name, kind = torchvision_v3()
    ref = ref.to(dev).eval()
    sd_src = ref.state_dict()
    x = torch.randn(1, 3, s, s, device=dev, generator=None)
    nets = {
        "default (fold_bn + fuse_aspp, lowered)": ours_v3(sd_src, s),
        "fuse=False (lowered)": ours_v3(sd_src, s, fuse=False),
        "lower=False (fold_bn + fuse_aspp)": ours_v3(sd_src, s, lower=False),
        "fuse=False, lower=False": ours_v3(sd_src, s, fuse=False, lower=False),
    }
    fwd = _out(ref, kind)
    fns = {ref_name: lambda: fwd(x)}
    for k, net in nets.items():
        net = net.to(dev).eval()
        fns[k] = (lambda n: lambda: n(x)["logits_interp"])(net)
    with torch.no_grad():
        want = fwd(x)
        for k, f in fns.items():
            err = ((f() - want).abs().max() / want.abs().max()).item()
            print(f"{k}: max |ours - torchvision| / max |torchvision| = {err:.1e}", flush=True)
            assert err < 1e-5, k
        if args.inductor:
            gm = ours_v3(sd_src, s, lower=False).to(dev).eval()
            import torch._inductor.config as icfg
            icfg.freezing = True
            t = time.perf_counter()
            cnet = torch.compile(gm)
            cnet(x)
            compile_s = time.perf_counter() - t
            k = f"torch.compile (inductor, freezing; compile {compile_s:.0f} s, not in the times)"
            fns[k] = lambda: cnet(x)["logits_interp"]
        rows(timed_runs(fns, args, dev, args.repeat), ref_name, dev, fns, lines, NETS["v3"])
    if args.train_steps > 0:
        bench_v3_train(args, dev, ref, kind, sd_src, lines)


def bench_v3_train(args, dev, ref, kind, sd_src, lines):
    c, n = args.train_crop, 2
    ours = ours_v3(sd_src, c, phase="train").to(dev).train()
    ref.train()
    fwd = _out(ref, kind)
    g = torch.Generator().manual_seed(3)
    data = torch.randn(n, 3, c, c, generator=g).to(dev)
    label = torch.randint(0, 21, (n, 1, c, c), generator=g)
    label[:, :, :8] = 255                          # some ignored pixels, as VOC's borders
    label = label.to(dev)
    opt_ours = torch.optim.SGD(ours.param_groups(base_lr=1e-3, weight_decay=1e-4), lr=1e-3, momentum=0.9)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    # channels-last: net and input batches in torch.channels_last, as the solver's
    # channels_last: true does, and its default auto on a CPU
    ours_cl = ours_v3(sd_src, c, phase="train").to(dev).train().to(memory_format=torch.channels_last)
    opt_cl = torch.optim.SGD(ours_cl.param_groups(base_lr=1e-3, weight_decay=1e-4), lr=1e-3, momentum=0.9)
    data_cl = data.contiguous(memory_format=torch.channels_last)

    def step_ours():
        opt_ours.zero_grad()
        ours.total_loss(ours(data, label.float())).backward()
        opt_ours.step()

    def step_cl():
        opt_cl.zero_grad()
        ours_cl.total_loss(ours_cl(data_cl, label.float())).backward()
        opt_cl.step()

    def step_ref():
        opt_ref.zero_grad()
        ce(fwd(data), label[:, 0].long()).backward()
        opt_ref.step()
    name = f"{'torchvision' if kind == 'torchvision' else 'replica'} train step"
    # the solver's default (auto) is channels-last here on a CPU, NCHW on CUDA; the other
    # layout's row names the value that asks for it
    if resolve_channels_last("auto", dev):
        layouts = {"train step, channels_last: false (NCHW)": step_ours,
                   "train step, channels_last: auto (default; channels-last on a CPU)": step_cl}
    else:
        layouts = {"train step, channels_last: auto (default; NCHW on CUDA)": step_ours,
                   "train step, channels_last: true": step_cl}
    fns = {name: step_ref, **layouts}
    runs = timed_runs(fns, args, dev, args.train_steps)
    lines += ["", f"Train step: batch {n} x 3 x {c} x {c}, BatchNorm in train mode, SGD momentum 0.9, "
                  f"{args.train_steps} interleaved steps after one warm-up each, in each of {args.runs} runs.", "",
              "| net | variant | min ms | median ms | ratio (median) | ratio (min) | ratio per run (min / median / max) | |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    rows(runs, name, dev, fns, lines, NETS["v3"], mem=False)


def bench_other(key, args, dev, lines):
    s = args.size
    path = os.path.join(ROOT, "netdef", NETS[key] + ".yaml")
    x = torch.randn(1, 3, s, s, device=dev)
    base = deeplab_compile.compile(path, inputs={"data": f"1x3x{s}x{s}"}, fuse=False, lower=False).to(dev).eval()
    fns = {"fuse=False, lower=False": lambda: base(x)}
    for k, kw in (("fuse=False (lowered)", {"fuse": False}), ("default (lowered)", {})):
        net = deeplab_compile.compile(path, inputs={"data": f"1x3x{s}x{s}"}, **kw).to(dev).eval()
        net.load_state_dict(base.state_dict())
        fns[k] = (lambda n: lambda: n(x))(net)
    with torch.no_grad():
        rows(timed_runs(fns, args, dev, args.repeat), "fuse=False, lower=False", dev, fns, lines, NETS[key])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=513)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--repeat", type=int, default=5, help="interleaved rounds per run")
    p.add_argument("--runs", type=int, default=3, help="runs (the spread of the ratio is over these)")
    p.add_argument("--nets", default="v3")
    p.add_argument("--train-crop", type=int, default=257)
    p.add_argument("--train-steps", type=int, default=3, help="0 skips the training rows")
    p.add_argument("--inductor", action="store_true", help="add torch.compile (inductor) of the default net")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    unknown = [k for k in args.nets.split(",") if k not in NETS]
    if unknown:
        p.error(f"--nets: unknown {', '.join(unknown)}; choose from {', '.join(NETS)}")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu":
        torch.set_num_threads(args.threads)
    s = args.size
    load0 = load_average()
    lines = [f"### Zoo nets, {datetime.date.today()}, {device_line(dev, torch.get_num_threads())}, fp32, "
             f"1x3x{s}x{s}, {args.runs} runs of {args.repeat} interleaved rounds", "",
             "Ratio: the baseline's time / this row's (above 1: faster than the baseline), by median and by min "
             "over every round of every run; then each run's median ratio, min / median / max over the runs.", "",
             "| net | variant | min ms | median ms | ratio (median) | ratio (min) | ratio per run (min / median / max) "
             "| peak MB |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    print(f"load average at start: {load0:.2f}", flush=True)
    for key in args.nets.split(","):
        if key == "v3":
            bench_v3(args, dev, lines)
        else:
            bench_other(key, args, dev, lines)
    load1 = load_average()
    lines += ["", f"Load average (1 min) at start {load0:.2f}, at end {load1:.2f}."]
    print(lines[-1])
    if args.write:
        replace_section(SECTION, f"## {SECTION}\n\n{INTRO}\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU check behind scripts/gpu_check.sh: build, test, sanitize, benchmark, report.

    python benchmarks/gpu_check.py [--dry-run] [--out DIR]

Stages, in order, each with its own time budget (seconds); a failing stage keeps the
tail of its log for the report and the later stages still run where they can:

    1. env+build  versions (device, driver, CUDA, torch, nvcc); FORCE_CUDA=1
                  TORCH_CUDA_ARCH_LIST=<the device's compute capability> python setup.py
                  build_ext --inplace; then every op must have a CUDA kernel
    2. tests      python -m pytest -m cuda (tests/test_cuda_ops.py and every other cuda test)
    3. sanitizer  compute-sanitizer memcheck and racecheck over the tests marked "sanitize"
    4. bench      interleaved benchmarks against their baselines (see BENCH below)
    5. report     OUT/gpu_report.md and gpu_report.json (OUT: --out, else $OUT, else benchmarks/)

--dry-run runs on a CPU machine and checks the plumbing: no build (the command is shown),
the CUDA tests are collected and must all be skipped, the sanitizer command is shown,
and the benchmarks run on CPU tensors at tiny sizes.  The exit status is 1 when any
check failed, else 0.  Missing a speed target is a finding, not a failure.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Seconds per stage on a GPU machine; the whole run must fit 8 minutes on an H100.
BUDGET = {"build": 170, "tests": 100, "memcheck": 60, "racecheck": 45, "bench": 90}
TOTAL = 470   # no stage may run past this many seconds from the start
# The dry run checks the plumbing, not the speed: its budgets leave room for a busy
# 2-core CI machine.
DRY_BUDGET = {"build": 60, "tests": 180, "memcheck": 60, "racecheck": 60, "bench": 240}

TARGETS = [  # (key in the results, what, target, minimum ratio or maximum ms)
    ("aspp_v2_fwd", "ASPP (v2) forward", "at least 1.5x cuDNN", 1.5),
    ("v3_head", "v3 inference head", "at least 1.3x cuDNN", 1.3),
    ("crf", "dense CRF, 10 iterations at 500x375x21", "under 5 ms (about 200x single-threaded pydensecrf)", 5.0),
    ("v3_net", "whole v3 ResNet-101 inference", "at least 1.15x torchvision", 1.15),
    ("auto", "any case", "never slower than the library path (the dispatcher's choice)", 1.0),
]


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_cmd(cmd, timeout, env=None, cwd=ROOT):
    """(returncode, output); returncode 124 when the budget ran out."""
    t = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout, time.time() - t
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n[gpu_check] stopped after its budget of {timeout} s", time.time() - t
    except OSError as e:
        return 127, f"[gpu_check] could not run {cmd[0]}: {e}", time.time() - t


class Report:
    def __init__(self, dry: bool):
        self.dry = dry
        self.stages: list[dict] = []
        self.env: dict = {}
        self.bench: dict = {}

    def stage(self, name, status, seconds, budget, detail="", log=""):
        rec = {"stage": name, "status": status, "seconds": round(seconds, 1), "budget_s": budget,
               "detail": detail, "log_tail": tail(log) if status == "fail" else ""}
        self.stages.append(rec)
        print(f"[gpu_check] {name}: {status} ({seconds:.0f} s of {budget} s) {detail}", flush=True)
        if status == "fail" and log:
            print(tail(log, 25), flush=True)
        return rec

    @property
    def failed(self):
        return any(s["status"] == "fail" for s in self.stages)


# --------------------------------------------------------------------------- 1. environment and build

def versions(dry: bool) -> dict:
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "host": platform.node(), "python": platform.python_version(), "machine": platform.machine()}
    import torch
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda or "none"
    env["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["device"] = p.name
        env["capability"] = f"{p.major}.{p.minor}"
        env["multiprocessors"] = p.multi_processor_count
        env["memory_gib"] = round(p.total_memory / 2 ** 30, 1)
    else:
        env["device"] = f"CPU ({platform.machine()}), {torch.get_num_threads()} threads (no CUDA device)"
    rc, out, _ = run_cmd(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], 20)
    env["driver"] = out.strip().splitlines()[0].split(",")[-1].strip() if rc == 0 and out.strip() else "none"
    nvcc = shutil.which("nvcc") or next((c for c in ("/usr/local/cuda/bin/nvcc",) if os.path.isfile(c)), None)
    env["nvcc"] = "none"
    if nvcc:
        rc, out, _ = run_cmd([nvcc, "--version"], 30)
        m = re.search(r"release ([\d.]+), V([\d.]+)", out)
        env["nvcc"] = m.group(2) if m else tail(out, 1)
        env["nvcc_path"] = nvcc
    env["compute_sanitizer"] = shutil.which("compute-sanitizer") or "none"
    for mod in ("torchvision", "pydensecrf"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", "installed")
        except Exception as e:  # noqa: BLE001 - a broken install counts as absent
            env[mod] = f"none ({type(e).__name__})"
    return env


def build_env(env: dict) -> dict:
    e = dict(os.environ)
    e["FORCE_CUDA"] = "1"
    e["TORCH_CUDA_ARCH_LIST"] = env.get("capability", "9.0")
    e.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    return e


def stage_build(rep: Report, budget: int) -> bool:
    env = rep.env
    print("[gpu_check] versions: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
    benv = build_env(env)
    config = (f"FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST={benv['TORCH_CUDA_ARCH_LIST']} MAX_JOBS={benv['MAX_JOBS']} "
              + " ".join(["python"] + cmd[1:]))
    rep.env["build_command"] = config
    if rep.dry:
        rep.stage("build", "skip", 0, budget, f"dry run; would run: {config}")
        return True
    if env.get("device", "").startswith("CPU"):
        rep.stage("build", "fail", 0, budget, "no CUDA device visible to torch")
        return False
    rc, out, sec = run_cmd(cmd, budget, env=benv)
    conf = [l for l in out.splitlines() if l.startswith("deeplab_compile: building")]
    rep.env["build_config"] = conf[-1] if conf else "(not printed)"
    print(f"[gpu_check] build configuration: {rep.env['build_config']}", flush=True)
    if rc != 0:
        rep.stage("build", "fail", sec, budget, f"setup.py exited {rc}", out)
        return False
    probe = ("from deeplab_compile.ops import _ext; ops = ['aspp_sum', '_aspp_sum_backward', 'aspp_v3_head', "
             "'permutohedral_filter', '_permutohedral_filter_backward', 'dense_crf']; "
             "missing = [o for o in ops if not _ext.has_kernel(o, 'CUDA')]; "
             "print('missing CUDA kernels:', missing, _ext.backends()); raise SystemExit(1 if missing else 0)")
    rc2, out2, _ = run_cmd([sys.executable, "-c", probe], 120)
    if rc2 != 0:
        rep.stage("build", "fail", sec, budget, "built, but the CUDA kernels are not registered", out + out2)
        return False
    rep.stage("build", "pass", sec, budget, rep.env["build_config"])
    return True


# --------------------------------------------------------------------------- 2. tests

def junit_counts(path: str) -> dict:
    c = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return c
    for suite in ([root] if root.tag == "testsuite" else list(root)):
        for k in c:
            c[k] += int(suite.get(k, 0))
    return c


def cuda_test_files() -> list:
    """The test modules that mark tests with ``pytest.mark.cuda`` (collecting only these
    keeps the dry run short; on a GPU machine the whole tests/ folder is collected)."""
    tests = os.path.join(ROOT, "tests")
    found = []
    for name in sorted(os.listdir(tests)):
        if name.startswith("test_") and name.endswith(".py"):
            with open(os.path.join(tests, name)) as f:
                if "mark.cuda" in f.read():
                    found.append(os.path.join("tests", name))
    return found


def pytest_cmd(junit: str, dry: bool) -> list:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "-m", "cuda",
            f"--junitxml={junit}", *(cuda_test_files() if dry else ["tests"])]


def stage_tests(rep: Report, budget: int, work: str) -> None:
    junit = os.path.join(work, "cuda_tests.xml")
    rc, out, sec = run_cmd(pytest_cmd(junit, rep.dry), budget)
    c = junit_counts(junit)
    passed = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    detail = f"{c['tests']} collected: {passed} passed, {c['failures']} failed, {c['errors']} errors, " \
             f"{c['skipped']} skipped"
    rep.env["cuda_tests"] = c
    if c["tests"] == 0:
        rep.stage("tests", "fail", sec, budget, f"no CUDA tests were collected (pytest exited {rc})", out)
    elif rep.dry:
        # Plumbing: every CUDA test is collected, and skipped without a device.
        ok = rc in (0, 5) and c["skipped"] == c["tests"]
        rep.stage("tests", "pass" if ok else "fail", sec, budget,
                  detail + ("" if ok else " (without a GPU every CUDA test must skip)"), out)
    else:
        ok = rc == 0 and c["failures"] == c["errors"] == 0 and passed > 0 and c["skipped"] == 0
        rep.stage("tests", "pass" if ok else "fail", sec, budget,
                  detail + ("" if ok or c["skipped"] == 0 else " (no CUDA test may skip on a GPU machine)"), out)


# --------------------------------------------------------------------------- 3. compute-sanitizer

def sanitizer_cmd(tool: str, work: str) -> list:
    junit = os.path.join(work, f"sanitize_{tool}.xml")
    cmd = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "97", "--report-api-errors", "no"]
    if tool == "memcheck":
        cmd += ["--leak-check", "no"]
    return cmd + [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "-m", "cuda and sanitize",
                  f"--junitxml={junit}", "tests/test_cuda_ops.py"]


def sanitizer_clean(tool: str, out: str) -> bool:
    m = re.search(r"ERROR SUMMARY: (\d+) error", out)
    errors = int(m.group(1)) if m else -1
    h = re.search(r"RACECHECK SUMMARY: (\d+) hazard", out)
    hazards = int(h.group(1)) if h else 0
    return errors == 0 and hazards == 0


def stage_sanitizer(rep: Report, tool: str, budget: int, work: str) -> None:
    cmd = sanitizer_cmd(tool, work)
    shown = " ".join(os.path.basename(a) if a == sys.executable else a for a in cmd)
    if rep.dry:
        # The subset the sanitizer would run must exist (collected once for both tools).
        if "sanitize_subset" not in rep.env:
            rc, out, sec = run_cmd([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only",
                                    "-m", "cuda and sanitize", "tests/test_cuda_ops.py"], budget)
            ids = [l for l in out.splitlines() if "::" in l]
            rep.env["sanitize_subset"] = ids
        else:
            rc, out, sec = 0, "", 0.0
        ids = rep.env["sanitize_subset"]
        rep.stage(tool, "pass" if ids else "fail", sec, budget,
                  f"dry run; subset of {len(ids)} tests collected; would run: {shown}", out)
        return
    if shutil.which("compute-sanitizer") is None:
        rep.stage(tool, "fail", 0, budget, "compute-sanitizer not found on PATH")
        return
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")   # so memcheck sees each allocation's bounds
    rc, out, sec = run_cmd(cmd, budget, env=env)
    c = junit_counts(os.path.join(work, f"sanitize_{tool}.xml"))
    clean = sanitizer_clean(tool, out)
    ok = rc == 0 and clean and c["tests"] > 0 and c["failures"] == c["errors"] == c["skipped"] == 0
    summary = "; ".join(l.strip() for l in out.splitlines() if "SUMMARY" in l) or "no summary line"
    rep.stage(tool, "pass" if ok else "fail", sec, budget, f"{c['tests']} tests, exit {rc}: {summary}", out)


# --------------------------------------------------------------------------- 4. benchmarks

def stage_bench(rep: Report, budget: int, work: str) -> None:
    path = os.path.join(work, "bench.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--bench-child", path] + (["--dry-run"] if rep.dry else [])
    rc, out, sec = run_cmd(cmd, budget)
    try:
        with open(path) as f:
            rep.bench = json.load(f)
    except (OSError, ValueError):
        rep.bench = {}
    errors = [f"{k}: {v['error']}" for k, v in rep.bench.items() if isinstance(v, dict) and v.get("error")]
    groups = [k for k in BENCH_GROUPS if k in rep.bench]
    ok = rc == 0 and not errors and len(groups) == len(BENCH_GROUPS)
    detail = f"groups done: {', '.join(groups) or 'none'}" + (f"; errors: {'; '.join(errors)}" if errors else "")
    rep.stage("bench", "pass" if ok else "fail", sec, budget, detail, out)


class Timer:
    """Interleaved timing: one call of each candidate in turn, per repeat; CUDA events on
    a GPU, the host clock otherwise.  Reports min and median in ms."""

    def __init__(self, dev, warmup=2, repeats=7):
        self.dev, self.warmup, self.repeats = dev, warmup, repeats

    def __call__(self, cands: dict) -> dict:
        import torch
        cuda = self.dev.type == "cuda"
        for f in cands.values():
            for _ in range(self.warmup):
                f()
        times = {k: [] for k in cands}
        for _ in range(self.repeats):
            for k, f in cands.items():
                if cuda:
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    torch.cuda.synchronize()
                    a.record()
                    f()
                    b.record()
                    b.synchronize()
                    times[k].append(a.elapsed_time(b))
                else:
                    t = time.perf_counter()
                    f()
                    times[k].append((time.perf_counter() - t) * 1e3)
        return {k: {"min_ms": round(min(v), 4), "median_ms": round(statistics.median(v), 4)} for k, v in times.items()}


def _grad_fn(fn, args, train):
    import torch

    def f():
        with torch.set_grad_enabled(train):
            y = fn(*args)
            if train:
                y.sum().backward()
    return f


def bench_aspp_v2(dev, dry, timer):
    import torch
    import torch.nn.functional as F
    from deeplab_compile.ops.aspp_sum import aspp_sum_auto, aspp_sum_reference
    rates = [6, 12, 18, 24]
    shapes = [(1, 16, 3, 9), (2, 16, 3, 13)] if dry else [(1, 2048, 21, 41), (1, 2048, 21, 65), (10, 2048, 21, 41),
                                                             (10, 2048, 21, 65)]
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for n, c, co, s in shapes:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(n, c, s, s, generator=g).to(dev, dtype).contiguous(memory_format=torch.channels_last)
            ws = [(torch.randn(co, c, 3, 3, generator=g) * 0.01).to(dev, dtype) for _ in rates]
            bs = [torch.randn(co, generator=g).to(dev, dtype) for _ in rates]
            for mode in ("fwd", "fwd+bwd"):
                train = mode != "fwd"
                for t in [x, *ws, *bs]:
                    t.requires_grad_(train)
                lib = lambda x, ws, bs, r: sum(F.conv2d(x, w, b, padding=k, dilation=k) for w, b, k in zip(ws, bs, r))
                cands = {"library": _grad_fn(lib, (x, ws, bs, rates), train),
                         "ours": _grad_fn(torch.ops.deeplab.aspp_sum, (x, ws, bs, rates), train),
                         "auto": _grad_fn(aspp_sum_auto, (x, ws, bs, rates), train)}
                with torch.no_grad():
                    ref = aspp_sum_reference(x.float(), [w.float() for w in ws], [b.float() for b in bs], rates)
                    err = ((torch.ops.deeplab.aspp_sum(x, ws, bs, rates).float() - ref).abs().max()
                           / ref.abs().max()).item()
                r = timer(cands)
                rows.append({"shape": f"{n}x{c}x{s}x{s}->{co}", "dtype": str(dtype).replace("torch.", ""),
                             "layout": "channels_last", "mode": mode, "rel_err": float(f"{err:.2e}"), **r,
                             "speedup": round(r["library"]["min_ms"] / r["ours"]["min_ms"], 3),
                             "auto_vs_library": round(r["library"]["min_ms"] / r["auto"]["min_ms"], 3)})
                print(f"  aspp v2 {rows[-1]['shape']} {rows[-1]['dtype']} {mode}: x{rows[-1]['speedup']}", flush=True)
            del x, ws, bs
    return {"rows": rows, "baseline": "four F.conv2d (cuDNN, benchmark mode) and their sum"}


def _head_args(dev, dtype, c, cb, co, rates, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, k=1.0: (torch.randn(*s, generator=g) * k).to(dev, dtype)
    ws = [r(cb, c, 1, 1, k=c ** -0.5)] + [r(cb, c, 3, 3, k=(9 * c) ** -0.5) for _ in rates]
    bs = [r(cb, k=0.1) for _ in ws]
    projs = [r(co, cb, k=(5 * cb) ** -0.5) for _ in ws]
    return ws, bs, [1, *rates], projs, r(cb, c, k=c ** -0.5), r(cb, k=0.1), r(co, cb, k=(5 * cb) ** -0.5), r(co)


def bench_v3_head(dev, dry, timer):
    import torch
    from deeplab_compile.ops.aspp_v3_head import aspp_v3_head_auto, aspp_v3_head_reference, pick_tap_branches
    configs = [(9, (2, 4, 6), 16, 8)] if dry else [(33, (6, 12, 18), 2048, 256), (65, (12, 24, 36), 2048, 256)]
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for s, rates, c, cb in configs:
            g = torch.Generator().manual_seed(1)
            x = torch.randn(1, c, s, s, generator=g).to(dev, dtype).contiguous(memory_format=torch.channels_last)
            args = _head_args(dev, dtype, c, cb, cb, rates)
            with torch.no_grad():
                taps = pick_tap_branches(x, args[0], args[1], args[2])
                cands = {"library": lambda: aspp_v3_head_reference(x, *args, True),
                         "ours": lambda: torch.ops.deeplab.aspp_v3_head(x, *args, True, []),
                         "ours+taps": lambda: torch.ops.deeplab.aspp_v3_head(x, *args, True, taps),
                         "auto": lambda: aspp_v3_head_auto(x, *args, True)}
                ref = aspp_v3_head_reference(*(a.float() if isinstance(a, torch.Tensor) else
                                               [t.float() for t in a] if isinstance(a, list) and
                                               isinstance(a[0], torch.Tensor) else a for a in (x, *args)), True)
                err = max(((cands[k]().float() - ref).abs().max() / ref.abs().max()).item()
                          for k in ("ours", "ours+taps"))
                r = timer(cands)
            best = min(r["ours"]["min_ms"], r["ours+taps"]["min_ms"])
            rows.append({"shape": f"1x{c}x{s}x{s}", "rates": list(rates), "taps_at": [args[2][i] for i in taps],
                         "dtype": str(dtype).replace("torch.", ""), "rel_err": float(f"{err:.2e}"), **r,
                         "speedup": round(r["library"]["min_ms"] / best, 3),
                         "auto_vs_library": round(r["library"]["min_ms"] / r["auto"]["min_ms"], 3)})
            print(f"  v3 head {rows[-1]['shape']} {rows[-1]['dtype']}: x{rows[-1]['speedup']}", flush=True)
    return {"rows": rows, "baseline": "the folded head through cuDNN convolutions and a concat (the library path)"}


def bench_crf(dev, dry, timer):
    import numpy as np
    import torch
    from PIL import Image
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from crf_helpers import VOC, noisy_logits, unary_from_logits
    from deeplab_compile.crf import PRESETS
    p = PRESETS["deeplab_largefov"]
    w, h, labels, iters = (50, 38, 5, 2) if dry else (500, 375, 21, 10)
    with Image.open(os.path.join(VOC, "2007_000129.png")) as im:
        img = np.array(im.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.uint8)
    gt = (np.arange(h)[:, None] * labels // h + np.zeros((1, w), dtype=int)).astype(np.uint8)
    unary = torch.from_numpy(unary_from_logits(noisy_logits(gt, num_classes=labels)))[None]
    image = torch.from_numpy(img).permute(2, 0, 1)[None].float().contiguous()
    args = (p.pos_w, p.pos_xy_std, p.bi_w, p.bi_xy_std, p.bi_rgb_std, iters, "symmetric")
    cands = {"ours, CPU": lambda: torch.ops.deeplab.dense_crf(image, unary, *args)}
    if dev.type == "cuda":
        iu, uu = image.to(dev), unary.to(dev)
        cands["ours, CUDA"] = lambda: torch.ops.deeplab.dense_crf(iu, uu, *args)
    try:
        import pydensecrf.densecrf as dcrf

        def pyd():
            d = dcrf.DenseCRF2D(w, h, labels)
            d.setUnaryEnergy(np.ascontiguousarray(unary[0].numpy().reshape(labels, -1)))
            d.addPairwiseGaussian(sxy=p.pos_xy_std, compat=p.pos_w)
            d.addPairwiseBilateral(sxy=p.bi_xy_std, srgb=p.bi_rgb_std, rgbim=img, compat=p.bi_w)
            return d.inference(iters)
        cands["pydensecrf, 1 thread"] = pyd
        pyd_note = "pydensecrf (single-threaded by design)"
    except ImportError:
        pyd_note = "pydensecrf not installed: carry its wheel in .whl/ for this baseline"
    r = Timer(dev, warmup=0 if dry else 1, repeats=1 if dry else 5)(cands)
    out = {"shape": f"{w}x{h}x{labels}, {iters} iterations, LargeFOV preset", "cpu_threads": torch.get_num_threads(),
           "note": pyd_note, **r}
    if "ours, CUDA" in r:
        out["cuda_vs_cpu"] = round(r["ours, CPU"]["min_ms"] / r["ours, CUDA"]["min_ms"], 2)
        if "pydensecrf, 1 thread" in r:
            out["cuda_vs_pydensecrf"] = round(r["pydensecrf, 1 thread"]["min_ms"] / r["ours, CUDA"]["min_ms"], 1)
    print(f"  crf: {json.dumps({k: v for k, v in out.items() if k not in ('note',)})}", flush=True)
    return out


def bench_v3_net(dev, dry, timer):
    import torch
    import deeplab_compile
    tv_vars = {"output_stride": 8, "d4_first": 1, "d5_1": 2, "d5_2": 4, "d5_3": 4}   # torchvision's layout
    size = 33 if dry else 513
    path = os.path.join(ROOT, "netdef", "deeplab_v3_resnet101.yaml")
    inputs = {"data": f"1x3x{size}x{size}"}
    fused = deeplab_compile.compile(path, vars=tv_vars, inputs=inputs).to(dev).eval()
    cands_nets = {"compiled (fused)": (fused, lambda y: y)}
    try:
        import torchvision
        ref = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                                  num_classes=21, aux_loss=False).to(dev).eval()
        base, base_name = "torchvision", "torchvision deeplabv3_resnet101"
        cands_nets[base] = (ref, lambda y: y["out"])
    except Exception as e:  # noqa: BLE001 - torchvision absent or built for another torch
        base, base_name = "unfused", f"the unfused compiled net (torchvision: {type(e).__name__})"
    unfused = deeplab_compile.compile(path, vars=tv_vars, inputs=inputs, fuse=False).to(dev).eval()
    unfused.load_state_dict(fused.state_dict())
    cands_nets["unfused"] = (unfused, lambda y: y)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(1, 3, size, size, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
        cands = {}
        for k, (net, pick) in cands_nets.items():
            net.to(dtype).to(memory_format=torch.channels_last)
            cands[k] = (lambda net=net, pick=pick: pick(net(x)))
        with torch.no_grad():
            r = Timer(dev, warmup=0 if dry else 2, repeats=1 if dry else 5)(cands)
        rows.append({"dtype": str(dtype).replace("torch.", ""), "size": size, **r,
                     "speedup": round(r[base]["min_ms"] / r["compiled (fused)"]["min_ms"], 3)})
        print(f"  v3 net {rows[-1]['dtype']}: x{rows[-1]['speedup']} vs {base}", flush=True)
    return {"rows": rows, "baseline": base_name, "layout": "channels_last, eval, no_grad"}


def bench_train(dev, dry, timer):
    import torch
    import deeplab_compile
    size, batch = (33, 2) if dry else (513, 4)      # BatchNorm needs 2 values per channel
    net = deeplab_compile.compile(os.path.join(ROOT, "netdef", "deeplab_v3plus_mobilenetv2.yaml"), phase="train",
                                  vars={"crop": size}).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    data = torch.randn(batch, 3, size, size, device=dev)
    label = torch.randint(0, 21, (batch, 1, size, size), device=dev).float()

    def step(dtype):
        def f():
            opt.zero_grad()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = net.total_loss(net(data, label))
            loss.backward()
            opt.step()
        return f
    r = Timer(dev, warmup=0 if dry else 1, repeats=1 if dry else 5)({"fp32": step(torch.float32), "bf16 autocast": step(torch.bfloat16)})
    out = {"net": "deeplab_v3plus_mobilenetv2", "batch": batch, "size": size, **r,
           "bf16_vs_fp32": round(r["fp32"]["min_ms"] / r["bf16 autocast"]["min_ms"], 3)}
    print(f"  train step: bf16 x{out['bf16_vs_fp32']} vs fp32", flush=True)
    return out


BENCH_GROUPS = {"aspp_v2": bench_aspp_v2, "v3_head": bench_v3_head, "crf": bench_crf, "v3_net": bench_v3_net,
                "train": bench_train}


def bench_child(path: str, dry: bool) -> int:
    """Runs every benchmark group, writing the JSON after each so that a stopped run keeps
    what it measured; an error in one group is recorded and the next group still runs."""
    import torch
    dev = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if dry:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.backends.cudnn.benchmark = True
    timer = Timer(dev, warmup=0 if dry else 3, repeats=1 if dry else 10)
    res = {"device": str(dev)}
    status = 0
    for name, fn in BENCH_GROUPS.items():
        t = time.time()
        print(f"[gpu_check] bench {name}", flush=True)
        try:
            res[name] = fn(dev, dry, timer)
        except Exception as e:  # noqa: BLE001 - recorded and reported; the next group runs
            import traceback
            res[name] = {"error": f"{type(e).__name__}: {e}", "traceback": tail(traceback.format_exc(), 12)}
            print(res[name]["traceback"], flush=True)
            status = 1
        res[name]["seconds"] = round(time.time() - t, 1)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, path)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return status


# --------------------------------------------------------------------------- 5. report

def targets_table(b: dict) -> list:
    """The issue's targets next to the figures that answer them."""
    def get(group):
        v = b.get(group)
        return v if isinstance(v, dict) and not v.get("error") else None
    lines = ["| what | target | measured | met |", "|---|---|---|---|"]
    a = get("aspp_v2")
    if a:
        fw = [r for r in a["rows"] if r["mode"] == "fwd"]
        lo = min(r["speedup"] for r in fw)
        lines.append(f"| ASPP (v2) forward | at least 1.5x cuDNN | {lo:.2f}x to {max(r['speedup'] for r in fw):.2f}x "
                     f"over {len(fw)} cases | {'yes' if lo >= 1.5 else 'no'} |")
    else:
        lines.append("| ASPP (v2) forward | at least 1.5x cuDNN | not measured | - |")
    h = get("v3_head")
    if h:
        lo = min(r["speedup"] for r in h["rows"])
        lines.append(f"| v3 inference head | at least 1.3x cuDNN | {lo:.2f}x to "
                     f"{max(r['speedup'] for r in h['rows']):.2f}x | {'yes' if lo >= 1.3 else 'no'} |")
    else:
        lines.append("| v3 inference head | at least 1.3x cuDNN | not measured | - |")
    c = get("crf")
    if c and "ours, CUDA" in c:
        ms = c["ours, CUDA"]["min_ms"]
        pyd = f", {c['cuda_vs_pydensecrf']}x pydensecrf" if "cuda_vs_pydensecrf" in c else ", pydensecrf not run"
        lines.append(f"| dense CRF, 10 iterations at 500x375x21 | under 5 ms (about 200x single-threaded "
                     f"pydensecrf) | {ms:.2f} ms{pyd} | {'yes' if ms < 5 else 'no'} |")
    else:
        lines.append("| dense CRF, 10 iterations at 500x375x21 | under 5 ms | not measured on CUDA | - |")
    v = get("v3_net")
    if v:
        fig = ", ".join(f"{r['dtype']} {r['speedup']:.2f}x" for r in v["rows"])
        ok = v["baseline"].startswith("torchvision") and min(r["speedup"] for r in v["rows"]) >= 1.15
        lines.append(f"| whole v3 ResNet-101 inference | at least 1.15x torchvision | {fig} vs {v['baseline']} | "
                     f"{'yes' if ok else 'no'} |")
    else:
        lines.append("| whole v3 ResNet-101 inference | at least 1.15x torchvision | not measured | - |")
    autos = [r["auto_vs_library"] for g in ("aspp_v2", "v3_head") if get(g) for r in get(g)["rows"]]
    if autos:
        lines.append(f"| any case | never slower than the library path (the dispatcher's choice) | "
                     f"auto/library from {min(autos):.2f}x to {max(autos):.2f}x | {'yes' if min(autos) >= 0.95 else 'no'} |")
    return lines


def ms(r):
    return f"{r['min_ms']:.3f} / {r['median_ms']:.3f}"


def render(rep: Report) -> str:
    e, b = rep.env, rep.bench
    head = (f"{e.get('device')}, driver {e.get('driver')}, CUDA {e.get('torch_cuda')}, torch {e.get('torch')}, "
            f"nvcc {e.get('nvcc')}, cuDNN {e.get('cudnn')}")
    out = [f"# GPU check{' (dry run on CPU: plumbing only, no figure here is a GPU measurement)' if rep.dry else ''}",
           "", f"## scripts/gpu_check.sh ({e.get('date')}, {head})", "",
           f"Result: **{'FAILED' if rep.failed else 'passed'}**.", "",
           "| stage | status | seconds (budget) | detail |", "|---|---|---:|---|"]
    for s in rep.stages:
        out.append(f"| {s['stage']} | {s['status']} | {s['seconds']:.0f} ({s['budget_s']}) | "
                   f"{s['detail'].replace('|', '/')} |")
    out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("cuda_tests",)), ""]
    for s in rep.stages:
        if s["status"] == "fail" and s["log_tail"]:
            out += [f"### Log tail: {s['stage']}", "", "```", s["log_tail"], "```", ""]
    out += ["### Targets", ""] + targets_table(b) + [""]
    a = b.get("aspp_v2", {})
    if a.get("rows"):
        out += [f"### ASPP v2 (2048 -> 21, rates 6/12/18/24), ms min / median; baseline: {a['baseline']}", "",
                "| shape | dtype | layout | mode | library | ours | auto | library/ours | library/auto | rel. err |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['shape']} | {r['dtype']} | {r['layout']} | {r['mode']} | {ms(r['library'])} | {ms(r['ours'])} | "
                f"{ms(r['auto'])} | {r['speedup']:.2f}x | {r['auto_vs_library']:.2f}x | {r['rel_err']:.1e} |"
                for r in a["rows"]] + [""]
    h = b.get("v3_head", {})
    if h.get("rows"):
        out += [f"### v3 head (inference, 5 x 256 -> 256), ms min / median; baseline: {h['baseline']}", "",
                "| shape | rates | taps at | dtype | library | ours | ours+taps | auto | speed-up | rel. err |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['shape']} | {'/'.join(map(str, r['rates']))} | {'/'.join(map(str, r['taps_at'])) or '-'} | "
                f"{r['dtype']} | {ms(r['library'])} | {ms(r['ours'])} | {ms(r['ours+taps'])} | {ms(r['auto'])} | "
                f"{r['speedup']:.2f}x | {r['rel_err']:.1e} |" for r in h["rows"]] + [""]
    c = b.get("crf", {})
    if c and not c.get("error"):
        out += [f"### Dense CRF, {c['shape']}, ms min / median ({c['note']}; CPU kernel on {c['cpu_threads']} "
                f"threads)", "", "| implementation | ms |", "|---|---:|"]
        out += [f"| {k} | {ms(v)} |" for k, v in c.items() if isinstance(v, dict)] + [""]
    v = b.get("v3_net", {})
    if v.get("rows"):
        names = [k for k in v["rows"][0] if isinstance(v["rows"][0][k], dict)]
        out += [f"### DeepLab v3 ResNet-101 inference, 1x3x{v['rows'][0]['size']}x{v['rows'][0]['size']}, "
                f"{v['layout']}, ms min / median; baseline: {v['baseline']}", "",
                "| dtype | " + " | ".join(names) + " | speed-up |", "|---|" + "---:|" * (len(names) + 1)]
        out += [f"| {r['dtype']} | " + " | ".join(ms(r[k]) for k in names) + f" | {r['speedup']:.2f}x |"
                for r in v["rows"]] + [""]
    t = b.get("train", {})
    if t and not t.get("error"):
        out += [f"### One training step, {t['net']}, batch {t['batch']} at {t['size']}, ms min / median", "",
                "| precision | ms |", "|---|---:|", f"| fp32 | {ms(t['fp32'])} |",
                f"| bf16 autocast | {ms(t['bf16 autocast'])} |", f"| bf16 speed-up | {t['bf16_vs_fp32']:.2f}x |", ""]
    for k, g in b.items():
        if isinstance(g, dict) and g.get("error"):
            out += [f"### Benchmark error: {k}", "", "```", g["error"], g.get("traceback", ""), "```", ""]
    return "\n".join(out)


def write_atomic(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def out_dir(arg: str | None) -> str:
    return arg or os.environ.get("OUT") or os.path.join(ROOT, "benchmarks")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="check the plumbing on a CPU machine")
    ap.add_argument("--out", help="folder of gpu_report.md and gpu_report.json (default: $OUT, else benchmarks/)")
    ap.add_argument("--bench-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bench_child:
        return bench_child(args.bench_child, args.dry_run)
    budget = DRY_BUDGET if args.dry_run else BUDGET
    dest = out_dir(args.out)
    os.makedirs(dest, exist_ok=True)
    rep = Report(args.dry_run)
    t0 = time.time()
    def left(name):    # the stage's budget, cut so that the whole run ends within TOTAL
        if args.dry_run:
            return budget[name]
        return max(5, min(budget[name], int(TOTAL - (time.time() - t0))))

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        rep.env = versions(args.dry_run)
        built = stage_build(rep, left("build"))
        if built:
            stage_tests(rep, left("tests"), work)
            stage_sanitizer(rep, "memcheck", left("memcheck"), work)
            stage_sanitizer(rep, "racecheck", left("racecheck"), work)
            stage_bench(rep, left("bench"), work)
        else:
            for name in ("tests", "memcheck", "racecheck", "bench"):
                rep.stage(name, "skip", 0, budget[name], "the extension did not build with CUDA")
    rep.env["total_seconds"] = round(time.time() - t0)
    md = os.path.join(dest, "gpu_report.md")
    write_atomic(md, render(rep) + "\n")
    write_atomic(os.path.join(dest, "gpu_report.json"),
                 json.dumps({"dry_run": rep.dry, "failed": rep.failed, "env": rep.env, "stages": rep.stages,
                             "bench": rep.bench, "targets": targets_table(rep.bench)}, indent=1) + "\n")
    print(f"[gpu_check] {'FAILED' if rep.failed else 'passed'} in {rep.env['total_seconds']} s; report: {md}")
    print("\n".join(targets_table(rep.bench)))
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Dense CRF speed: our permutohedral mean-field against pydensecrf, in one run.

Setup: a 500 x 375 PASCAL VOC image (tests/data/voc_sample, resized), 21 labels of noisy
unaries made from its ground truth, 10 mean-field iterations, with DeepLab-LargeFOV's
parameters (4/121/5/3/3) and DeepLab v2 ResNet-101's (4/67/3/3/1), each at both kernel
normalisations: "after" (DeepLab's densecrf, pydensecrf's NORMALIZE_AFTER, the presets'
setting) and "symmetric" (pydensecrf's default NORMALIZE_SYMMETRIC), pydensecrf and ours
alike.

Rows: pydensecrf single-threaded; pydensecrf on 2 processes (it has no threads, so two
images at once; per-image time = wall / images); ours with 1 and 2 threads on one image;
ours on a batch of 2 images with 2 threads (one image per thread); CUDA when a GPU and
the CUDA kernel are present.  "build" is the setup (pydensecrf: creating the CRF, adding
both kernels and running 0 iterations; ours: the op with 0 iterations), "iter" is one
mean-field iteration ((10-iteration time - 0-iteration time) / 10).  The single-process
rows run interleaved, one call of each in turn per repeat, so a drift in machine speed
hits them alike; each figure is the best of --repeats.  The whole interleaved run is done
--runs times: the times are the best over all runs, and the speed-up is given as the
min / median / max over the runs (each run's own pydensecrf time over ours), beside the
1-minute load average at the start of each run.  --write replaces the
"benchmarks/crf.py" section of benchmarks/RESULTS.md with the printed tables, the date
and the device.

    python benchmarks/crf.py [--repeats 3] [--runs 3] [--write]
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

from timing import ROOT, device_line, interleaved, load_average, replace_section, spread

from deeplab_compile.crf import PRESETS  # noqa: E402
from deeplab_compile.ops import backends  # noqa: E402
from deeplab_compile.ops.dense_crf import dense_crf as crf_op  # noqa: E402

H, W, C, ITERS = 375, 500, 21, 10
SAMPLE = os.path.join(ROOT, "tests", "data", "voc_sample", "2007_000129")


def make_inputs(seed: int = 0):
    img = np.array(Image.open(SAMPLE + ".png").convert("RGB").resize((W, H), Image.BILINEAR), dtype=np.uint8)
    gt = np.array(Image.open(SAMPLE + "_label.png").resize((W, H), Image.NEAREST), dtype=np.int64)
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (C, H, W)).astype(np.float32)
    np.put_along_axis(logits, np.minimum(gt, C - 1)[None], np.take_along_axis(logits, np.minimum(gt, C - 1)[None], 0) + 2.0, 0)
    unary = (-torch.log_softmax(torch.from_numpy(logits), 0)).numpy()
    return img, np.ascontiguousarray(unary)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _pydensecrf(img, unary, p, iterations):
    import pydensecrf.densecrf as dcrf
    norm = {"after": dcrf.NORMALIZE_AFTER, "symmetric": dcrf.NORMALIZE_SYMMETRIC}[p.normalization]
    d = dcrf.DenseCRF2D(W, H, C)
    d.setUnaryEnergy(unary.reshape(C, -1))
    d.addPairwiseGaussian(sxy=p.pos_xy_std, compat=p.pos_w, normalization=norm)
    d.addPairwiseBilateral(sxy=p.bi_xy_std, srgb=p.bi_rgb_std, rgbim=img, compat=p.bi_w, normalization=norm)
    if iterations is None:
        return d
    return np.array(d.inference(iterations))


def _pydensecrf_job(args):
    preset, norm, seed = args
    img, unary = make_inputs(seed)
    return _pydensecrf(img, unary, PRESETS[preset].with_(normalization=norm), ITERS).shape


def bench_pydensecrf_procs(preset, norm, repeats, procs=2, images=4):
    ctx = mp.get_context("spawn")  # forking after OpenMP started can deadlock the children
    with ctx.Pool(procs) as pool:
        pool.map(_pydensecrf_job, [(preset, norm, 0)] * procs)      # warm the workers
        wall = best(lambda: pool.map(_pydensecrf_job, [(preset, norm, s) for s in range(images)]), repeats)
    # make_inputs runs inside the workers too; subtract its cost measured here.
    prep = best(lambda: make_inputs(0), repeats)
    return wall / images - prep / procs


def _ours_runner(img, unary, p, threads, batch=1, device="cpu"):
    """A function of the iteration count that runs our op as the row asks (threads, batch)."""
    image = torch.from_numpy(img).permute(2, 0, 1).float()[None].repeat(batch, 1, 1, 1).contiguous().to(device)
    u = torch.from_numpy(unary)[None].repeat(batch, 1, 1, 1).contiguous().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(n):
        torch.set_num_threads(threads)
        crf_op(image, u, p.pos_w, p.pos_xy_std, p.bi_w, p.bi_xy_std, p.bi_rgb_std, n, p.normalization)
        sync()
    return run


def bench_interleaved(cands: dict, repeats: int) -> dict:
    """name -> (build, per-iteration, 10-iteration total) seconds per image.  Each
    candidate is ``(run, images)`` with ``run(iterations)``; every repeat runs all of
    them in turn (0 and 10 iterations), so a change in machine speed hits all rows
    alike, and each keeps its best."""
    calls = {}
    for k, (run, _) in cands.items():
        calls[k, 0] = lambda run=run: run(0)
        calls[k, ITERS] = lambda run=run: run(ITERS)
    times = interleaved(calls, repeats)
    best0 = {k: min(times[k, 0]) / images for k, (_, images) in cands.items()}
    best10 = {k: min(times[k, ITERS]) / images for k, (_, images) in cands.items()}
    return {k: (best0[k], (best10[k] - best0[k]) / ITERS, best10[k]) for k in cands}


def table(preset: str, p, rows, runs: int) -> str:
    """The markdown table of one preset.  ``rows``: (implementation, threads,
    normalization, build, iter, total, speed-ups), times in seconds or None, one
    speed-up per run."""
    ms = lambda v: "-" if v is None else f"{1000 * v:.1f}"
    lines = [f"### {preset} ({p.bi_w:g}/{p.bi_xy_std:g}/{p.bi_rgb_std:g}/{p.pos_w:g}/{p.pos_xy_std:g})", "",
             "| implementation | threads | normalization | build ms | iter ms | total ms (10 iters) "
             f"| speed-up vs pydensecrf 1 thread, same normalization (min / median / max of {runs} runs) |",
             "|---|---|---|---|---|---|---|"]
    for impl, thr, norm, bb, ii, tt, ups in rows:
        lines.append(f"| {impl} | {thr} | {norm} | {ms(bb)} | {ms(ii)} | {ms(tt)} | {spread(ups, 'x')} |")
    return "\n".join(lines)


def bench_preset(preset: str, img, unary, info, repeats: int, runs: int, loads: list) -> str:
    """``runs`` complete interleaved runs of every row of one preset; appends the load
    average at the start of each run to ``loads``."""
    p = PRESETS[preset]
    norms = ("symmetric", "after")   # pydensecrf's default; DeepLab's (the presets')
    cands = {}
    for norm in norms:             # one interleaved run, so both normalisations see the same machine
        q = p.with_(normalization=norm)
        cands.update({
            ("pydensecrf", "1 thread", norm): (lambda n, q=q: _pydensecrf(img, unary, q, n), 1),
            ("ours", "1 thread", norm): (_ours_runner(img, unary, q, 1), 1),
            ("ours", "2 threads", norm): (_ours_runner(img, unary, q, 2), 1),
            ("ours", "2 threads, batch of 2 (per image)", norm): (_ours_runner(img, unary, q, 2, batch=2), 2),
        })
        if torch.cuda.is_available() and "dense_crf" in info["cuda"]:
            cands[("ours", "CUDA", norm)] = (_ours_runner(img, unary, q, 1, device="cuda"), 1)
    res, procs = [], []
    for _ in range(runs):
        loads.append(load_average())
        res.append(bench_interleaved(cands, repeats))
        procs.append({norm: bench_pydensecrf_procs(preset, norm, repeats) for norm in norms})
    best = {k: tuple(min(r[k][i] for r in res) for i in range(3)) for k in cands}
    ref = lambda r, norm: r[("pydensecrf", "1 thread", norm)][2]
    rows = []
    for norm in norms:
        k = ("pydensecrf", "1 thread", norm)
        rows += [(*k, *best[k], [1.0] * runs),
                 ("pydensecrf", "2 processes (per image)", norm, None, None, min(pr[norm] for pr in procs),
                  [ref(r, norm) / pr[norm] for r, pr in zip(res, procs)])]
        rows += [(*k, *best[k], [ref(r, norm) / r[k][2] for r in res])
                 for k in cands if k[0] == "ours" and k[2] == norm]
    return table(preset, p, rows, runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of each row per run (the best counts)")
    ap.add_argument("--runs", type=int, default=3, help="complete interleaved runs (the spread of the speed-ups)")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    info = backends()
    if "dense_crf" not in info["cpu"]:
        print("warning: the compiled CPU kernel is missing; timing the PyTorch reference", file=sys.stderr)
    img, unary = make_inputs()
    loads: list[float] = []
    parts = []
    for preset in ("deeplab_largefov", "deeplab_v2_resnet101"):
        parts.append(bench_preset(preset, img, unary, info, a.repeats, a.runs, loads))
        print("\n" + parts[-1], flush=True)
    gpu = f"{torch.cuda.get_device_name(0)}, " if torch.cuda.is_available() else ""
    head = (f"{datetime.date.today().isoformat()}, {gpu}{device_line()}. {W}x{H} image, {C} labels, "
            f"{ITERS} iterations, best of {a.repeats} calls in each of {a.runs} interleaved runs per preset; "
            f"1-minute load average at the start of each run (LargeFOV's, then v2's): "
            f"{', '.join(f'{v:.1f}' for v in loads)}"
            + " (the average includes this benchmark's own earlier rows, which keep 2 threads or 2 "
              "processes busy, so about 2 is what an otherwise idle 2-core machine shows).")
    print("\n" + head)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if a.write:
        path = replace_section("benchmarks/crf.py", "## benchmarks/crf.py\n\n" + head + "\n\n"
                               + "\n\n".join(parts) + "\n")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark here shares: interleaved timing against a baseline in the same
run, the device line, the load average, and writing to benchmarks/RESULTS.md.

Candidates run interleaved, one call of each in turn per repeat, so a change in machine
load (other jobs on a shared machine) hits all of them alike; each reports its own list of
times, and the scripts take the minimum and/or the median.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from typing import Callable, Hashable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "RESULTS.md")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def interleaved(cands: dict[Hashable, Callable[[], object]], repeats: int, *, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> dict[Hashable, list[float]]:
    """Seconds of each call of each candidate: ``warmup`` untimed rounds, then
    ``repeats`` rounds calling every candidate once in turn.  ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before and after each timed call."""
    sync = sync or (lambda: None)
    times: dict[Hashable, list[float]] = {k: [] for k in cands}
    for _ in range(warmup):
        for f in cands.values():
            f()
            sync()
    for _ in range(repeats):
        for k, f in cands.items():
            sync()
            t = time.perf_counter()
            f()
            sync()
            times[k].append(time.perf_counter() - t)
    return times


def min_median(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def spread(values, suffix: str = "") -> str:
    """``min / median / max`` of per-run figures (ratios), two decimals, each with ``suffix``."""
    v = sorted(values)
    return " / ".join(f"{x:.2f}{suffix}" for x in (v[0], statistics.median(v), v[-1]))


def timeit(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of one function on its own (no baseline to interleave with)."""
    return statistics.median(interleaved({0: fn}, repeats, warmup=warmup)[0])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            if m:
                return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def device_line(device: str = "cpu", threads: int | None = None) -> str:
    """``<GPU name>`` or ``<CPU model>, <n> threads`` (``<n> CPUs`` when no thread count
    is set), then the torch version."""
    import torch
    if str(device).startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = f"{cpu_name()}, " + (f"{threads} threads" if threads else f"{os.cpu_count()} CPUs")
    return f"{name}, torch {torch.__version__}"


def load_average() -> float:
    """The 1-minute load average (nan where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def append_results(text: str) -> str:
    """Append ``text`` to RESULTS.md after a blank line (temporary file + rename)."""
    old = open(RESULTS, encoding="utf-8").read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    return _write(old + "\n" + text.rstrip("\n") + "\n")


def replace_section(name: str, text: str) -> str:
    """Put ``text`` (starting ``## <name>``) in place of RESULTS.md's section of that name,
    or at the end when there is none."""
    old = open(RESULTS, encoding="utf-8").read() if os.path.exists(RESULTS) else "# Benchmark results\n"
    pattern = re.compile(r"## " + re.escape(name) + r"\n.*?(?=\n+## |\Z)", re.S)
    new = pattern.sub(lambda _: text.rstrip("\n"), old) if pattern.search(old) else \
        old.rstrip("\n") + "\n\n" + text
    return _write(new if new.endswith("\n") else new + "\n")


def _write(text: str) -> str:
    from deeplab_compile.io.atomic import atomic_write
    with atomic_write(RESULTS, "w") as f:
        f.write(text)
    return RESULTS

"""benchmarks/crf.py: the speed-up spread over complete interleaved runs and the table
it writes to RESULTS.md (with stand-in timings: nothing is run)."""
import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import crf as bench  # noqa: E402


def test_each_run_gives_its_own_speed_up(monkeypatch):
    # Run r: pydensecrf takes 1.0 s, ours on 1 thread (0.5, 0.25, 0.2) s, everything else 0.5 s.
    ours_1 = iter([0.5, 0.25, 0.2])
    procs = iter([0.8, 0.8, 0.4, 0.4, 0.5, 0.5])   # 2 processes, per image: one per normalisation per run

    def fake_interleaved(cands, repeats):
        t1 = next(ours_1)
        return {k: (0.1, 0.01, 1.0 if k[0] == "pydensecrf" else t1 if k[1] == "1 thread" else 0.5) for k in cands}

    monkeypatch.setattr(bench, "bench_interleaved", fake_interleaved)
    monkeypatch.setattr(bench, "bench_pydensecrf_procs", lambda preset, norm, repeats: next(procs))
    monkeypatch.setattr(bench, "_ours_runner", lambda *a, **k: None)
    monkeypatch.setattr(bench, "load_average", lambda: 0.5)
    loads = []
    text = bench.bench_preset("deeplab_largefov", None, None, {"cuda": []}, repeats=1, runs=3, loads=loads)
    assert loads == [0.5, 0.5, 0.5]
    rows = [line for line in text.splitlines() if line.startswith("| ours | 1 thread |")]
    assert len(rows) == 2                               # symmetric and after
    for row in rows:                                    # best total 200 ms; speed-ups 2, 4 and 5
        assert "| 200.0 | 2.00x / 4.00x / 5.00x |" in row
    two = [line for line in text.splitlines() if line.startswith("| pydensecrf | 2 processes")]
    assert all("| 400.0 | 1.25x / 2.00x / 2.50x |" in row for row in two)
    assert "min / median / max of 3 runs" in text

"""benchmarks/timing.py: the interleaved timing loop and the RESULTS.md writers that
every benchmark script uses."""
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import timing  # noqa: E402


def test_spread_is_min_median_max():
    assert timing.spread([3.0, 1.0, 2.5, 2.0]) == "1.00 / 2.25 / 3.00"
    assert timing.spread([1.234], "x") == "1.23x / 1.23x / 1.23x"


def test_candidates_run_in_turn_after_the_warm_up():
    calls = []
    times = timing.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=2,
                               sync=lambda: calls.append("|"))
    runs = [c for c in calls if c != "|"]
    assert runs == ["a", "b"] * 5
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    assert calls[-3:] == ["|", "b", "|"]           # sync before and after each timed call


def test_min_median_and_the_device_line():
    assert timing.min_median([3.0, 1.0, 2.0]) == (1.0, 2.0)
    import torch
    line = timing.device_line("cpu", 2)
    assert line.endswith(f", 2 threads, torch {torch.__version__}")
    assert timing.device_line().endswith(f"{os.cpu_count()} CPUs, torch {torch.__version__}")


@pytest.fixture
def results(tmp_path, monkeypatch):
    path = tmp_path / "RESULTS.md"
    monkeypatch.setattr(timing, "RESULTS", str(path))
    return path


def test_append_adds_after_a_blank_line(results):
    results.write_text("# Benchmark results\n\nold\n")
    timing.append_results("### new\n\n| a |")
    assert results.read_text() == "# Benchmark results\n\nold\n\n### new\n\n| a |\n"


def test_replace_section_swaps_only_its_own_section(results):
    results.write_text("# R\n\n## benchmarks/crf.py\n\nold crf\n\n## benchmarks/aspp.py\n\naspp\n")
    timing.replace_section("benchmarks/crf.py", "## benchmarks/crf.py\n\nnew crf\n")
    assert results.read_text() == "# R\n\n## benchmarks/crf.py\n\nnew crf\n\n## benchmarks/aspp.py\n\naspp\n"
    timing.replace_section("benchmarks/models.py", "## benchmarks/models.py\n\nm\n")
    assert results.read_text().endswith("aspp\n\n## benchmarks/models.py\n\nm\n")

"""scripts/gpu_check.sh: the dry run on CPU, and the report's logic."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_check  # noqa: E402

STAGES = ["build", "tests", "memcheck", "racecheck", "bench"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ)
    env.pop("OUT", None)
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--dry-run", "--out", str(out)],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    return p, out


def test_dry_run_passes_and_writes_the_report(dry_run):
    p, out = dry_run
    assert p.returncode == 0, p.stdout[-3000:]
    rep = json.loads((out / "gpu_report.json").read_text())
    assert rep["dry_run"] is True and rep["failed"] is False
    assert [s["stage"] for s in rep["stages"]] == STAGES                     # in order
    assert [s["status"] for s in rep["stages"]] == ["skip", "pass", "pass", "pass", "pass"]
    assert "FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=" in rep["env"]["build_command"]
    md = (out / "gpu_report.md").read_text()
    assert md.startswith("# GPU check (dry run") and "## scripts/gpu_check.sh (" in md
    assert f"torch {rep['env']['torch']}" in md and "### Targets" in md
    assert "| ASPP (v2) forward | at least 1.5x cuDNN |" in md
    assert not list(out.glob(".tmp_*"))                                      # written atomically


def test_dry_run_collects_and_skips_the_cuda_tests(dry_run):
    _, out = dry_run
    rep = json.loads((out / "gpu_report.json").read_text())
    c = rep["env"]["cuda_tests"]
    assert c["tests"] >= 100 and c["skipped"] == c["tests"]
    assert any("test_each_kernel_once_small" in t for t in rep["env"]["sanitize_subset"])


def test_dry_run_exercises_every_benchmark_on_cpu(dry_run):
    _, out = dry_run
    b = json.loads((out / "gpu_report.json").read_text())["bench"]
    assert b["device"] == "cpu"
    assert set(gpu_check.BENCH_GROUPS) <= set(b)
    assert not [k for k, v in b.items() if isinstance(v, dict) and v.get("error")]
    rows = b["aspp_v2"]["rows"]
    assert {(r["dtype"], r["mode"]) for r in rows} == {(d, m) for d in ("float32", "bfloat16")
                                                        for m in ("fwd", "fwd+bwd")}
    assert all(r["rel_err"] < 2e-2 for r in rows + b["v3_head"]["rows"])     # the timed kernels compute the sum
    assert {"ours, CPU"} <= set(b["crf"]) and {r["dtype"] for r in b["v3_net"]["rows"]} == {"float32", "bfloat16"}
    assert {"fp32", "bf16 autocast"} <= set(b["train"])


def _row(speedup, auto=1.0, mode="fwd"):
    t = {"min_ms": 1.0, "median_ms": 1.0}
    return {"shape": "s", "dtype": "float32", "layout": "channels_last", "mode": mode, "rel_err": 0.0,
            "library": t, "ours": t, "auto": t, "speedup": speedup, "auto_vs_library": auto}


def test_targets_table_reads_the_figures():
    b = {"aspp_v2": {"rows": [_row(1.6), _row(1.7), _row(0.5, mode="fwd+bwd")], "baseline": "x"},
         "v3_head": {"rows": [_row(1.2, auto=0.9)], "baseline": "x"},
         "crf": {"ours, CUDA": {"min_ms": 4.0, "median_ms": 4.2}, "cuda_vs_pydensecrf": 210.0},
         "v3_net": {"rows": [{"dtype": "float32", "speedup": 1.2}, {"dtype": "bfloat16", "speedup": 1.3}],
                    "baseline": "torchvision deeplabv3_resnet101"}}
    lines = gpu_check.targets_table(b)
    by = {l.split(" | ")[0].lstrip("| "): l for l in lines[2:]}
    assert "1.60x to 1.70x over 2 cases | yes" in by["ASPP (v2) forward"]     # the forward rows only
    assert by["v3 inference head"].endswith("| no |")
    assert "4.00 ms, 210.0x pydensecrf | yes" in by["dense CRF, 10 iterations at 500x375x21"]
    assert by["whole v3 ResNet-101 inference"].endswith("| yes |")
    assert "0.90x to 1.00x | no" in by["any case"]
    b["v3_net"]["baseline"] = "the unfused compiled net"                      # no torchvision: not met
    assert gpu_check.targets_table(b)[5].endswith("| no |")
    assert "not measured" in gpu_check.targets_table({})[2]


def test_sanitizer_summary_parsing():
    assert gpu_check.sanitizer_clean("memcheck", "========= ERROR SUMMARY: 0 errors")
    assert not gpu_check.sanitizer_clean("memcheck", "========= ERROR SUMMARY: 3 errors")
    assert not gpu_check.sanitizer_clean("memcheck", "no summary: the tool did not run")
    assert not gpu_check.sanitizer_clean("racecheck", "RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 "
                                                      "warnings)\n========= ERROR SUMMARY: 0 errors")


def test_a_failing_stage_keeps_its_log_and_later_stages_run(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, timeout, env=None, cwd=ROOT):
        calls.append(cmd)
        if "pytest" in cmd and "--collect-only" not in cmd:
            return 1, "collected\nE   AssertionError: boom\n1 failed", 2.0
        return 0, "tests/test_cuda_ops.py::test_each_kernel_once_small\n", 1.0
    monkeypatch.setattr(gpu_check, "run_cmd", fake_run)
    monkeypatch.setattr(gpu_check, "BENCH_GROUPS", {})
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 1
    rep = json.loads((tmp_path / "gpu_report.json").read_text())
    st = {s["stage"]: s for s in rep["stages"]}
    assert [s["stage"] for s in rep["stages"]] == STAGES
    assert st["tests"]["status"] == "fail" and "AssertionError: boom" in st["tests"]["log_tail"]
    assert st["memcheck"]["status"] == "pass"                                 # ran after the failure
    assert any("bench-child" in " ".join(c) for c in calls)
    assert "### Log tail: tests" in (tmp_path / "gpu_report.md").read_text()


def test_build_failure_skips_the_device_stages(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "versions", lambda dry: {"device": "NVIDIA H100", "capability": "9.0"})
    monkeypatch.setattr(gpu_check, "run_cmd", lambda cmd, timeout, env=None, cwd=ROOT:
                        (1, "nvcc fatal: unsupported gpu architecture", 3.0))
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    rep = json.loads((tmp_path / "gpu_report.json").read_text())
    assert [s["status"] for s in rep["stages"]] == ["fail", "skip", "skip", "skip", "skip"]
    assert "unsupported gpu architecture" in rep["stages"][0]["log_tail"]
    assert rep["env"]["build_command"].startswith("FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 ")

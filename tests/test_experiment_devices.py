"""The experiment tree on several devices: DEV_ID / NUM_GPUS / NUM_PROCS, the global
batch shared among the training processes, torchrun's output, and the training step
in two CPU processes (gloo) against one process with the same batch."""
import os
import subprocess
import sys

import pytest
import torch

from deeplab_compile.experiment.devices import DeviceError, Devices, check_visible, from_env
from deeplab_compile.experiment.launch import OutputFilter
from deeplab_compile.weights import load_snapshot

from conftest import ROOT

VOC = os.path.join(ROOT, "experiments", "voc12", "run_experiment.sh")
NET = "deeplab_largefov_tiny"


def run(exp, **env):
    e = {k: v for k, v in os.environ.items()
         if k not in ("DEV_ID", "NUM_GPUS", "NUM_PROCS", "CUDA_VISIBLE_DEVICES")}
    e.update(EXP=str(exp), PYTHON=sys.executable, DATA_ROOT="", QUIET="1", CRF_JOBS="1")
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", VOC], env=e, capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("env, synthetic, want", [
    ({}, True, Devices("cpu")),
    ({}, False, Devices("0")),
    ({"DEV_ID": "3"}, False, Devices("3")),
    ({"DEV_ID": "CPU"}, False, Devices("cpu")),
    # DeepLab's list of GPUs: one process each, made visible as 0..N-1
    ({"DEV_ID": "2,3"}, False, Devices("0", 2, "2,3", "DEV_ID")),
    ({"DEV_ID": "0,1,2,3", "NUM_GPUS": "4"}, True, Devices("0", 4, "0,1,2,3", "NUM_GPUS")),
    # NUM_GPUS alone: GPUs 0..N-1, on the synthetic set too
    ({"NUM_GPUS": "2"}, True, Devices("0", 2, "0,1", "NUM_GPUS")),
    ({"NUM_GPUS": "1"}, True, Devices("0", 1, None, "NUM_GPUS")),
    # NUM_PROCS: processes on DEV_ID's device; the CPU ones join with gloo
    ({"NUM_PROCS": "2"}, True, Devices("cpu", 2, None, "NUM_PROCS")),
    ({"NUM_PROCS": "2", "DEV_ID": "cpu"}, False, Devices("cpu", 2, None, "NUM_PROCS")),
    ({"NUM_PROCS": "2"}, False, Devices("0", 2, "0,1", "NUM_PROCS")),
    ({"NUM_PROCS": "2", "NUM_GPUS": "2"}, False, Devices("0", 2, "0,1", "NUM_GPUS")),
    # a DEV_ID list is numbered as an outer CUDA_VISIBLE_DEVICES shows the GPUs
    ({"DEV_ID": "0,2", "CUDA_VISIBLE_DEVICES": "4,5,6"}, False, Devices("0", 2, "4,6", "DEV_ID")),
])
def test_devices_from_the_environment(env, synthetic, want):
    assert from_env(env, synthetic=synthetic) == want


@pytest.mark.parametrize("env, words", [
    ({"DEV_ID": "0;1"}, ["DEV_ID='0;1' is not a GPU id, a list of them or cpu", "DEV_ID=0,1,2,3"]),
    ({"DEV_ID": "0,,1"}, ["DEV_ID='0,,1' is not a GPU id"]),
    ({"DEV_ID": "gpu0"}, ["DEV_ID='gpu0' is not a GPU id"]),
    ({"DEV_ID": "-1"}, ["DEV_ID='-1' is not a GPU id"]),
    ({"DEV_ID": "1,1"}, ["names GPU 1 twice"]),
    ({"NUM_GPUS": "two"}, ["NUM_GPUS='two' is not a number of GPUs", "NUM_GPUS=2"]),
    ({"NUM_GPUS": "0"}, ["NUM_GPUS='0' is not a number of GPUs"]),
    ({"NUM_PROCS": "-2"}, ["NUM_PROCS='-2' is not a number of processes"]),
    ({"NUM_GPUS": "2", "DEV_ID": "cpu"}, ["NUM_GPUS=2 with DEV_ID=cpu", "NUM_PROCS=2"]),
    ({"NUM_GPUS": "2", "NUM_PROCS": "4"}, ["NUM_GPUS=2 and NUM_PROCS=4 disagree"]),
    ({"NUM_GPUS": "2", "DEV_ID": "1"}, ["DEV_ID=1 names one GPU but NUM_GPUS=2", "DEV_ID=1,2"]),
    ({"NUM_GPUS": "4", "DEV_ID": "0,1"}, ["DEV_ID=0,1 names 2 GPUs but NUM_GPUS=4"]),
    ({"DEV_ID": "0,3", "CUDA_VISIBLE_DEVICES": "4,5"}, ["DEV_ID names GPU 3", "CUDA_VISIBLE_DEVICES=4,5"]),
])
def test_device_settings_that_cannot_be_used_are_one_line_errors(env, words):
    with pytest.raises(DeviceError) as e:
        from_env(env, synthetic=True)
    text = str(e.value)
    assert "\n" not in text
    for w in words:
        assert w in text, text


def test_more_gpus_than_visible_is_an_error_naming_both_counts():
    check_visible(Devices("0", 2, "0,1", "NUM_GPUS"), 2)
    check_visible(Devices("cpu", 2, None, "NUM_PROCS"), 0)
    with pytest.raises(DeviceError, match=r"NUM_GPUS=4, but only 2 of those GPUs are visible"):
        check_visible(Devices("0", 4, "0,1,2,3", "NUM_GPUS"), 2)
    with pytest.raises(DeviceError, match=r"no CUDA GPU is visible.*NUM_PROCS=2 DEV_ID=cpu"):
        check_visible(Devices("0", 2, "0,1", "DEV_ID"), 0)


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has the GPUs")
def test_num_gpus_without_gpus_stops_before_any_step(tmp_path):
    r = run(tmp_path, NUM_GPUS=2)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("run_experiment: error: NUM_GPUS=2, but ")
    assert not (tmp_path / "cache").exists()


def test_a_malformed_dev_id_stops_the_script_with_one_line(tmp_path):
    r = run(tmp_path, DEV_ID="0:1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == ("run_experiment: error: DEV_ID='0:1' is not a GPU id, a list of them or cpu; "
                                "write DEV_ID=0, DEV_ID=0,1,2,3 or DEV_ID=cpu")


def test_a_batch_the_processes_cannot_share_names_the_config_and_the_fix(tmp_path):
    """The tiny config's batch of 8 in 3 processes: refused before torchrun starts."""
    r = run(tmp_path, NUM_PROCS=3, NUM_IMAGES=6, IMAGE_MIN=40, IMAGE_MAX=48)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    train_yaml = os.path.join(ROOT, "experiments", "voc12", "config", NET, "train.yaml")
    assert err.startswith(f"run_experiment: error: {train_yaml}:"), err
    assert "batch_size 8 is the batch of all 3 processes together and does not divide by 3" in err
    assert "run 1, 2, 4 or 8 processes (NUM_PROCS)" in err and "batch_size a multiple of 3" in err
    assert "torchrun" not in r.stdout and not (tmp_path / "model" / NET).exists()


# --------------------------------------------------------------------------- torchrun's output

TORCHRUN_FAILURE = """\
deeplab-train: error: solver.yaml: unknown solver field 'bas_lr'; did you mean 'base_lr'?
W1207 14:12:01.140000 1932 site-packages/torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 2008 closing signal SIGTERM
deeplab-train: error: solver.yaml: unknown solver field 'bas_lr'; did you mean 'base_lr'?
E1207 14:12:01.208000 1932 site-packages/torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 2) local_rank: 1
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/usr/lib/python3/site-packages/torch/distributed/run.py", line 1032, in <module>
    main()
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
deeplab_compile.cli.train FAILED
------------------------------------------------------------
Root Cause (first observed failure):
  exitcode  : 2 (pid: 1824)
============================================================
"""

# Ctrl-C: the processes snapshot and say how to resume; torchrun's agent reports the signal
TORCHRUN_INTERRUPTED = """\
deeplab-train: stopped by SIGTERM at iteration 615; snapshot m/train_iter_615.pt; continue with --resume m/train_iter_615.pt
Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/torch/distributed/elastic/agent/server/api.py", line 745, in run
    result = self._invoke_run(role)
torch.distributed.elastic.multiprocessing.api.SignalException: Process 13094 got signal: 2

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/torch/distributed/run.py", line 1032, in <module>
"""

CHILD_TRACEBACK = """\
Traceback (most recent call last):
  File "deeplab_compile/training/loop.py", line 10, in train
    raise ValueError("boom")
ValueError: boom
iteration 3, loss 2.5; snapshot model/train_iter_3.pt
"""


def filtered(text: str) -> tuple[list[str], list[str]]:
    """(the lines torchrun's output filter shows on the console, those it only logs)."""
    shown, logged = [], []
    f = OutputFilter(shown.append, logged.append)
    for ln in text.splitlines(keepends=True):
        f.line(ln)
    f.close()
    return shown, logged


def test_torchrun_output_shows_an_error_once_and_keeps_its_report_in_the_log():
    shown, logged = filtered(TORCHRUN_FAILURE)
    assert "".join(shown) == "deeplab-train: error: solver.yaml: unknown solver field 'bas_lr'; did you mean 'base_lr'?\n"
    assert "".join(sorted(shown + logged)) == "".join(sorted(TORCHRUN_FAILURE.splitlines(keepends=True)))


def test_after_ctrl_c_the_console_shows_how_to_resume_and_not_torchruns_traceback():
    shown, logged = filtered(TORCHRUN_INTERRUPTED)
    assert shown == TORCHRUN_INTERRUPTED.splitlines(keepends=True)[:1]


def test_a_training_process_traceback_is_shown_whole():
    shown, logged = filtered(CHILD_TRACEBACK)
    assert "".join(shown) == CHILD_TRACEBACK and logged == []


# --------------------------------------------------------------------------- two processes

@pytest.mark.slow
def test_deeplab_train_under_torchrun_prints_a_setting_error_once(tmp_path):
    bad = tmp_path / "solver.yaml"
    bad.write_text("net: x.yaml\nbas_lr: 0.1\nmax_iter: 1\n")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "deeplab_compile.cli.train", "--solver", str(bad), "--gpu", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert out.count("deeplab-train: error: ") == 1, out[-3000:]
    assert "unknown solver field 'bas_lr'; did you mean 'base_lr'?" in out


# 40 images: 32 to train on, so 3 iterations of 8 stay in the first epoch and the two
# processes' shares (every other image) are exactly the images of one process's
# batches; images of at least 100 pixels fill the 97-pixel crops, so no pixel is
# ignored and each process's mean loss weighs its pixels as the whole batch's does.
TWO_PROCS = {"NUM_IMAGES": 40, "IMAGE_MIN": 100, "IMAGE_MAX": 120, "MAX_ITER": 3, "TEST_CROP": 121}


@pytest.mark.slow
def test_two_cpu_processes_share_the_global_batch_and_equal_one_process(tmp_path):
    """NUM_PROCS=2 on the CPU: the training step runs under torchrun with gloo, each
    process takes 4 of the config's batch of 8, DDP averages the gradients, and the
    snapshot is the one a single process training on batches of 8 writes.  Test, CRF
    and evaluation then run in one process."""
    cache = tmp_path / "cache"
    two = tmp_path / "two"
    r = run(two, NUM_PROCS=2, CACHE_DIR=cache, **TWO_PROCS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 training processes (gloo)" in r.stdout
    assert "[train] torchrun --standalone --nproc_per_node 2 -m deeplab_compile.cli.train" in r.stdout
    snap = load_snapshot(str(two / "model" / NET / "train_iter_3.pt"))
    # both ranks ran: each gave its RNG state to the snapshot
    assert snap["world_size"] == 2 and len(snap["rng"]) == 2 and snap["global_batch"] is True
    assert len(snap["history"]["loss"]) == 3
    log = (two / "log" / NET / "train" / "train.log").read_text()
    assert "batch 8 = 4 x 2 processes" in log
    assert log.count("Optimization done") == 1          # one process writes the log
    # then test, CRF and evaluation, in this process
    test_log = (two / "log" / NET / "test.log").read_text()
    assert test_log.startswith("$ deeplab-test ") and "--gpu cpu" in test_log
    val = [ln.split()[0].rsplit("/", 1)[1][:-4]
           for ln in open(next(cache.glob("synthetic_voc12_*")) / "list" / "val.txt")]
    feats = two / "features" / NET / "val" / "fc8"
    assert len(val) == 8 and all((feats / f"{i}_blob_0.mat").is_file() for i in val)
    for name in ("fc8.json", "crf.json", "summary.txt"):
        assert (two / "res" / NET / "val" / name).is_file(), name

    one = tmp_path / "one"
    r = run(one, CACHE_DIR=cache, RUN_TEST=0, RUN_CRF=0, RUN_EVAL=0, **TWO_PROCS)
    assert r.returncode == 0, r.stdout + r.stderr
    ref = load_snapshot(str(one / "model" / NET / "train_iter_3.pt"))
    assert ref["world_size"] == 1
    assert set(ref["model"]) == set(snap["model"])
    for k, v in ref["model"].items():
        torch.testing.assert_close(snap["model"][k], v, rtol=1e-5, atol=1e-7, msg=k)
    assert snap["history"]["loss"] == pytest.approx(ref["history"]["loss"], rel=1e-5)

    # the step's own command line, by hand: a resume must keep the batch global
    import shlex
    line = (two / "log" / NET / "train.log").read_text().splitlines()[0]
    args = shlex.split(line[2:])
    assert args[:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"] and "--global-batch" in args
    args = [a for a in args[1:] if a != "--global-batch"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args, "-D", "MAX_ITER=4", "--resume",
                        str(two / "model" / NET / "train_iter_3.pt")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    out = r.stdout + r.stderr
    assert r.returncode != 0 and out.count("deeplab-train: error: ") == 1, out[-3000:]
    assert "batch_size was global, this run's is per process" in out


def _bn_config(exp):
    """The tiny config with a BatchNorm that trains (batch statistics) after conv1_1."""
    import shutil
    dst = exp / "config" / "tiny_bn"
    shutil.copytree(os.path.join(ROOT, "experiments", "voc12", "config", NET), dst)
    text = (dst / "train.yaml").read_text()
    anchor = '  - {name: pool1, type: Pooling, bottom: conv1_1'
    assert anchor in text
    (dst / "train.yaml").write_text(text.replace(
        anchor, '  - {name: bn1, type: BatchNorm, bottom: conv1_1, top: conv1_1}\n' + anchor, 1))
    # the config trains NCHW (channels_last: false), which this comparison needs: one
    # process normalizes with torch's batch_norm, whose channels-last CPU kernel rounds
    # differently (about 2e-6 relative against float64, NCHW 1e-7), and conv1_1's bias,
    # right before the BatchNorm, has a gradient that is zero up to that rounding: in
    # channels-last one process's conv1_1 bias ends 2e-3 (relative to its largest value)
    # from the two processes' within 3 iterations, while the two-process runs of the two
    # layouts agree to 4e-7
    assert "\nchannels_last: false" in (dst / "solver.yaml").read_text()


@pytest.mark.slow
def test_batchnorm_that_trains_is_synchronized_so_two_processes_equal_one(tmp_path):
    """With a BatchNorm computing batch statistics, the two processes' SyncBN statistics
    are those of the whole batch of 8: weights and running estimates equal one process's."""
    cache = tmp_path / "cache"
    snaps = {}
    for name, extra in (("two", {"NUM_PROCS": 2}), ("one", {})):
        exp = tmp_path / name
        _bn_config(exp)
        r = run(exp, NET_ID="tiny_bn", CACHE_DIR=cache, RUN_TEST=0, RUN_CRF=0, RUN_EVAL=0, **TWO_PROCS, **extra)
        assert r.returncode == 0, r.stdout + r.stderr
        snaps[name] = load_snapshot(str(exp / "model" / "tiny_bn" / "train_iter_3.pt"))["model"]
        if extra:
            log = (exp / "log" / "tiny_bn" / "train" / "train.log").read_text()
            assert "SyncBatchNorm: 1 layer(s) synchronized across 2 processes" in log, log
    two, one = snaps["two"], snaps["one"]
    assert set(two) == set(one) and "bn1.running_mean" in two
    assert not torch.allclose(one["bn1.running_var"], torch.ones_like(one["bn1.running_var"]))
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, rtol=1e-5, atol=1e-6, msg=k)


# --------------------------------------------------------------------------- the global batch

def test_each_process_takes_its_share_of_the_global_batch(tmp_path):
    from deeplab_compile.training.net import BatchSplitError, build_train_net, split_batch, train_ir
    from deeplab_compile.training.solver import load_solver
    (tmp_path / "list.txt").write_text("/a.jpg /a.png\n")
    path = tmp_path / "solver.yaml"
    path.write_text(f"net: {os.path.join(ROOT, 'netdef', 'deeplab_largefov_tiny.yaml')}\n"
                    "vars: {crop: 33, width: 4}\n"
                    "data:\n"
                    "  source: list.txt\n"
                    "  batch_size: 6\n"
                    "base_lr: 0.01\nmax_iter: 1\n")
    solver = load_solver(str(path))
    _, spec = train_ir(solver)
    assert [split_batch(solver, spec, n) for n in (1, 2, 3, 6)] == [(6, 1), (3, 1), (2, 1), (1, 1)]
    with pytest.raises(BatchSplitError) as e:
        split_batch(solver, spec, 4)
    assert str(e.value) == (f"{path}:5:3: batch_size 6 is the batch of all 4 processes together and does not "
                            "divide by 4; make batch_size a multiple of 4, or run 1, 2, 3 or 6 processes")
    net, spec = build_train_net(solver, seed=0, processes=3)
    assert spec.batch_size == 2 and net.net.inputs["data"][0] == 2


def test_iter_size_takes_the_part_of_the_processes_the_batch_cannot(tmp_path):
    """DeepLab v2's batch 1 x iter_size 10: in 2 processes each runs 1 x 5.  A batch of 4
    x iter_size 3 cannot go to 8 processes (the batch takes 4 of them, 3 passes not 2)."""
    from deeplab_compile.training.net import BatchSplitError, split_batch, train_ir
    from deeplab_compile.training.solver import load_solver
    (tmp_path / "list.txt").write_text("/a.jpg /a.png\n")

    def solver_of(batch, iter_size):
        path = tmp_path / f"solver_{batch}_{iter_size}.yaml"
        path.write_text(f"net: {os.path.join(ROOT, 'netdef', 'deeplab_largefov_tiny.yaml')}\n"
                        "vars: {crop: 33, width: 4}\n"
                        f"data:\n  source: list.txt\n  batch_size: {batch}\n"
                        f"iter_size: {iter_size}\nbase_lr: 0.01\nmax_iter: 1\n")
        solver = load_solver(str(path))
        return solver, train_ir(solver)[1], path

    solver, spec, _ = solver_of(1, 10)
    assert [split_batch(solver, spec, n) for n in (1, 2, 5, 10)] == [(1, 10), (1, 5), (1, 2), (1, 1)]
    solver, spec, _ = solver_of(2, 3)
    assert [split_batch(solver, spec, n) for n in (2, 3, 6)] == [(1, 3), (2, 1), (1, 1)]
    solver, spec, path = solver_of(4, 3)
    with pytest.raises(BatchSplitError) as e:
        split_batch(solver, spec, 8)
    assert str(e.value) == (f"{path}:5:3: batch_size 4 x iter_size 3 is the batch of all 8 processes together "
                            "and does not divide by 8; make batch_size a multiple of 8, or run 1, 2, 3, 4, 6 "
                            "or 12 processes")


@pytest.mark.slow
def test_a_deeplab_prototxt_config_trains_in_two_processes(tmp_path):
    """DeepLab's own solver.prototxt, whose paths the experiment reads as run_pascal.sh
    did: the processes load the solver as the step read it."""
    from deeplab_exper import write_config
    exp = tmp_path / "exper" / "voc12"
    write_config(exp / "config" / "my_deeplab", "new", max_iter=2)
    r = run(exp, NET_ID="my_deeplab", NUM_PROCS=2, NUM_IMAGES=16, IMAGE_MIN=40, IMAGE_MAX=56, RUN_CRF=0,
            MAX_ITER="", TEST_CROP="")
    assert r.returncode == 0, r.stdout + r.stderr
    log = (exp / "log" / "my_deeplab" / "train.log").read_text()
    solver = exp / "log" / "my_deeplab" / "train_solver.yaml"
    assert log.startswith(f"$ torchrun --standalone --nproc_per_node 2 -m deeplab_compile.cli.train --solver {solver} ")
    snap = load_snapshot(str(exp / "model" / "my_deeplab" / "train_iter_2.pt"))
    assert snap["world_size"] == 2 and snap["global_batch"] is True
    assert (exp / "res" / "my_deeplab" / "val" / "fc8.json").is_file()

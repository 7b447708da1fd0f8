"""Training runtime: resume equivalence, snapshots, NaN stop, Ctrl-C, weights, CLI, and a
2-process DistributedDataParallel run with gloo."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from deeplab_compile.data.synthetic import generate
from deeplab_compile.io.checkpoint import CheckpointError
from deeplab_compile.training.loop import TrainingDiverged, TrainingInterrupted, train
from deeplab_compile.training.solver import load_solver
from deeplab_compile.weights import WeightsError, init_weights, load_snapshot

from conftest import NETDEF, ROOT

TINY = os.path.join(NETDEF, "deeplab_largefov_tiny.yaml")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("syn") / "voc"), num_images=12, min_size=40, max_size=48, seed=5)


def write_solver(tmp_path, syn, extra="", name="solver.yaml", net=TINY, data_extra=""):
    p = tmp_path / name
    p.write_text(textwrap.dedent(f"""\
        net: {net}
        vars: {{crop: 33, width: 4}}
        data:
          source: {syn}/list/train.txt
          root_folder: {syn}
          batch_size: 2
          mirror: true
          shuffle: true
          scale_factors: [0.75, 1.0, 1.25]
          preprocess: tf
          num_workers: 0
        {data_extra}
        base_lr: 0.01
        lr_policy: step
        gamma: 0.5
        stepsize: 3
        max_iter: 8
        momentum: 0.9
        weight_decay: 0.0005
        iter_size: 2
        display: 2
        snapshot: 4
        snapshot_prefix: {tmp_path}/model/run
        random_seed: 3
        """) + extra)
    return str(p)


def state(path):
    return load_snapshot(path)["model"]


def test_resume_is_bit_identical(tmp_path, syn):
    s = load_solver(write_solver(tmp_path, syn))
    straight = train(s, progress=False, echo=lambda *_: None)
    assert straight.iter == 8 and straight.snapshot.endswith("run_iter_8.pt")
    full = state(straight.snapshot)
    half = str(tmp_path / "model" / "run_iter_4.pt")
    assert os.path.exists(half)
    os.rename(straight.snapshot, str(tmp_path / "straight.pt"))
    resumed = train(s, resume=half, progress=False, echo=lambda *_: None)
    assert resumed.iter == 8
    again = state(resumed.snapshot)
    assert full.keys() == again.keys()
    for k in full:
        assert torch.equal(full[k], again[k]), k
    snap = load_snapshot(resumed.snapshot)
    assert snap["iter"] == 8 and len(snap["history"]["loss"]) == 8 and snap["rng"]
    assert "history" in snap["optimizer"]["state"][0]
    log = open(tmp_path / "model" / "log" / "train.log").read()
    assert "Resuming from" in log and "Iteration 8" in log
    assert os.path.getsize(tmp_path / "model" / "log" / "loss.png") > 1000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "model" / "log")) or \
        "TensorBoard event files are not written" in log
    assert not [f for f in os.listdir(tmp_path / "model") if f.endswith(".tmp.pt")]


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_last_snapshot(tmp_path, syn):
    s = load_solver(write_solver(tmp_path, syn, "clip_gradients: -1\n"))
    s.base_lr, s.lr_policy, s.snapshot, s.iter_size = 1e30, "fixed", 2, 1
    s.warmup_iter, s.warmup_lr = 2, 1e-4          # two sane iterations, then a huge rate
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at iteration \d+.*last good snapshot is "
                                               r".*run_iter_2.pt"):
        train(s, progress=False, echo=lambda *_: None)
    files = sorted(os.listdir(tmp_path / "model"))
    assert "run_iter_2.pt" in files and all(not f.endswith(".tmp.pt") for f in files)
    load_snapshot(str(tmp_path / "model" / "run_iter_2.pt"))


def test_ctrl_c_writes_a_snapshot_of_the_last_finished_iteration(tmp_path, syn):
    s = load_solver(write_solver(tmp_path, syn))
    s.snapshot = 0

    def echo(line):
        if line.startswith("Iteration 2 "):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match=r"interrupted at iteration 2; snapshot .*run_iter_2.pt") as e:
        train(s, progress=False, echo=echo)
    assert "--resume" in str(e.value)
    assert load_snapshot(str(tmp_path / "model" / "run_iter_2.pt"))["iter"] == 2


def test_weights_that_do_not_fit_give_a_table(tmp_path, syn):
    import deeplab_compile
    net = deeplab_compile.compile(TINY, phase="train", vars={"width": 4})
    other = deeplab_compile.compile(TINY, phase="train", vars={"width": 4, "num_classes": 5})
    torch.save(other.state_dict(), tmp_path / "w.pt")
    with pytest.raises(WeightsError) as e:
        init_weights(net, str(tmp_path / "w.pt"))
    msg = str(e.value)
    assert "2 with the wrong shape" in msg.splitlines()[0]
    rows = msg.splitlines()[2:]
    assert [r.split()[2] for r in rows] == ["fc8.weight", "fc8.bias"]
    assert rows[0].split()[3:] == ["5x64x1x1", "21x64x1x1"]
    partial = {k: v for k, v in other.state_dict().items() if not k.startswith("fc8")}
    torch.save(partial, tmp_path / "p.pt")
    info = init_weights(net, str(tmp_path / "p.pt"))
    assert info.missing == ["fc8.weight", "fc8.bias"] and "fc8.weight" not in info.loaded
    torch.testing.assert_close(net.state_dict()["conv1_1.weight"], partial["conv1_1.weight"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        init_weights(net, str(tmp_path / "junk.pt"))


def run_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def test_cli_errors_are_one_line_exit_2(tmp_path, syn):
    bad = tmp_path / "bad.yaml"
    bad.write_text("net: x.yaml\nbase_lr: 0.1\nmax_iter: 2\nsnapshot_prefx: m\n")
    r = run_cli("-m", "deeplab_compile.cli.train", "--solver", str(bad), "--gpu", "cpu")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "bad.yaml:4:1: unknown solver field 'snapshot_prefx'; did you mean 'snapshot_prefix'?" in r.stderr
    s = write_solver(tmp_path, syn, name="ok.yaml")
    r = run_cli("-m", "deeplab_compile.cli.train", "--solver", s, "--gpu", "cpu", "--resume", str(bad))
    assert r.returncode == 2 and "cannot read" in r.stderr or "not a training snapshot" in r.stderr


DIST_NET = """\
name: bn_net
vars: {num_classes: 21, crop: 33}
inputs:
  data: [3, "${crop}", "${crop}"]
  label: [1, "${crop}", "${crop}"]
layers:
  - {name: conv1, type: Convolution, bottom: data, num_output: 8, kernel_size: 3, pad: 1, weight_filler: {type: msra}}
  - {name: bn1, type: BatchNorm, bottom: conv1, top: conv1}
  - {name: scale1, type: Scale, bottom: conv1, top: conv1, bias_term: true}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - {name: fc8, type: Convolution, bottom: conv1, num_output: "${num_classes}", kernel_size: 1,
     weight_filler: {type: gaussian, std: 0.01}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [fc8, label], ignore_label: 255}
"""


DIST_TEST_NET = """\
name: bn_net
vars: {num_classes: 21, crop: 49}
inputs:
  data: [3, "${crop}", "${crop}"]
layers:
  - {name: conv1, type: Convolution, bottom: data, num_output: 8, kernel_size: 3, pad: 1}
  - {name: bn1, type: BatchNorm, bottom: conv1, top: conv1}
  - {name: scale1, type: Scale, bottom: conv1, top: conv1, bias_term: true}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - {name: fc8, type: Convolution, bottom: conv1, num_output: "${num_classes}", kernel_size: 1}
"""

BN_STATS = ("bn1.running_mean", "bn1.running_var", "bn1.running_weight")


def dist_solver(folder, syn, *, batch, max_iter, snapshot, extra=""):
    """A solver for DIST_NET: crops smaller than every image (no padding, so every
    process has the same pixel count), no shuffling, one scale."""
    folder.mkdir(parents=True, exist_ok=True)
    net = folder / "bn.yaml"
    net.write_text(DIST_NET)
    path = write_solver(folder, syn, extra=extra, name="solver.yaml", net=str(net))
    text = open(path).read().replace("batch_size: 2", f"batch_size: {batch}")
    text = text.replace("scale_factors: [0.75, 1.0, 1.25]", "scale_factors: [1.0]")
    text = text.replace("vars: {crop: 33, width: 4}", "vars: {crop: 33}").replace("iter_size: 2", "iter_size: 1")
    text = text.replace("max_iter: 8", f"max_iter: {max_iter}").replace("shuffle: true", "shuffle: false")
    text = text.replace("snapshot: 4", f"snapshot: {snapshot}").replace("display: 2", "display: 1")
    open(path, "w").write(text)
    return path


TORCHRUN = ("-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0")


def torchrun_train(solver, *args, timeout=240):
    return run_cli(*TORCHRUN, "-m", "deeplab_compile.cli.train", "--solver", solver, "--gpu", "cpu",
                   "--no-progress", *args, env={"OMP_NUM_THREADS": "1"}, timeout=timeout)


@pytest.fixture(scope="module")
def sync_bn_run(tmp_path_factory, syn):
    """4 iterations in 2 processes with SyncBatchNorm, snapshots at 2 and 4."""
    folder = tmp_path_factory.mktemp("sync")
    two = dist_solver(folder, syn, batch=2, max_iter=4, snapshot=2, extra="sync_bn: true\n")
    r = torchrun_train(two)
    assert r.returncode == 0, r.stderr[-3000:]
    return folder, two


def test_two_process_gloo_run_equals_one_process_with_the_whole_batch(tmp_path, syn, sync_bn_run):
    """2 processes x batch 2 with SyncBatchNorm == 1 process x batch 4 (same images, the
    same BatchNorm statistics, gradients averaged by DDP); the snapshot holds the net's
    own tensor names (bn1.running_mean), not those of a SyncBN or DDP wrapper."""
    folder, _ = sync_bn_run
    one = dist_solver(tmp_path / "one", syn, batch=4, max_iter=4, snapshot=0)
    ref = train(load_solver(one), progress=False, echo=lambda *_: None)
    a = state(ref.snapshot)
    snap = load_snapshot(str(folder / "model" / "run_iter_4.pt"))
    assert snap["world_size"] == 2 and len(snap["rng"]) == 2
    b = snap["model"]
    assert set(b) == set(a)
    assert set(BN_STATS) <= set(b)
    for k, v in b.items():
        torch.testing.assert_close(v, a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_sync_bn_snapshot_resumes_in_two_processes_and_tests_with_its_statistics(tmp_path, syn, sync_bn_run,
                                                                                 monkeypatch):
    folder, two = sync_bn_run
    straight = load_snapshot(str(folder / "model" / "run_iter_4.pt"))["model"]
    os.rename(folder / "model" / "run_iter_4.pt", folder / "straight.pt")
    r = torchrun_train(two, "--resume", str(folder / "model" / "run_iter_2.pt"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    snap = str(folder / "model" / "run_iter_4.pt")
    resumed = load_snapshot(snap)["model"]
    assert set(resumed) == set(straight)
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-5, atol=1e-6, msg=k)
    # trained statistics, not BatchNorm's defaults
    assert not torch.allclose(resumed["bn1.running_mean"], torch.zeros(8))
    assert not torch.allclose(resumed["bn1.running_var"], torch.ones(8))
    assert float(resumed["bn1.running_weight"]) > 0

    # deeplab-test from the snapshot: the net it runs holds the snapshot's statistics
    import deeplab_compile.weights as weights_mod
    from deeplab_compile.cli.test import main as test_main
    used = []

    def spy(real):
        def f(net, *a, **kw):
            used.append(net)
            return real(net, *a, **kw)
        return f

    # deeplab-test reads a .pt once and checks it against the net (check_state_dict);
    # other files go through load_weights
    monkeypatch.setattr(weights_mod, "load_weights", spy(weights_mod.load_weights))
    monkeypatch.setattr(weights_mod, "check_state_dict", spy(weights_mod.check_state_dict))
    net = tmp_path / "test.yaml"
    net.write_text(DIST_TEST_NET)
    rc = test_main(["--net", str(net), "--weights", snap, "--list", f"{syn}/list/val.txt", "--root", syn,
                    "--preprocess", "tf", "--features", str(tmp_path / "fc8"), "--gpu", "cpu", "--workers", "0",
                    "--no-progress"])
    assert rc == 0 and len(used) == 1
    tested = used[0].state_dict()
    for k in BN_STATS:
        assert torch.equal(tested[k], resumed[k]), k
    assert len(os.listdir(tmp_path / "fc8")) == len(open(f"{syn}/list/val.txt").read().split("\n")) - 1


def test_a_snapshot_missing_batchnorm_statistics_does_not_load(tmp_path, syn, sync_bn_run):
    folder, _ = sync_bn_run
    model = load_snapshot(str(folder / "model" / "run_iter_2.pt"))["model"]
    wrapped = {k.replace("bn1.", "bn1.bn."): v for k, v in model.items()}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    net = tmp_path / "test.yaml"
    net.write_text(DIST_TEST_NET)
    r = run_cli("-m", "deeplab_compile.cli.test", "--net", str(net), "--weights", str(tmp_path / "wrapped.pt"),
                "--list", f"{syn}/list/val.txt", "--root", syn, "--gpu", "cpu", "--no-progress")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "bn1.running_mean" in r.stderr and "missing" in r.stderr
    # --resume from a snapshot without a BatchNorm statistic: the same table, nothing loaded
    snap = load_snapshot(str(folder / "model" / "run_iter_2.pt"))
    del snap["model"]["bn1.running_var"]
    snap["world_size"] = 1
    torch.save(snap, tmp_path / "partial_iter_2.pt")
    with pytest.raises(WeightsError, match=r"layer .bn1.: .*\(bn1.running_var\) has no blob in the file") as e:
        train(load_solver(str(folder / "solver.yaml")), resume=str(tmp_path / "partial_iter_2.pt"),
              progress=False, echo=lambda *_: None, log_dir=str(tmp_path / "log"))
    assert "bn1.running_var" in str(e.value)
    # the fix said is one that exists for a resume: no flag loads half a snapshot
    assert "resumes only the net it was written by" in str(e.value)
    assert "--allow-missing" not in str(e.value)


def test_the_logged_loss_is_the_mean_over_the_processes(tmp_path, syn):
    """2 processes read different images; the loss in the history and the log is the
    mean of the two processes' losses, not process 0's."""
    from deeplab_compile.data import pipeline_for
    from deeplab_compile.training.net import build_train_net
    path = dist_solver(tmp_path, syn, batch=2, max_iter=1, snapshot=0)
    r = torchrun_train(path)
    assert r.returncode == 0, r.stderr[-3000:]
    logged = load_snapshot(str(tmp_path / "model" / "run_iter_1.pt"))["history"]["loss"]
    solver = load_solver(path)
    losses = []
    for rank in range(2):
        net, spec = build_train_net(solver, seed=solver.random_seed)
        pipe = pipeline_for(net, "train", spec, seed=solver.random_seed, rank=rank, world_size=2, num_workers=0)
        batch = next(iter(pipe))
        with torch.no_grad():
            losses.append(float(net.total_loss(net(*pipe.feeds(batch, "cpu")))))
    assert abs(losses[0] - losses[1]) > 1e-4          # the data differ
    assert logged == pytest.approx([(losses[0] + losses[1]) / 2], rel=1e-5)
    log = open(tmp_path / "model" / "log" / "train.log").read()
    shown = [float(ln.split("loss = ")[1].split(",")[0]) for ln in log.splitlines() if "Iteration 1 " in ln]
    assert shown == pytest.approx([(losses[0] + losses[1]) / 2], rel=1e-5), log


def _children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
        return int(env[b"RANK"]) if b"RANK" in env else None
    except (OSError, ValueError):
        return None


def test_a_process_that_dies_ends_the_others_with_one_line_naming_it(tmp_path, syn):
    path = dist_solver(tmp_path, syn, batch=2, max_iter=100000, snapshot=0)
    proc = subprocess.Popen([sys.executable, *TORCHRUN, "-m", "deeplab_compile.cli.train", "--solver", path,
                             "--gpu", "cpu", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
    log = tmp_path / "model" / "log" / "train.log"
    try:
        deadline = time.monotonic() + 120
        victim = None
        while time.monotonic() < deadline and proc.poll() is None:
            if victim is None:
                victim = next((p for p in _children(proc.pid) if _rank_of(p) == 1), None)
            if victim and log.exists() and "Iteration 2 " in log.read_text():
                break
            time.sleep(0.2)
        assert victim is not None and proc.poll() is None, "the run did not start"
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    lines = [ln for ln in err.splitlines() if "error: " in ln and "rank" in ln]
    assert len(lines) == 1, err[-3000:]
    assert f"the process of rank 1 (pid {victim}) died at iteration" in lines[0] and "rank 0 stops" in lines[0]
    # no traceback from the surviving process (torchrun's own summary may follow)
    assert "gloo" not in err.lower() and "deeplab_compile/training" not in err, err[-3000:]


def test_sigterm_writes_a_snapshot_and_says_how_to_resume(tmp_path, syn):
    path = write_solver(tmp_path, syn)
    text = open(path).read().replace("max_iter: 8", "max_iter: 100000").replace("display: 2", "display: 1")
    open(path, "w").write(text.replace("snapshot: 4", "snapshot: 0"))
    proc = subprocess.Popen([sys.executable, "-m", "deeplab_compile.cli.train", "--solver", path, "--gpu", "cpu",
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    log = tmp_path / "model" / "log" / "train.log"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and "Iteration 2 " in log.read_text():
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("deeplab-train: stopped by SIGTERM")]
    assert len(line) == 1, err[-2000:]
    it = int(line[0].split("at iteration ")[1].split(";")[0])
    snap = str(tmp_path / "model" / f"run_iter_{it}.pt")
    assert it >= 2 and f"snapshot {snap}; continue with --resume {snap}" in line[0]
    assert load_snapshot(snap)["iter"] == it
    assert "Interrupted (SIGTERM)" in log.read_text()


def test_stale_temporary_snapshot_files_are_removed_at_start(tmp_path, syn):
    s = load_solver(write_solver(tmp_path, syn))
    model = tmp_path / "model"
    model.mkdir()
    stale = [model / ".run_iter_4.k2x_9q.tmp.pt", model / ".run_iter_12.abcdefgh.tmp.pt"]
    kept = [model / ".other_iter_4.k2x_9q.tmp.pt", model / "run_iter_4.pt.bak", model / "notes.txt",
            model / ".run_iter_4.k2x_9q.tmp.ptx"]
    for f in stale + kept:
        f.write_bytes(b"partial")
    train(s, progress=False, echo=lambda *_: None, max_iter=1)
    assert not [f for f in stale if f.exists()]
    assert all(f.exists() for f in kept)
    log = (model / "log" / "train.log").read_text()
    assert "Removed 2 temporary file(s)" in log and ".run_iter_12.abcdefgh.tmp.pt" in log


def test_after_a_nan_the_last_good_snapshot_is_one_whose_weights_give_a_finite_loss(tmp_path, syn):
    """With snapshots every iteration, the one written at the diverging iteration holds
    finite but huge weights (about 1e22) whose loss is NaN: the message names the one
    before it; when even the first snapshot is bad, it says there is none."""
    s = load_solver(write_solver(tmp_path, syn, "clip_gradients: -1\n"))
    s.base_lr, s.lr_policy, s.snapshot, s.iter_size = 1e4, "fixed", 1, 1
    with pytest.raises(TrainingDiverged) as e:
        train(s, progress=False, echo=lambda *_: None)
    msg = str(e.value)
    at = int(msg.split("at iteration ")[1].split(";")[0])
    assert at >= 2, msg
    bad = load_snapshot(str(tmp_path / "model" / f"run_iter_{at}.pt"))["model"]
    assert all(bool(torch.isfinite(v).all()) for v in bad.values())          # finite, but diverged
    assert f"the last good snapshot is {tmp_path / 'model' / f'run_iter_{at - 1}.pt'};" in msg
    # resuming from the named snapshot runs its first iteration with a finite loss
    with pytest.raises(TrainingDiverged, match=rf"at iteration {at}\b"):
        train(s, resume=str(tmp_path / "model" / f"run_iter_{at - 1}.pt"), progress=False, echo=lambda *_: None)
    # resuming from the bad one diverges at once: no good snapshot
    with pytest.raises(TrainingDiverged, match=rf"at iteration {at}; no good snapshot exists"):
        train(s, resume=str(tmp_path / "model" / f"run_iter_{at}.pt"), progress=False, echo=lambda *_: None)
    other = tmp_path / "other"
    other.mkdir()
    s = load_solver(write_solver(other, syn, "clip_gradients: -1\n"))
    s.base_lr, s.lr_policy, s.snapshot, s.iter_size = 1e30, "fixed", 1, 1
    with pytest.raises(TrainingDiverged, match=r"at iteration 1; no good snapshot exists") as e:
        train(s, progress=False, echo=lambda *_: None)
    assert "last good" not in str(e.value) and os.path.exists(other / "model" / "run_iter_1.pt")


NO_BN_NET = "\n".join(line for line in DIST_NET.splitlines()
                      if "BatchNorm" not in line and "type: Scale" not in line) + "\n"


@pytest.mark.slow
def test_a_global_batch_of_one_splits_its_iter_size_among_two_processes(tmp_path, syn):
    """DeepLab v2's batch 1 x iter_size 2 as the global batch of 2 processes: each runs
    1 x 1, and the snapshot equals one process running 1 x 2 (DDP averages the two
    processes' gradients as iter_size averages its passes)."""
    def solver(folder, processes):
        path = dist_solver(folder, syn, batch=1, max_iter=2, snapshot=0)
        (folder / "bn.yaml").write_text(NO_BN_NET)
        text = open(path).read().replace("iter_size: 1", "iter_size: 2")
        assert "iter_size: 2" in text
        open(path, "w").write(text)
        return path

    one = train(load_solver(solver(tmp_path / "one", 1)), progress=False, echo=lambda *_: None)
    two = solver(tmp_path / "two", 2)
    r = torchrun_train(two, "--global-batch")
    assert r.returncode == 0, r.stderr[-3000:]
    snap = load_snapshot(str(tmp_path / "two" / "model" / "run_iter_2.pt"))
    assert snap["world_size"] == 2 and snap["global_batch"] is True
    ref = state(one.snapshot)
    assert set(snap["model"]) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(snap["model"][k], v, rtol=1e-5, atol=1e-7, msg=k)
    assert snap["history"]["loss"] == pytest.approx(load_snapshot(one.snapshot)["history"]["loss"], rel=1e-5)

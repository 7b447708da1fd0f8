"""Training runtime: resume equivalence, snapshots, NaN stop, Ctrl-C, weights, CLI, and a
2-process DistributedDataParallel run with gloo."""
import os
import signal
import subprocess
import sys
import textwrap

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


def test_two_process_gloo_run_equals_one_process_with_the_whole_batch(tmp_path, syn):
    """2 processes x batch 2 with SyncBatchNorm == 1 process x batch 4 (same images, the
    same BatchNorm statistics, gradients averaged by DDP)."""
    net = tmp_path / "bn.yaml"
    net.write_text(DIST_NET)
    common = dict(net=str(net), data_extra="")
    # crops smaller than every image: no padding, so every process has the same pixel count
    one = write_solver(tmp_path / "one", syn, name="one.yaml", **common) if (tmp_path / "one").mkdir() is None else None
    two = write_solver(tmp_path / "two", syn, name="two.yaml", extra="sync_bn: true\n", **common) \
        if (tmp_path / "two").mkdir() is None else None
    for path, batch in ((one, 4), (two, 2)):
        text = open(path).read().replace("batch_size: 2", f"batch_size: {batch}").replace("scale_factors: [0.75, 1.0, 1.25]", "scale_factors: [1.0]")
        text = text.replace("vars: {crop: 33, width: 4}", "vars: {crop: 33}").replace("iter_size: 2", "iter_size: 1")
        text = text.replace("max_iter: 8", "max_iter: 4").replace("shuffle: true", "shuffle: false")
        open(path, "w").write(text)
    r = run_cli("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0" if False else
                "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "-m", "deeplab_compile.cli.train",
                "--solver", two, "--gpu", "cpu", "--no-progress", env={"OMP_NUM_THREADS": "1"}, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = train(load_solver(one), progress=False, echo=lambda *_: None)
    a = state(ref.snapshot)
    snap = load_snapshot(str(tmp_path / "two" / "model" / "run_iter_4.pt"))
    assert snap["world_size"] == 2 and len(snap["rng"]) == 2
    b = snap["model"]
    keys = {k.replace("bn1.bn.", "bn1.") for k in b}
    assert keys == set(a)
    for k, v in b.items():
        torch.testing.assert_close(v, a[k.replace("bn1.bn.", "bn1.")], rtol=1e-4, atol=1e-5, msg=k)

"""Weights files from elsewhere are data, never code: one reader, weights_only everywhere.

A pickle that asks to run ``os.system`` is planted behind every entry point that takes a
weights file; nothing may run, the exit code is 2, and the one-line message says the file
is not a plain weights file.  Also: deeplab-predict reads the snapshots deeplab-train
writes, and a mismatch is one whole table, never cut.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import deeplab_compile
from deeplab_compile.data.synthetic import generate
from deeplab_compile.weights import WeightsError, init_weights, load_snapshot, load_weights, read_state_dict

from conftest import NETDEF, ROOT

TINY = os.path.join(NETDEF, "deeplab_largefov_tiny.yaml")
VARS = {"crop": 33, "width": 4}


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path, marker, base=None):
    """A .pt file: ``base`` (a dict) with one extra entry whose unpickling runs a command."""
    obj = dict(base or {})
    obj["extra"] = _Payload(marker)
    torch.save(obj, path)
    return str(path)


def run(module, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": ROOT})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic set, a 2-iteration training run and its snapshot."""
    tmp = tmp_path_factory.mktemp("trust")
    syn = generate(str(tmp / "voc"), num_images=6, min_size=40, max_size=44, seed=2)
    solver = tmp / "solver.yaml"
    solver.write_text(textwrap.dedent(f"""\
        net: {TINY}
        vars: {{crop: 33, width: 4}}
        data: {{source: {syn}/list/train.txt, root_folder: {syn}, batch_size: 2, preprocess: tf, num_workers: 0}}
        base_lr: 0.001
        lr_policy: fixed
        max_iter: 2
        snapshot: 2
        snapshot_prefix: {tmp}/model/run
        random_seed: 1
        """))
    r = run("deeplab_compile.cli.train", "--solver", solver, "--gpu", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    snap = tmp / "model" / "run_iter_2.pt"
    assert snap.is_file()
    return {"tmp": tmp, "syn": syn, "solver": str(solver), "snapshot": str(snap)}


def _assert_refused(r, marker):
    assert not os.path.exists(marker), "the planted pickle ran"
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip()
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    assert "not a plain weights file" in errors[0] and "posix.system" in errors[0], err


def test_train_weights_refuses_a_pickle_that_runs_code(world):
    marker = world["tmp"] / "pwned_train_weights"
    bad = plant(world["tmp"] / "evil_w.pt", marker, deeplab_compile.compile(TINY, phase="train", vars=VARS).state_dict())
    r = run("deeplab_compile.cli.train", "--solver", world["solver"], "--gpu", "cpu", "--no-progress",
            "--weights", bad)
    _assert_refused(r, marker)


def test_train_resume_refuses_a_real_snapshot_with_one_malicious_entry(world):
    marker = world["tmp"] / "pwned_resume"
    snap = torch.load(world["snapshot"], weights_only=True)
    bad = plant(world["tmp"] / "model" / "evil_iter_2.pt", marker, snap)
    r = run("deeplab_compile.cli.train", "--solver", world["solver"], "--gpu", "cpu", "--no-progress",
            "--resume", bad)
    _assert_refused(r, marker)


def test_test_weights_refuses_a_pickle_that_runs_code(world):
    marker = world["tmp"] / "pwned_test"
    snap = torch.load(world["snapshot"], weights_only=True)
    bad = plant(world["tmp"] / "evil_t.pt", marker, snap)
    r = run("deeplab_compile.cli.test", "--net", TINY, "--weights", bad, "-D", "crop=33", "-D", "width=4",
            "--list", f"{world['syn']}/list/val.txt", "--root", world["syn"], "--gpu", "cpu", "--no-progress",
            "--png", world["tmp"] / "png")
    _assert_refused(r, marker)


def test_predict_refuses_a_pickle_that_runs_code(world):
    marker = world["tmp"] / "pwned_predict"
    bad = plant(world["tmp"] / "evil_p.pt", marker, {"state_dict": {}})
    img = world["tmp"] / "im.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    r = run("deeplab_compile.cli.predict", "--netdef", TINY, "-D", "width=4", "--weights", bad, img,
            "-o", world["tmp"] / "pred")
    _assert_refused(r, marker)


def test_convert_refuses_a_pickle_that_runs_code(world):
    marker = world["tmp"] / "pwned_convert"
    bad = plant(world["tmp"] / "evil_c.pt", marker, {})
    r = run("deeplab_compile.cli.convert", bad, "--netdef", TINY, "-D", "width=4",
            "-o", world["tmp"] / "out.caffemodel")
    _assert_refused(r, marker)
    assert not (world["tmp"] / "out.caffemodel").exists()
    r = run("deeplab_compile.cli.convert", bad, "--from", "torchvision:deeplabv3_resnet101",
            "--netdef", os.path.join(NETDEF, "deeplab_v3_resnet101.yaml"), "-D", "layout=torchvision", "-o", world["tmp"] / "out.pt")
    _assert_refused(r, marker)


def test_python_api_refuses_a_pickle_that_runs_code(world):
    marker = world["tmp"] / "pwned_api"
    bad = plant(world["tmp"] / "evil_api.pt", marker, {})
    net = deeplab_compile.compile(TINY, vars=VARS)
    for load in (lambda: deeplab_compile.load_weights(net, bad), lambda: init_weights(net, bad),
                 lambda: load_snapshot(bad), lambda: read_state_dict(bad)):
        with pytest.raises(WeightsError, match="not a plain weights file: it asks to load posix.system"):
            load()
    assert not marker.exists()


def test_snapshots_load_as_plain_data(world):
    snap = load_snapshot(world["snapshot"])
    assert snap["iter"] == 2 and set(snap["model"]) == set(
        deeplab_compile.compile(TINY, phase="train", vars=VARS).state_dict())
    assert all(isinstance(s["torch"], torch.Tensor) for s in snap["rng"])


def test_predict_reads_the_snapshots_train_writes(world):
    """The README's train-then-predict path: the snapshot keeps its weights under 'model'."""
    img = world["tmp"] / "im2.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 36, 3), dtype=np.uint8)).save(img)
    out = world["tmp"] / "pred2"
    r = run("deeplab_compile.cli.predict", "--netdef", TINY, "-D", "width=4", "--weights", world["snapshot"],
            img, "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "im2.png").is_file()


def test_a_mismatch_is_one_whole_table(world, tmp_path):
    other = deeplab_compile.compile(TINY, vars={"width": 8, "num_classes": 5})
    torch.save(other.state_dict(), tmp_path / "w8.pt")
    net = deeplab_compile.compile(TINY, vars=VARS)
    with pytest.raises(WeightsError) as e:
        load_weights(net, str(tmp_path / "w8.pt"))
    lines = str(e.value).splitlines()
    wrong = [ln for ln in lines[2:] if ln.split()[0] == "shape"]
    assert len(wrong) == len([k for k in net.state_dict() if net.state_dict()[k].dim() > 0
                              and tuple(net.state_dict()[k].shape) != tuple(other.state_dict()[k].shape)])
    assert len(wrong) > 10 and "with the wrong shape" in lines[0]
    img = tmp_path / "im.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    r = run("deeplab_compile.cli.predict", "--netdef", TINY, "-D", "width=4", "--weights", tmp_path / "w8.pt",
            img, "-o", tmp_path / "out")
    assert r.returncode == 2
    assert r.stderr.count("\n") == len(lines), r.stderr
    assert "fc8.bias" in r.stderr and "conv1_1.weight" in r.stderr


def test_a_missing_batchnorm_statistic_is_an_error(tmp_path):
    net_path = tmp_path / "bn.yaml"
    net_path.write_text(textwrap.dedent("""\
        name: bn_net
        inputs: {data: [3, 17, 17]}
        layers:
          - {name: conv1, type: Convolution, bottom: data, num_output: 4, kernel_size: 3, pad: 1}
          - {name: bn1, type: BatchNorm, bottom: conv1, top: conv1}
          - {name: scale1, type: Scale, bottom: conv1, top: conv1, bias_term: true}
          - {name: fc8, type: Convolution, bottom: conv1, num_output: 3, kernel_size: 1}
        """))
    net = deeplab_compile.compile(str(net_path))
    state = {k: v for k, v in net.state_dict().items() if k != "bn1.running_var"}
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="bn1.running_var"):
        load_weights(net, str(tmp_path / "w.pt"))
    with pytest.raises(WeightsError, match="bn1.running_var") as e:
        init_weights(net, str(tmp_path / "w.pt"))
    # initialising never loads part of a layer, so the fix is not a flag
    assert "must come whole" in str(e.value) and "--allow-missing" not in str(e.value)
    # whole layers absent from the file keep their fillers when initialising (Caffe's rule)
    torch.save({k: v for k, v in net.state_dict().items() if not k.startswith("fc8")}, tmp_path / "p.pt")
    assert init_weights(net, str(tmp_path / "p.pt")).missing == ["fc8.weight", "fc8.bias"]

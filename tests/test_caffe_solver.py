"""Solver import: Caffe's solver.prototxt -> the runtime's solver YAML."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deeplab_compile.cli import convert
from deeplab_compile.netdef.parse import load

from conftest import ROOT

SOLVER = '''# DeepLab's exper/voc12/config/DeepLab-LargeFOV/solver.prototxt
net: "${EXP}/config/${NET_ID}/train_${TRAIN_SET}.prototxt"
lr_policy: "step"
gamma: 0.1
stepsize: 2000
base_lr: 0.001
display: 10
max_iter: 6000
momentum: 0.9
weight_decay: 0.0005
snapshot: 2000
snapshot_prefix: "${EXP}/model/${NET_ID}/train"
solver_mode: GPU
test_initialization: false
iter_size: 2
average_loss: 20
random_seed: 1
test_iter: 100 test_interval: 1000
'''


def test_solver_converts_and_validates(tmp_path):
    src = tmp_path / "solver.prototxt"
    src.write_text(SOLVER)
    out = tmp_path / "solver.yaml"
    assert convert.main([str(src), "-o", str(out)]) == 0
    doc = load(str(out))
    assert doc["lr_policy"] == "step" and doc["stepsize"] == 2000 and doc["base_lr"] == 0.001
    assert doc["iter_size"] == 2 and doc["solver_mode"] == "gpu" and doc["test_iter"] == 100
    assert doc["net"] == "${EXP}/config/${NET_ID}/train_${TRAIN_SET}.prototxt"
    text = out.read_text()
    assert "dropped test_initialization" in text and "EXP, NET_ID, TRAIN_SET" in text
    from deeplab_compile.training.solver import load_solver
    s = load_solver(str(out), {"EXP": "voc12", "NET_ID": "lfov", "TRAIN_SET": "train"})
    assert s.net == "voc12/config/lfov/train_train.prototxt" and s.lr(2000) == pytest.approx(1e-4)



def test_caffe_side_maps_fields_without_the_training_code(tmp_path):
    """caffe/ sits below training/: its conversion yields plain fields and positions, and
    the solver schema is applied by the training package's loader."""
    code = ("import sys\n"
            "from deeplab_compile.caffe.solver import convert\n"
            "fields, notes, locs = convert(sys.stdin.read(), 'solver.prototxt')\n"
            "assert not [m for m in sys.modules if m.startswith('deeplab_compile.training')]\n"
            "print(type(fields).__name__, fields['iter_size'], fields['solver_mode'], locs['stepsize'].line)\n")
    r = subprocess.run([sys.executable, "-c", code], input=SOLVER, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["dict", "2", "gpu", "5"]

@pytest.mark.parametrize("text,expect", [
    ('base_lr: 0.1\nmax_iter: 10\nnet: "n.prototxt"\nlr_policy: "step"\ngamma: 0.1\n', "needs 'stepsize'"),
    ('base_lr: 0.1\nmax_iter: 10\nnet: "n.prototxt"\nlr_policy: "cosine"\n', "lr_policy"),
    ('base_lr: 0.1\nmax_iter: 10\nnet: "n.prototxt"\nbase_lrr: 1\n', "did you mean 'base_lr'?"),
    ('base_lr: 0.1\nmax_iter: 10\nnet: "n.prototxt"\nmomentum: "x"\n', "takes a number"),
])
def test_bad_solvers_exit_2_without_output(tmp_path, capsys, text, expect):
    src = tmp_path / "solver.prototxt"
    src.write_text(text)
    out = tmp_path / "solver.yaml"
    assert convert.main([str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err and f"{src}:" in err
    assert not out.exists()


def test_net_prototxt_converts_to_a_netdef(tmp_path):
    import deeplab_compile as dc
    src = os.path.join(os.path.dirname(__file__), "data", "caffe", "resnet_msc.prototxt")
    out = tmp_path / "msc.yaml"
    assert convert.main([src, "-D", "NUM_LABELS=3", "-o", str(out)]) == 0
    assert dc.compile(str(out)).code == dc.compile(src, vars={"NUM_LABELS": 3}).code

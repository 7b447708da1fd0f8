"""Solver files, Caffe's learning-rate policies, Caffe's SGD update, parameter groups,
TF-style hard-pixel mining and warm-up."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import deeplab_compile
from deeplab_compile.netdef.parse import loads
from deeplab_compile.training.lr_policy import learning_rate
from deeplab_compile.training.mining import TopKSoftmaxLoss, hard_pixel_ratio
from deeplab_compile.training.optim import CaffeSGD
from deeplab_compile.training.solver import SolverError, load_solver, parse_solver

from conftest import NETDEF


def solver(text, path="s.yaml"):
    return parse_solver(loads(text, path), path)


class CaffeRate:
    """A port of SGDSolver<Dtype>::GetLearningRate, stateful multistep included."""

    def __init__(self, s):
        self.s, self.current_step = s, 0

    def __call__(self, it):
        s = self.s
        if s.lr_policy == "fixed":
            return s.base_lr
        if s.lr_policy == "step":
            return s.base_lr * s.gamma ** (it // s.stepsize)
        if s.lr_policy == "exp":
            return s.base_lr * s.gamma ** it
        if s.lr_policy == "inv":
            return s.base_lr * (1 + s.gamma * it) ** (-s.power)
        if s.lr_policy == "multistep":
            if self.current_step < len(s.stepvalue) and it >= s.stepvalue[self.current_step]:
                self.current_step += 1
            return s.base_lr * s.gamma ** self.current_step
        if s.lr_policy == "poly":
            return s.base_lr * (1.0 - float(it) / s.max_iter) ** s.power
        if s.lr_policy == "sigmoid":
            return s.base_lr * (1.0 / (1.0 + math.exp(-s.gamma * (it - s.stepsize))))
        raise AssertionError


POLICIES = {
    "fixed": "",
    "step": "gamma: 0.1\nstepsize: 7\n",
    "multistep": "gamma: 0.5\nstepvalue: [3, 10, 11, 25]\n",
    "exp": "gamma: 0.97\n",
    "inv": "gamma: 0.0001\npower: 0.75\n",
    "poly": "power: 0.9\n",
    "sigmoid": "gamma: -0.2\nstepsize: 15\n",
}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_lr_policy_matches_caffe(policy):
    s = solver(f"net: n.yaml\nbase_lr: 0.01\nmax_iter: 30\nlr_policy: {policy}\n" + POLICIES[policy])
    ref = CaffeRate(s)
    for it in range(30):
        assert learning_rate(s, it) == pytest.approx(ref(it), rel=1e-12), it


def test_warmup_constant_and_linear():
    s = solver("net: n.yaml\nbase_lr: 0.1\nmax_iter: 100\nlr_policy: poly\npower: 1\n"
               "warmup_iter: 10\nwarmup_lr: 0.001\n")
    assert learning_rate(s, 0) == learning_rate(s, 9) == 0.001
    assert learning_rate(s, 10) == pytest.approx(0.1 * 0.9)
    s.warmup_method = "linear"
    assert learning_rate(s, 0) == pytest.approx(0.001)
    assert learning_rate(s, 5) == pytest.approx(0.001 + (0.1 * 0.95 - 0.001) * 0.5)


def test_hard_pixel_ratio_anneals_as_tf():
    s = solver("net: n.yaml\nbase_lr: 0.1\nmax_iter: 100\ntop_k_percent_pixels: 0.25\n"
               "hard_example_mining_step: 40\n")
    assert hard_pixel_ratio(s, 0) == 1.0
    assert hard_pixel_ratio(s, 20) == pytest.approx(0.5 * 0.25 + 0.5)
    assert hard_pixel_ratio(s, 40) == hard_pixel_ratio(s, 90) == 0.25


def test_topk_loss_against_brute_force():
    from deeplab_compile.layers.loss import CaffeSoftmaxLoss
    torch.manual_seed(0)
    score = torch.randn(2, 5, 4, 3)
    label = torch.randint(0, 5, (2, 1, 4, 3)).float()
    label[0, 0, 0] = 255
    m = TopKSoftmaxLoss(CaffeSoftmaxLoss(ignore_label=255))
    assert m(score, label) == m.inner(score, label)
    m.ratio = 0.25
    lab = label.long().squeeze(1)
    per = F.cross_entropy(score, torch.where(lab == 255, 0, lab), reduction="none") * (lab != 255)
    k = int(0.25 * per.numel())
    top = sorted(per.flatten().tolist(), reverse=True)[:k]
    want = sum(top) / sum(1 for t in top if t != 0)
    assert float(m(score, label)) == pytest.approx(want, rel=1e-6)


def caffe_sgd_reference(w0, grads, rates, momentum, decay, iter_size=1):
    """Caffe's formula: g = grad / iter_size + decay * w; v = m v + lr g; w -= v."""
    w, v = w0.clone().double(), torch.zeros_like(w0).double()
    for g, lr in zip(grads, rates):
        d = g.double() / iter_size + decay * w
        v = momentum * v + lr * d
        w = w - v
    return w


def test_caffe_sgd_matches_the_formula_when_the_rate_changes():
    torch.manual_seed(0)
    w0 = torch.randn(7, dtype=torch.float64)
    grads = [torch.randn(7, dtype=torch.float64) for _ in range(6)]
    rates = [0.1, 0.1, 0.05, 0.01, 0.2, 0.001]
    for iter_size, decay_mult, lr_mult in ((1, 1.0, 1.0), (3, 0.0, 10.0)):
        p = torch.nn.Parameter(w0.clone())
        opt = CaffeSGD([{"params": [p], "lr_mult": lr_mult, "decay_mult": decay_mult}], momentum=0.9,
                       iter_size=iter_size)
        for g, r in zip(grads, rates):
            opt.set_rate(r, 0.0005)
            p.grad = g.clone()
            opt.step()
        want = caffe_sgd_reference(w0, grads, [r * lr_mult for r in rates], 0.9, 0.0005 * decay_mult, iter_size)
        torch.testing.assert_close(p.detach(), want, rtol=1e-12, atol=1e-14)
    # torch's SGD differs once the rate changes: that is why CaffeSGD exists
    p = torch.nn.Parameter(w0.clone())
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    for g, r in zip(grads, rates):
        sgd.param_groups[0]["lr"] = r
        p.grad = g.clone()
        sgd.step()
    assert not torch.allclose(p.detach(), caffe_sgd_reference(w0, grads, rates, 0.9, 0.0))


def test_caffe_sgd_clips_global_norm_before_iter_size():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    q = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = CaffeSGD([{"params": [p, q], "lr_mult": 1.0, "decay_mult": 1.0}], clip_gradients=1.0, iter_size=2)
    opt.set_rate(1.0, 0.0)
    p.grad, q.grad = torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(q.detach(), torch.tensor([-0.4], dtype=torch.float64))


def test_param_groups_follow_lr_mult_and_decay_mult():
    net = deeplab_compile.compile(os.path.join(NETDEF, "deeplab_largefov_tiny.yaml"), phase="train")
    opt = CaffeSGD(net.param_groups(), momentum=0.9)
    opt.set_rate(0.001, 0.0005)
    by_name = {n: (g["lr"], g["weight_decay"]) for g in opt.param_groups for n in g["param_names"]}
    assert by_name["conv1_1.weight"] == pytest.approx((0.001, 0.0005))
    assert by_name["conv1_1.bias"] == pytest.approx((0.002, 0.0))
    assert by_name["fc8.weight"] == pytest.approx((0.01, 0.0005))
    assert by_name["fc8.bias"] == pytest.approx((0.02, 0.0))
    assert len(by_name) == len(list(net.parameters()))


@pytest.mark.parametrize("text,match", [
    ("net: n.yaml\nbase_lr: 0.1\nmax_iter: 10\nmomentm: 0.9\n",
     r"^s.yaml:4:1: unknown solver field 'momentm'; did you mean 'momentum'\?$"),
    ("net: n.yaml\nbase_lr: fast\nmax_iter: 10\n", r"^s.yaml:2:1: field 'base_lr' must be a number, got 'fast'"),
    ("net: n.yaml\nbase_lr: 0.1\nmax_iter: 10\nlr_policy: step\ngamma: 0.1\n",
     r"^s.yaml:4:1: lr_policy 'step' needs 'stepsize'"),
    ("net: n.yaml\nbase_lr: 0.1\nmax_iter: 10\nlr_policy: cosine\n", r"^s.yaml:4:1: field 'lr_policy' must be one of"),
    ("net: n.yaml\nmax_iter: 10\n", r"missing required field 'base_lr'"),
    ("net: ${where}/n.yaml\nbase_lr: 0.1\nmax_iter: 10\n", r"^s.yaml:1:1: undefined variable 'where' in field 'net'"),
    ("net: n.yaml\nbase_lr: 0.1\nmax_iter: 10\nlr_policy: multistep\ngamma: 0.1\nstepvalue: [5, 3]\n",
     r"'stepvalue' must increase strictly"),
])
def test_solver_errors_are_one_line_with_position(text, match):
    with pytest.raises(SolverError, match=match) as e:
        solver(text)
    assert "\n" not in str(e.value)


def test_solver_vars_substitute_and_reach_the_netdef(tmp_path, monkeypatch):
    p = tmp_path / "solver.yaml"
    p.write_text("net: ${NET}\nvars: {num_classes: 5, run: a}\nbase_lr: 0.1\nmax_iter: 4\n"
                 "snapshot_prefix: model/${run}/train\n")
    monkeypatch.setenv("NET", "netdef/x.yaml")
    s = load_solver(str(p), {"run": "b"})
    assert s.net == "netdef/x.yaml" and s.snapshot_prefix == "model/b/train"
    assert s.net_vars({"num_classes": 21, "crop": 3}) == {"num_classes": 5}
    s2 = load_solver(str(p), {"nm_classes": 3})
    with pytest.raises(SolverError, match="variable 'nm_classes' \\(-D\\) is not a variable of the netdef"):
        s2.net_vars({"num_classes": 21})


def test_data_source_and_root_folder_both_resolve_from_the_solver_folder(tmp_path, monkeypatch):
    from deeplab_compile.data import pipeline_for
    from deeplab_compile.data.synthetic import generate
    from deeplab_compile.training.net import build_train_net
    exp = tmp_path / "exp"
    generate(str(exp / "data"), num_images=4, min_size=40, max_size=48, seed=0)
    (exp / "solver.yaml").write_text(
        f"net: {os.path.join(NETDEF, 'deeplab_largefov_tiny.yaml')}\n"
        "data: {source: data/list/train.txt, root_folder: data, batch_size: 2, num_workers: 0}\n"
        "base_lr: 0.01\nmax_iter: 1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    net, spec = build_train_net(load_solver(str(exp / "solver.yaml")), seed=0)
    assert spec.source == str(exp / "data" / "list" / "train.txt")
    assert spec.root_folder == str(exp / "data")
    batch = next(iter(pipeline_for(net, "train", spec, num_workers=0)))   # the images are found
    assert batch["data"].shape[0] == 2


def test_every_missing_solver_variable_is_named_at_once(tmp_path):
    p = tmp_path / "solver.yaml"
    p.write_text("net: ${CONFIG_DIR}/train.yaml\nvars: {LABEL_MAP: ~, SEED: 0}\nbase_lr: 0.01\nmax_iter: 1\n"
                 "random_seed: ${SEED}\nsnapshot_prefix: ${MODEL_DIR}/train\ndata: {label_map: '${LABEL_MAP}'}\n")
    with pytest.raises(SolverError) as info:
        load_solver(str(p))
    msg = str(info.value)
    assert msg.startswith(f"{p}:1:") and "\n" not in msg
    assert "undefined variables 'CONFIG_DIR', 'MODEL_DIR', 'LABEL_MAP' (the first in field 'net')" in msg
    assert "-D CONFIG_DIR=VALUE -D MODEL_DIR=VALUE -D LABEL_MAP=VALUE" in msg
    assert load_solver(str(p), {"CONFIG_DIR": "c", "MODEL_DIR": "m", "LABEL_MAP": "none"}).snapshot_prefix == "m/train"

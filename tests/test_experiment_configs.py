"""The experiment tree's configs for every zoo net: each train and test netdef compiles
(on the meta device: shapes and parameters, nothing large allocated) into the zoo net's
own parameters, v3/v3+ train at output stride 16 and test at 8 with TF's evaluation
scales, each header documents its published mIOU and initial weights; slow: a 2-iteration
run of each config through run_experiment.sh on the synthetic set."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from deeplab_compile.codegen import generate
from deeplab_compile.compiler import build_net
from deeplab_compile.experiment.settings import declared_vars, eval_options
from deeplab_compile.zoo.mappings import SOURCES

from conftest import NETDEF, ROOT

EXPERIMENTS = os.path.join(ROOT, "experiments")
# (dataset, NET_ID, classes): every zoo net on VOC, v3+ on Cityscapes and ADE20K
CONFIGS = [("voc12", n, 21) for n in (
    "deeplab_largefov", "deeplab_v2_vgg16_aspp_l", "deeplab_v2_resnet101_aspp", "deeplab_v2_resnet101_msc",
    "deeplab_v3_resnet101", "deeplab_v3_mobilenetv2", "deeplab_v3plus_resnet101", "deeplab_v3plus_xception65",
    "deeplab_v3plus_mobilenetv2")] + [
    (ds, n, c) for ds, c in (("cityscapes", 19), ("ade20k", 150))
    for n in ("deeplab_v3plus_xception65", "deeplab_v3plus_mobilenetv2")]
MODERN = [c for c in CONFIGS if "_v3" in c[1]]
# the blob each v3/v3+ backbone hands to its head: its stride is the output stride
HEAD_INPUT = {"resnet101": "res5c", "xception65": "exit2_sep3_pw", "mobilenetv2": "ir17_project"}
TF_SCALES = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
IDS = [f"{ds}/{n}" for ds, n, _ in CONFIGS]


def config(ds, net, name):
    return os.path.join(EXPERIMENTS, ds, "config", net, name)


def values(path, classes):
    v = {"NUM_LABELS": classes, "DATA_ROOT": "/data", "LIST_DIR": "/lists", "TRAIN_SET": "train_aug",
         "TEST_LIST": "/lists/val.txt", "FEATURE_DIR": "/features"}
    return {k: x for k, x in v.items() if k in declared_vars(path)}


def meta_params(ir):
    with torch.device("meta"):
        gm = generate(ir)
    return {k: tuple(p.shape) for k, p in gm.named_parameters()}


def blob_stride(ir, name):
    return [b.stride for b in ir.blobs.values() if b.name == name][-1]


@pytest.fixture(scope="module")
def zoo_params():
    cache = {}

    def get(net, classes):
        if (net, classes) not in cache:
            cache[net, classes] = meta_params(build_net(os.path.join(NETDEF, net + ".yaml"), phase="train",
                                                        vars={"num_classes": classes}))
        return cache[net, classes]
    return get


@pytest.mark.parametrize("ds,net,classes", CONFIGS, ids=IDS)
def test_train_and_test_nets_compile_into_the_zoo_nets_parameters(ds, net, classes, zoo_params):
    """Same names and shapes as netdef/<NET_ID>.yaml: weights converted with
    ``deeplab-convert --netdef <NET_ID> -D num_classes=N`` load into either phase."""
    want = zoo_params(net, classes)
    for name, phase in (("train.yaml", "train"), ("test.yaml", "test")):
        path = config(ds, net, name)
        ir = build_net(path, phase=phase, vars=values(path, classes))
        assert meta_params(ir) == want, f"{path} differs from netdef/{net}.yaml"
        if phase == "train":
            assert any(lay.type == "SoftmaxWithLoss" for lay in ir.layers)
        else:
            assert any(lay.type == "MatWrite" for lay in ir.layers)


@pytest.mark.parametrize("ds,net,classes", MODERN, ids=[f"{ds}/{n}" for ds, n, _ in MODERN])
def test_v3_trains_at_os16_and_tests_at_os8_with_tf_scales_and_flip(ds, net, classes):
    head = HEAD_INPUT[net.rsplit("_", 1)[1]]
    train = config(ds, net, "train.yaml")
    test = config(ds, net, "test.yaml")
    assert blob_stride(build_net(train, phase="train", vars=values(train, classes)), head) == 16
    assert blob_stride(build_net(test, phase="test", vars=values(test, classes)), head) == 8
    v = dict(values(test, classes), OUTPUT_STRIDE=16)          # -D OUTPUT_STRIDE=16: the training stride
    assert blob_stride(build_net(test, phase="test", vars=v), head) == 16
    opts = eval_options(test, {})
    want = [0.75, 1.0, 1.25] if ds == "cityscapes" else TF_SCALES     # model_zoo.md, per dataset
    pre = {"preprocess": INPUT_OF[net.rsplit("_", 1)[1]]}
    assert opts == {"scales": want, "flip": True, "data": pre, "precision": "bf16"}
    assert eval_options(test, {"EVAL_SCALES": "1", "EVAL_FLIP": 0, "PRECISION": "fp32", "CHANNELS_LAST": "true"}) == {
        "scales": [1.0], "flip": False, "data": pre, "channels_last": True}
    for off in ("auto", "false"):            # the solver's auto is no --channels-last for the test step
        assert "channels_last" not in eval_options(test, {"CHANNELS_LAST": off})


# What each v3/v3+ config's initial weights read (their pretrained_cfg): torchvision's
# ResNet-101 and timm's mobilenetv2_100 ImageNet's mean/std, timm's xception65 (TF's
# weights) mean = std = 0.5, i.e. [-1, 1].
INPUT_OF = {"resnet101": "imagenet", "mobilenetv2": "imagenet", "xception65": "tf"}


@pytest.mark.parametrize("ds,net,classes", MODERN, ids=[f"{ds}/{n}" for ds, n, _ in MODERN])
def test_v3_configs_normalise_as_their_initial_weights_and_zoo_netdef(ds, net, classes):
    """Training (the solvers' data section), testing (test.yaml's PREPROCESS) and the zoo
    netdef's ``preprocess:`` agree, and match the source of the documented init weights."""
    import yaml
    from deeplab_compile.compiler import load_netdef
    from deeplab_compile.data.preprocess import PRESETS, of_netdef
    want = INPUT_OF[net.rsplit("_", 1)[1]]
    source = re.search(r"--from (\S+)", header(config(ds, net, "train.yaml"))).group(1)
    assert want == ("tf" if source == "timm:xception65" else "imagenet"), source
    for name in ("solver.yaml", "solver2.yaml"):
        if os.path.isfile(config(ds, net, name)):
            with open(config(ds, net, name)) as f:
                assert yaml.safe_load(f)["data"]["preprocess"] == want, name
    with open(config(ds, net, "test.yaml")) as f:
        assert yaml.safe_load(f)["vars"]["PREPROCESS"] == want
    assert of_netdef(load_netdef(os.path.join(NETDEF, net + ".yaml"))) == PRESETS[want]


@pytest.mark.parametrize("net", ["deeplab_largefov", "deeplab_v2_resnet101_aspp", "deeplab_v2_resnet101_msc"])
def test_v1_v2_test_single_scale_without_flip(net):
    assert eval_options(config("voc12", net, "test.yaml"), {}) == {"scales": [1.0], "flip": False}


def header(path):
    lines = []
    with open(path) as f:
        for ln in f:
            if not ln.startswith("#"):
                break
            lines.append(ln[1:].strip())
    return " ".join(lines)


NEW = [c for c in CONFIGS if c[1] not in ("deeplab_largefov", "deeplab_v2_vgg16_aspp_l")]


@pytest.mark.parametrize("ds,net,classes", NEW, ids=[f"{ds}/{n}" for ds, n, _ in NEW])
def test_headers_give_the_published_miou_and_the_initial_weights(ds, net, classes):
    text = header(config(ds, net, "train.yaml"))
    assert "Published" in text and ("%" in text or "none found" in text.lower() or "Published: none" in text)
    assert "Initial weights" in text
    cmd = re.search(r"deeplab-convert (\S+) (--from (\S+) )?--netdef (\S+) (.*?)-o (\S+)", text)
    assert cmd, text
    if cmd.group(3):
        assert cmd.group(3) in SOURCES
    assert os.path.isfile(os.path.join(NETDEF, cmd.group(4) + ".yaml"))
    assert cmd.group(6) == f"experiments/{ds}/model/{net}/init.pt"
    if classes != 21:                            # the zoo netdef defaults to VOC's 21 classes
        assert f"-D num_classes={classes}" in cmd.group(5)
    for name in ("solver.yaml", "test.yaml", "crf.yaml"):
        assert os.path.isfile(config(ds, net, name))
    assert os.path.isfile(config(ds, net, "solver2.yaml")) == (ds == "voc12")


def test_readme_lists_every_config():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme.split("## The experiment tree", 1)[1].split("\n## ", 1)[0]
    for ds, net, _ in CONFIGS:
        assert re.search(rf"\|\s*{ds}\s*\|\s*`{net}`\s*\|", section), f"{ds}/{net} missing from the README table"


# --------------------------------------------------------------------------- slow

VOC = os.path.join(EXPERIMENTS, "voc12", "run_experiment.sh")
SMOKE = {"NUM_IMAGES": "6", "IMAGE_MIN": "64", "IMAGE_MAX": "80", "MAX_ITER": "2", "TRAIN_CROP": "65",
         "BATCH_SIZE": "2", "ITER_SIZE": "1", "TEST_CROP": "81", "QUIET": "1", "CRF_JOBS": "1", "DATA_ROOT": "",
         "NUM_LABELS": "21", "LABEL_MAP": "voc",
         "RESIZE_MIN": "81", "RESIZE_MAX": "81"}   # ADE20K's resize_to_range at the smoke test's sizes


def _frozen_bn_init(ds, net, path):
    """An init.pt for a net with frozen BatchNorm (DeepLab v2's ResNet-101): from the
    fillers alone its activations grow to ~1e7 and the first update gives NaN (the
    "initial weights are missing" error).  Each frozen BatchNorm gets the statistics of a
    random batch at its input and each residual branch starts at zero, so that the
    scores start small, as ImageNet weights would bring them."""
    from deeplab_compile.compiler import compile_net
    from deeplab_compile.layers.batch_norm import CaffeBatchNorm
    train = config(ds, net, "train.yaml")
    crop = int(SMOKE["TRAIN_CROP"])
    v = values(train, 21)
    if "TRAIN_CROP" in declared_vars(train):      # the v1/v2 VGG16 nets take their crop from the data layer
        v["TRAIN_CROP"] = crop
    m = compile_net(train, phase="train", vars=v, inputs={"data": (2, 3, crop, crop), "label": (2, 1, crop, crop)})
    frozen = [b for b in m.modules() if isinstance(b, CaffeBatchNorm) and b.use_global_stats]
    if not frozen:
        return False

    def calibrate(bn, args):
        x = args[0]
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3)))
        bn.running_weight.fill_(1.0)
    with torch.no_grad():                 # each residual branch starts at zero (Goyal et al. 2017),
        for name, mod in m.named_modules():   # so 33 blocks of sums do not grow the scores to ~1e3
            if name.startswith("scale") and "_branch2c" in name:
                mod.weight.zero_()
    hooks = [b.register_forward_pre_hook(calibrate) for b in frozen]
    torch.manual_seed(0)
    with torch.no_grad():
        m(torch.randn(2, 3, crop, crop) * 60, torch.randint(0, 21, (2, 1, crop, crop)).float())
    for h in hooks:
        h.remove()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"state_dict": m.state_dict()}, path)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("ds,net,classes", CONFIGS, ids=IDS)
def test_two_iterations_of_each_config_on_the_synthetic_set(ds, net, classes, tmp_path):
    """Train (MAX_ITER=2), test, CRF and evaluation of each config through
    run_experiment.sh; Cityscapes and ADE20K configs read the synthetic VOC-layout set."""
    _frozen_bn_init(ds, net, str(tmp_path / "model" / net / "init.pt"))
    env = dict(os.environ, EXP=str(tmp_path), PYTHON=sys.executable, NET_ID=net,
               CONFIG_DIR=os.path.join(EXPERIMENTS, ds, "config", net), **SMOKE)
    r = subprocess.run(["bash", VOC], env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert os.path.isfile(tmp_path / "model" / net / "train_iter_2.pt")
    with open(tmp_path / "res" / net / "val" / "fc8.json") as f:
        assert json.load(f)["images"] >= 1
    log = (tmp_path / "log" / net / "test.log").read_text()
    if "_v3" in net:                              # trained at OS 16, tested at OS 8 with scales and flip
        assert "--scales" in log and "--flip" in log
        assert "--preprocess " + INPUT_OF[net.rsplit("_", 1)[1]] in log


@pytest.mark.parametrize("ds,net,classes", MODERN, ids=[f"{ds}/{n}" for ds, n, _ in MODERN])
def test_v3_solvers_train_in_bf16_unless_told_otherwise(ds, net, classes):
    from deeplab_compile.training.solver import load_solver
    folder = os.path.dirname(config(ds, net, "solver.yaml"))
    for name in sorted(f for f in os.listdir(folder) if f.startswith("solver")):
        given = {"CONFIG_DIR": folder, "MODEL_DIR": "/model", "LABEL_MAP": "none", **values(config(ds, net, name),
                                                                                         classes)}
        s = load_solver(config(ds, net, name), given)
        assert (s.precision, s.channels_last) == ("bf16", "auto"), name
        s = load_solver(config(ds, net, name), {**given, "PRECISION": "fp32", "CHANNELS_LAST": True})
        assert (s.precision, s.channels_last) == ("fp32", True), name
        s = load_solver(config(ds, net, name), {**given, "CHANNELS_LAST": "false"})     # as the experiment passes it
        assert s.channels_last is False, name


@pytest.mark.parametrize("env,want", [
    ({"DEV_ID": "cpu"}, {"PRECISION": "fp32"}),                       # the configs' bf16 is for GPUs
    ({"DEV_ID": "0"}, {}),
    ({"DEV_ID": "cpu", "PRECISION": "bf16", "CHANNELS_LAST": "1"}, {"PRECISION": "bf16", "CHANNELS_LAST": "true"}),
    ({"DEV_ID": "0", "CHANNELS_LAST": "off"}, {"CHANNELS_LAST": "false"}),
    ({"DEV_ID": "cpu", "CHANNELS_LAST": "Auto"}, {"PRECISION": "fp32", "CHANNELS_LAST": "auto"}),
])
def test_experiment_passes_precision_and_channels_last(monkeypatch, tmp_path, env, want):
    from deeplab_compile.experiment.settings import Settings
    for k in ("PRECISION", "CHANNELS_LAST", "DATA_ROOT", "DATASET"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("EXP", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    got = Settings.from_env().defines
    assert {k: got[k] for k in ("PRECISION", "CHANNELS_LAST") if k in got} == want


def test_experiment_refuses_a_channels_last_that_is_not_a_switch(monkeypatch, tmp_path):
    from deeplab_compile.data.errors import DataError
    from deeplab_compile.experiment.settings import Settings
    monkeypatch.delenv("DATA_ROOT", raising=False)
    monkeypatch.setenv("EXP", str(tmp_path))
    monkeypatch.setenv("CHANNELS_LAST", "maybe")
    with pytest.raises(DataError, match="CHANNELS_LAST='maybe' is not a switch or auto; set it to 1, 0 or auto"):
        Settings.from_env()



# --------------------------------------------------------------------------- the tiny v3+ run

TINY = "deeplab_v3plus_mobilenetv2_tiny"
TINY_WIDTHS = ("depth_multiplier", "aspp_channels", "low_channels", "decoder_channels")


def _tiny_widths():
    import yaml
    with open(config("voc12", TINY, "train.yaml")) as f:
        own = yaml.safe_load(f)["vars"]
    return {k: own[k] for k in TINY_WIDTHS}


def test_tiny_v3plus_is_the_zoo_net_at_reduced_widths():
    """train.yaml and test.yaml have netdef/deeplab_v3plus_mobilenetv2.yaml's layers and
    names, set by its width variables (so weights converted with those -D values load)."""
    widths = _tiny_widths()
    assert widths["depth_multiplier"] < 100 and widths["aspp_channels"] < 256
    want = meta_params(build_net(os.path.join(NETDEF, "deeplab_v3plus_mobilenetv2.yaml"), phase="train",
                                 vars=dict(widths, num_classes=21)))
    for name, phase in (("train.yaml", "train"), ("test.yaml", "test")):
        path = config("voc12", TINY, name)
        assert meta_params(build_net(path, phase=phase, vars=values(path, 21))) == want, name
    assert sum(int(np.prod(s)) for s in want.values()) < 10 ** 6      # a CPU-sized net


def test_tiny_v3plus_runs_the_modern_recipe():
    """BatchNorm trained (batch statistics, running averages updated), the decoder, poly lr,
    hard-pixel mining, OS 16 for training and 8 for testing with scales and flip."""
    from deeplab_compile.training.solver import load_solver
    train, test = config("voc12", TINY, "train.yaml"), config("voc12", TINY, "test.yaml")
    ir = build_net(train, phase="train", vars=values(train, 21))
    bns = [lay for lay in ir.layers if lay.type == "BatchNorm"]
    assert bns and not any(lay.params["use_global_stats"] for lay in bns)
    assert any(lay.name == "decoder_concat" for lay in ir.layers)
    assert blob_stride(ir, "ir17_project") == 16
    assert blob_stride(build_net(test, phase="test", vars=values(test, 21)), "ir17_project") == 8
    opts = eval_options(test, {})
    assert len(opts["scales"]) > 1 and 1.0 in opts["scales"] and opts["flip"]
    assert opts["data"] == {"preprocess": "imagenet"}            # as the zoo netdef declares
    sv = load_solver(config("voc12", TINY, "solver.yaml"),
                     {"NUM_LABELS": 21, "DATA_ROOT": "/d", "LIST_DIR": "/l", "TRAIN_SET": "train_aug",
                      "CONFIG_DIR": os.path.dirname(train), "MODEL_DIR": "/m"})
    assert sv.lr_policy == "poly" and sv.power == 0.9
    assert sv.top_k_percent_pixels < 1 and sv.hard_example_mining_step > 0
    assert sv.data["preprocess"] == "imagenet"


ADE = [c for c in CONFIGS if c[0] == "ade20k"]


@pytest.mark.parametrize("ds,net,classes", ADE, ids=[f"{ds}/{n}" for ds, n, _ in ADE])
def test_ade20k_resizes_as_tf_deeplab_in_training_and_testing(ds, net, classes):
    """TF g3doc/ade20k.md: --min_resize_value=513 --max_resize_value=513 --resize_factor=16,
    in the data layer of both nets, overridable through the experiment's -D values."""
    from deeplab_compile.data.spec import resolve_spec
    from deeplab_compile.experiment.settings import DEFINES
    assert {"RESIZE_MIN", "RESIZE_MAX", "RESIZE_FACTOR"} <= set(DEFINES)
    for name, phase in (("train.yaml", "train"), ("test.yaml", "test")):
        path = config(ds, net, name)
        text = open(path).read()
        assert "min_resize_value=513" in text and "resize_factor=16" in text     # the source, in the header
        ir = build_net(path, phase=phase, vars=values(path, classes))
        spec = resolve_spec(ir, phase)
        assert spec.resize_to_range == {"min": 513, "max": 513, "factor": 16}
        assert spec.crop_height == spec.crop_width == 513
        ir = build_net(path, phase=phase, vars=dict(values(path, classes), RESIZE_MIN=81, RESIZE_MAX=81))
        assert resolve_spec(ir, phase).resize_to_range == {"min": 81, "max": 81, "factor": 16}

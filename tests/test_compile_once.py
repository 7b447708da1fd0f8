"""Each entry point reads its netdef once: a training run with an ImageSegData train net,
a deeplab-test run at two scales and a deeplab-predict run over images of three sizes
each parse the netdef file exactly once; the new sizes are reshapes of the compiled IR,
and predicting images whose score maps fall in one shape bucket measures the fused ops
once."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import deeplab_compile.netdef.parse as parse
from deeplab_compile.cli import predict as predict_cli
from deeplab_compile.cli import test as test_cli
from deeplab_compile.cli import train as train_cli
from deeplab_compile.data.synthetic import generate
from deeplab_compile.ops import _ext, dispatch

from conftest import NETDEF, ROOT

CONFIG = os.path.join(ROOT, "experiments", "voc12", "config", "deeplab_largefov_tiny")


@pytest.fixture
def parses(monkeypatch):
    """The real paths of the files read as netdef text (parse.read_text, which both the
    YAML and the prototxt readers go through), in order."""
    seen = []
    real = parse.read_text

    def counting(path, *a, **k):
        seen.append(os.path.realpath(os.fspath(path)))
        return real(path, *a, **k)
    monkeypatch.setattr(parse, "read_text", counting)
    return seen


def _count(seen, path):
    return seen.count(os.path.realpath(path))


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("syn") / "voc"), num_images=4, min_size=40, max_size=48, seed=5)


def test_train_then_test_at_two_scales_each_parse_the_netdef_once(tmp_path, syn, parses):
    train_net, test_net = os.path.join(CONFIG, "train.yaml"), os.path.join(CONFIG, "test.yaml")
    assert parse.load(train_net)["layers"][0]["type"] == "ImageSegData"
    parses.clear()
    rc = train_cli.main(["--solver", os.path.join(CONFIG, "solver.yaml"), "-D", "NUM_LABELS=21",
                         "-D", f"DATA_ROOT={syn}", "-D", f"LIST_DIR={syn}/list", "-D", "TRAIN_SET=train",
                         "-D", f"CONFIG_DIR={CONFIG}", "-D", f"MODEL_DIR={tmp_path}/model", "-D", "MAX_ITER=1",
                         "--gpu", "cpu", "--no-progress", "--log-dir", str(tmp_path / "log")])
    assert rc == 0
    assert _count(parses, train_net) == 1

    weights = tmp_path / "model" / "train_iter_1.pt"
    assert weights.exists()
    parses.clear()
    rc = test_cli.main(["--net", test_net, "--weights", str(weights), "-D", "NUM_LABELS=21",
                        "-D", f"DATA_ROOT={syn}", "-D", f"TEST_LIST={syn}/list/val.txt",
                        "-D", f"FEATURE_DIR={tmp_path}/feat/", "--scales", "0.75,1", "--gpu", "cpu",
                        "--no-progress", "--png", str(tmp_path / "png")])
    assert rc == 0
    assert _count(parses, test_net) == 1
    assert len(os.listdir(tmp_path / "png")) == len(open(f"{syn}/list/val.txt").read().split("\n")) - 1


def test_predict_over_three_sizes_parses_once_and_measures_one_bucket_once(tmp_path, parses, monkeypatch):
    net = os.path.join(NETDEF, "deeplab_v3_mobilenetv2.yaml")
    timed = []
    real = dispatch._time
    monkeypatch.setattr(dispatch, "_time", lambda *a: timed.append(1) or real(*a))
    monkeypatch.setenv("DEEPLAB_KERNELS", "auto")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(37, 45), (40, 40), (50, 60)]):       # output stride 16: 3x3, 3x3, 4x4 -> 4x4
        paths.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    dispatch.clear()
    try:
        # The lowered net (the default on a CPU) runs the v3 head as oneDNN calls: nothing
        # to measure.  Without oneDNN the head is the fused op, which the dispatcher times
        # once per shape bucket.
        assert predict_cli.main(["--netdef", net, "-D", "crop=33", paths[0], "-o", str(tmp_path / "l")]) == 0
        assert timed == []
        with torch.backends.mkldnn.flags(enabled=False):
            assert predict_cli.main(["--netdef", net, "-D", "crop=33", paths[0], "-o", str(tmp_path / "a")]) == 0
            first = len(timed)
            parses.clear()
            dispatch.clear()
            timed.clear()
            assert predict_cli.main(["--netdef", net, "-D", "crop=33", *paths, "-o", str(tmp_path / "b")]) == 0
        assert _count(parses, net) == 1
        assert len(timed) == first
        if _ext.has_kernel("aspp_v3_head", "CPU"):
            assert first > 0
    finally:
        dispatch.clear()
    assert sorted(os.listdir(tmp_path / "b")) == sorted(f"im{i}{s}.png" for i in range(3) for s in ("", "_overlay"))

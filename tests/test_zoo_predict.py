"""deeplab-predict: palette PNG, overlay, probabilities, scales/flip, CRF, one-line errors."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import deeplab_compile
from deeplab_compile.cli.predict import main
from deeplab_compile.io.palette import read_label_png

from zoo_helpers import netdef

NET = netdef("deeplab_v3_mobilenetv2")


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    net = deeplab_compile.compile(NET, vars={"crop": 33})
    w = tmp_path / "w.pt"
    torch.save({"state_dict": net.state_dict()}, w)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(37, 45), (40, 40)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(imgs / f"im{i}.jpg")
    return w, imgs, tmp_path / "out"


def test_predict_directory_with_scales_flip_probs(setup):
    w, imgs, out = setup
    rc = main(["--netdef", NET, "--weights", str(w), str(imgs), "-o", str(out), "--scales", "0.75,1",
               "--flip", "--probs", "--palette", "cityscapes"])
    assert rc == 0
    lab = read_label_png(out / "im0.png")
    assert lab.shape == (37, 45) and lab.max() < 21
    assert Image.open(out / "im0_overlay.png").size == (45, 37)
    p = np.load(out / "im1_probs.npy")
    assert p.shape == (21, 40, 40) and np.allclose(p.sum(0), 1, atol=1e-2)


def test_predict_with_crf(setup):
    pytest.importorskip("deeplab_compile.crf")
    w, imgs, out = setup
    assert main(["--netdef", NET, "--weights", str(w), str(imgs / "im1.jpg"), "-o", str(out),
                 "--crf", "deeplab_largefov"]) == 0
    assert read_label_png(out / "im1.png").shape == (40, 40)


def test_predict_errors_are_one_line(setup, capsys):
    w, imgs, out = setup
    assert main(["--netdef", NET, "--weights", str(w), "missing.jpg", "-o", str(out)]) == 2
    assert main(["--netdef", netdef("deeplab_v3plus_mobilenetv2"), "--weights", str(w), str(imgs), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    heads = [e for e in err if "error:" in e]
    assert len(heads) == 2 and "missing.jpg" in heads[0] and "the weights do not fit the net" in heads[1]
    # the mismatch table follows its error line whole: a header and one indented row per tensor
    table = err[err.index(heads[1]) + 1:]
    assert len(table) > 2 and all(row.startswith("  ") for row in table)


def _input_sizes(monkeypatch):
    """The input sizes the Predictor compiles nets for, in call order."""
    from deeplab_compile.cli.predict import Predictor
    sizes, net = [], Predictor.net

    def record(self, h, w):
        sizes.append((h, w))
        return net(self, h, w)

    monkeypatch.setattr(Predictor, "net", record)
    return sizes


def test_predict_resize_to_range_runs_the_resized_image(setup, monkeypatch):
    # 37x45 with min 24, max 30: the shorter side to 24, the longer to 45 * 24 / 37 = 29.2,
    # rounded up as TF does: 30, not above max.
    w, imgs, out = setup
    sizes = _input_sizes(monkeypatch)
    assert main(["--netdef", NET, "--weights", str(w), str(imgs / "im0.jpg"), "-o", str(out),
                 "--resize-to-range", "24,30", "--probs"]) == 0
    assert sizes == [(24, 30)]
    assert read_label_png(out / "im0.png").shape == (37, 45)
    assert np.load(out / "im0_probs.npy").shape == (21, 37, 45)


def test_predict_resize_to_range_from_the_snapshot_solver(setup, monkeypatch, capsys):
    w, imgs, out = setup
    state = torch.load(w, weights_only=True)["state_dict"]
    snap = w.parent / "snap.pt"
    from deeplab_compile.weights import SNAPSHOT_FORMAT
    torch.save({"format": SNAPSHOT_FORMAT, "iter": 10, "model": state,
                "solver": {"data": {"resize_to_range": {"min": 24, "max": 30}}}}, snap)
    sizes = _input_sizes(monkeypatch)
    assert main(["--netdef", NET, "--weights", str(snap), str(imgs / "im1.jpg"), "-o", str(out)]) == 0
    assert sizes == [(24, 24)]
    assert "resize_to_range 24,30,None from the weights file's solver data section" in capsys.readouterr().err
    assert read_label_png(out / "im1.png").shape == (40, 40)


@pytest.mark.parametrize("bad", ["0", "24,x", "1,2,3,4", ""])
def test_predict_resize_to_range_errors_are_one_line(setup, capsys, bad):
    w, imgs, out = setup
    assert main(["--netdef", NET, "--weights", str(w), str(imgs), "-o", str(out), "--resize-to-range", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resize-to-range" in err[0] and "MIN[,MAX[,FACTOR]]" in err[0]


def test_predict_resize_to_range_max_below_min_is_one_line(setup, capsys):
    # checked as the data layer's resize_to_range is, before any image
    w, imgs, out = setup
    assert main(["--netdef", NET, "--weights", str(w), str(imgs), "-o", str(out), "--resize-to-range", "30,24"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resize-to-range '30,24'" in err[0] and "max 24 is smaller than min 30" in err[0]
    assert not any(out.glob("*.png"))


def test_predict_resize_rule_order():
    from deeplab_compile.cli.predict import _resize_rule
    doc = {"layers": [{"name": "data", "type": "ImageSegData", "resize_to_range": {"min": 24, "factor": 8}}]}
    meta = {"solver": {"data": {"resize_to_range": {"min": 30, "max": 40}}}}
    flag = {"min": 16, "max": None, "factor": None}
    assert _resize_rule(doc, meta, flag) == (flag, "--resize-to-range")
    assert _resize_rule(doc, meta, None) == ({"min": 30, "max": 40, "factor": None},
                                             "the weights file's solver data section")
    assert _resize_rule(doc, {}, None) == ({"min": 24, "max": None, "factor": 8}, "layer 'data'")
    assert _resize_rule({"layers": []}, {}, None) == ({}, "none")


def test_predict_bad_recorded_resize_to_range_names_its_source():
    from deeplab_compile.cli.predict import _resize_rule
    from deeplab_compile.errors import DeepLabError
    with pytest.raises(DeepLabError, match="solver data section: parameter 'resize_to_range' needs 'min'") as e:
        _resize_rule({"layers": []}, {"solver": {"data": {"resize_to_range": {"max": 3}}}}, None)
    assert "min: 513" in e.value.hint

"""ImageSegData's ``resize_to_range``: TF DeepLab's ``--min_resize_value``,
``--max_resize_value`` and ``--resize_factor`` (``preprocess_utils.resize_to_range``), in
the data pipeline and in deeplab-test, whose scores come back at the image's own size."""
import os
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import deeplab_compile
from deeplab_compile.cli import test as test_cli
from deeplab_compile.data import DataError, pipeline_for
from deeplab_compile.data.transforms import range_size, resize_aligned
from deeplab_compile.io.features import read_blob
from deeplab_compile.netdef.errors import NetDefError
from deeplab_compile.test import run_test


# --- the size rule, worked by hand -------------------------------------------------------
# With factor 16 TF first lowers max 513 to the largest value <= 513 that is 1 mod 16 minus
# 16: 513 + (16 - 512 % 16) % 16 - 16 = 497; then the sides are rounded up to 1 mod 16.

@pytest.mark.parametrize("hw,args,want", [
    # ADE20K's usual 683 x 512 (W x H): shorter side to 513 makes the longer 685 > 497, so the
    # longer side becomes 497 and the shorter ceil(512 * 497 / 683) = ceil(372.57) = 373,
    # rounded up to 1 mod 16: 385
    ((512, 683), (513, 513, 16), (385, 497)),
    # portrait 512 x 1024 (W x H): 1024 -> 497, 512 -> ceil(248.5) = 249 -> 257
    ((1024, 512), (513, 513, 16), (497, 257)),
    # already at the rounded size: 497 x 497 stays
    ((497, 497), (513, 513, 16), (497, 497)),
    # 513 x 513 with factor 16: the lowered max 497 wins (TF's rule, not a no-op)
    ((513, 513), (513, 513, 16), (497, 497)),
    # without a factor 513 x 513 is already in range
    ((513, 513), (513, 513, None), (513, 513)),
    # no max: the shorter side 50 -> 100 (x2), then 100 -> 113 and 150 -> 161 (1 mod 16)
    ((50, 75), (100, None, 16), (113, 161)),
    # upscaling within range: shorter side 256 -> 513 (x 513/256), longer 384 -> ceil(769.5) = 770,
    # under max 800
    ((256, 384), (513, 800, None), (513, 770)),
    # 128 x 512: the shorter side to 513 would make the longer 2052 > 513, so the longer side
    # becomes 513 and the shorter ceil(128 * 513 / 512) = ceil(128.25) = 129
    ((128, 512), (513, 513, None), (129, 513)),
])
def test_range_size_hand_cases(hw, args, want):
    assert range_size(*hw, *args) == want


def test_the_longer_side_never_passes_max_with_a_factor():
    for h in range(200, 1200, 37):
        for w in (300, 513, 683, 1000):
            nh, nw = range_size(h, w, 513, 513, 16)
            assert max(nh, nw) <= 513 and (nh - 1) % 16 == 0 and (nw - 1) % 16 == 0


# --- image bilinear (corners aligned), label nearest ----------------------------------------

def test_image_is_bilinear_with_corners_aligned():
    ramp = np.tile(np.arange(5, dtype=np.uint8) * 10, (3, 1))          # 0 10 20 30 40 in every row
    out = resize_aligned(ramp, 3, 9, nearest=False)
    assert out.dtype == np.float32
    # corners aligned: output x reads source x * 4 / 8 = x / 2, so the ramp goes in steps of 5
    np.testing.assert_allclose(out[1], np.arange(9) * 5.0)
    col = np.arange(4, dtype=np.uint8)[:, None] * np.ones((1, 2), np.uint8) * 30   # 0 30 60 90 down
    np.testing.assert_allclose(resize_aligned(col, 7, 2, nearest=False)[:, 0], np.arange(7) * 15.0)


def test_labels_are_nearest_and_ids_survive():
    seg = np.array([[3, 3, 149, 255],
                    [7, 7, 149, 255]], np.int32)
    out = resize_aligned(seg, 3, 7, nearest=True)
    assert out.dtype == np.int32
    assert set(np.unique(out)) <= {3, 7, 149, 255}
    # x' reads source round(x' * 3 / 6), halves rounded up: 0 1 1 2 2 3 3; y' reads round(y' / 2): 0 1 1
    np.testing.assert_array_equal(out[0], [3, 3, 3, 149, 149, 255, 255])
    np.testing.assert_array_equal(out[1], [7, 7, 7, 149, 149, 255, 255])
    np.testing.assert_array_equal(out[2], out[1])


# --- the data pipeline ---------------------------------------------------------------------

def _write(tmp_path, sizes, color=(10, 20, 30)):
    """Constant-colour PNG images of the given (H, W), with labels 0 / 5 split down the
    middle; returns the list path."""
    lines = []
    os.makedirs(tmp_path / "img", exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        img = np.zeros((h, w, 3), np.uint8) + np.array(color, np.uint8)
        seg = np.zeros((h, w), np.uint8)
        seg[:, w // 2:] = 5
        Image.fromarray(img).save(tmp_path / "img" / f"im{i}.png")
        Image.fromarray(seg).save(tmp_path / "img" / f"im{i}_gt.png")
        lines.append(f"/img/im{i}.png /img/im{i}_gt.png")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(lines) + "\n")
    return str(lst)


TINY = os.path.join(os.path.dirname(__file__), "..", "netdef", "deeplab_largefov_tiny.yaml")


def test_pipeline_resizes_image_and_label_before_the_crop(tmp_path):
    lst = _write(tmp_path, [(40, 60), (50, 30)])
    net = deeplab_compile.compile(TINY, phase="train", vars={"crop": 33})
    sec = {"source": lst, "root_folder": str(tmp_path), "batch_size": 1, "num_workers": 0,
           "mean_value": [0, 0, 0], "num_classes": 21, "resize_to_range": {"min": 32, "max": 32, "factor": 8}}
    pipe = pipeline_for(net, "test", sec)
    got = [(b["size"][0].tolist(), b["orig_size"][0].tolist(), b["label"][0, 0]) for b in pipe]
    # max 32 lowered to 25 (1 mod 8); 40 x 60: 60 -> 25, 40 -> ceil(16.7) = 17 (1 mod 8);
    # 50 x 30: 50 -> 25, 30 -> 15 -> 17
    assert [g[0] for g in got] == [[17, 25], [25, 17]]
    assert [g[1] for g in got] == [[40, 60], [50, 30]]
    lab = got[0][2]
    assert set(lab[:17, :25].unique().tolist()) == {0.0, 5.0}          # ids kept, nothing in between
    assert (lab[17:, :] == 255).all() and (lab[:, 25:] == 255).all()    # the crop padding


# --- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,msg", [
    ("{min: 513, max: 300}", r"max 300 is smaller than min 513"),
    ("{mni: 513}", r"unknown key 'mni'"),
    ("{max: 513}", r"needs 'min'"),
    ("{min: 0}", r"'min' must be a positive integer"),
    ("{min: 513, factor: 1.5}", r"'factor' must be a positive integer"),
    ("513", r"must be a mapping"),
])
def test_bad_resize_to_range_in_a_solver_data_section(text, msg):
    from deeplab_compile.netdef.parse import loads
    sec = loads(f"data: {{source: a.txt, resize_to_range: {text}}}\n", "solver.yaml")["data"]
    net = deeplab_compile.compile(TINY, phase="train", vars={"crop": 33})
    with pytest.raises(DataError, match=r"solver.yaml:1:\d+: data: .*" + msg) as e:
        pipeline_for(net, "train", sec)
    assert e.value.hint


def _net(tmp_path, lst, *extra):
    """A one-conv net (1x1, weights 1: each score is B + G + R) behind an ImageSegData layer
    with the ``extra`` lines."""
    p = tmp_path / "tiny_range.yaml"
    lines = ["name: tiny_range", "layers:", "  - name: data", "    type: ImageSegData", "    top: [data]",
             f"    source: {lst}", f"    root_folder: {tmp_path}", "    label_type: none", "    batch_size: 1",
             "    crop_size: 33", "    mean_value: [0, 0, 0]"] + [f"    {e}" for e in extra] + [
             "  - {name: score, type: Convolution, bottom: data, num_output: 2, kernel_size: 1,",
             "     weight_filler: {type: constant, value: 1}}"]
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_bad_resize_to_range_in_the_data_layer_exits_2_with_one_line(tmp_path, capsys):
    lst = _write(tmp_path, [(40, 60)])
    net = _net(tmp_path, lst, "resize_to_range: {min: 32, max: 16}")
    rc = test_cli.main(["--net", net, "--weights", "none.pt", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "tiny_range.yaml:" in err[0] and "max 16 is smaller than min 32" in err[0] and "max >= min" in err[0]
    net = _net(tmp_path, lst, "resize_to_range: {min: 32}", "new_height: 40", "new_width: 40")
    with pytest.raises(NetDefError, match=r"tiny_range.yaml:\d+:\d+: .*both 'resize_to_range' and 'new_height'"):
        deeplab_compile.compile(net, phase="test")


def test_cli_option_is_checked(tmp_path, capsys):
    lst = _write(tmp_path, [(40, 60)])
    rc = test_cli.main(["--net", _net(tmp_path, lst), "--weights", "none.pt", "--resize-to-range", "513,x"])
    err = capsys.readouterr().err
    assert rc == 2 and "--resize-to-range '513,x'" in err and "513,513,16" in err


# --- deeplab-test: features and PNGs at the original size -----------------------------------

@pytest.mark.parametrize("scales", ["1", "0.5,1"])
def test_deeplab_test_writes_scores_at_the_original_size(tmp_path, scales):
    # constant images: every score pixel is B + G + R = 60 (1x1 conv of ones, mean 0); had
    # the crop padding (0 after the mean) leaked into the resize back, the edges would read less
    lst = _write(tmp_path, [(40, 60), (50, 30), (20, 20)])
    net = _net(tmp_path, lst, "resize_to_range: {min: 32, max: 32, factor: 8}")
    r = run_test(net, None, features_dir=str(tmp_path / "feat"), png_dir=str(tmp_path / "png"),
                 num_workers=0, progress=False, scales=[float(s) for s in scales.split(",")])
    assert r.images == 3
    for i, (h, w) in enumerate([(40, 60), (50, 30), (20, 20)]):
        blob = read_blob(str(tmp_path / "feat" / f"im{i}_blob_0.mat"))
        assert blob.shape[-2:] == (h, w)                      # N, C, H, W at the image's own size
        if scales == "1":
            np.testing.assert_allclose(blob, 60.0, rtol=1e-5)
        with Image.open(tmp_path / "png" / f"im{i}.png") as im:
            assert (im.height, im.width) == (h, w)


def test_deeplab_test_option_resizes_a_net_without_the_key(tmp_path):
    lst = _write(tmp_path, [(40, 60)])
    net = _net(tmp_path, lst)
    weights = str(tmp_path / "w.pt")
    torch.save(deeplab_compile.compile(net, phase="test").state_dict(), weights)
    rc = test_cli.main(["--net", net, "--weights", weights, "--resize-to-range", "32,32,8",
                        "--features", str(tmp_path / "f"), "--workers", "0", "--no-progress"])
    assert rc == 0
    blob = read_blob(str(tmp_path / "f" / "im0_blob_0.mat"))
    assert blob.shape[-2:] == (40, 60)
    np.testing.assert_allclose(blob, 60.0, rtol=1e-5)

"""Evaluation against brute force, PNG and .mat predictions, errors; deeplab-test's
MatWrite files, PNGs and multi-scale inference."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import deeplab_compile
from deeplab_compile.evaluate import EvalError, confusion, evaluate, scores
from deeplab_compile.io.features import read_blob, write_blob

from conftest import NETDEF, ROOT

TINY = os.path.join(NETDEF, "deeplab_largefov_tiny.yaml")


def brute(pred, gt, c):
    m = np.zeros((c, c), np.int64)
    for p, g in zip(pred.ravel(), gt.ravel()):
        if g != 255:
            m[g, p] += 1
    iou = []
    for k in range(c):
        tp = m[k, k]
        fp = m[:, k].sum() - tp
        fn = m[k, :].sum() - tp
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else float("nan"))
    return m, iou


@pytest.mark.parametrize("seed", range(4))
def test_confusion_and_iou_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    c = 6
    gt = rng.integers(0, c, size=(9, 11))
    gt[rng.random(gt.shape) < 0.2] = 255
    gt[gt == 3] = 255                                  # one class absent from the ground truth
    pred = rng.integers(0, c, size=gt.shape)
    pred[pred == 5] = 0
    m = confusion(pred, gt, c)
    want, iou = brute(pred, gt, c)
    np.testing.assert_array_equal(m, want)
    s = scores(m)
    np.testing.assert_allclose(s["iou"], iou, equal_nan=True)
    assert s["miou"] == pytest.approx(np.nanmean(iou))
    assert s["pixel_accuracy"] == pytest.approx(np.trace(want) / want.sum())


def test_deeplab_matlab_mean_counts_absent_classes_as_zero():
    # 4 classes; only 0 and 1 occur.  MyVOCevalseg.m: IoU = TP / max(TP + FP + FN, 1) for
    # every class, mean = sum / 4.  Defined-classes mean: over classes 0 and 1 only.
    m = np.array([[3, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    s = scores(m)
    iou0, iou1 = 3 / (4 + 4 - 3), 2 / (3 + 3 - 2)          # 0.6, 0.5
    assert s["miou"] == pytest.approx((iou0 + iou1) / 2)    # 0.55
    assert s["miou_deeplab"] == pytest.approx((iou0 + iou1 + 0 + 0) / 4)    # 0.275
    # A class predicted but absent from the ground truth is 0 in both means.
    m2 = m.copy()
    m2[0, 3] = 1
    assert scores(m2)["miou"] == pytest.approx((3 / 6 + 0.5 + 0) / 3)
    assert scores(m2)["miou_deeplab"] == pytest.approx((3 / 6 + 0.5 + 0 + 0) / 4)
    # With every class present the two agree (full VOC val).
    full = np.diag([5, 4, 3, 2]) + 1
    assert scores(full)["miou"] == pytest.approx(scores(full)["miou_deeplab"])


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, pred_dir, mat_dir = tmp_path / "gt", tmp_path / "pred", tmp_path / "mat"
    for d in (gt_dir, pred_dir, mat_dir):
        d.mkdir()
    ids, total = [], np.zeros((4, 4), np.int64)
    for k in range(3):
        h, w = 7 + k, 9
        gt = rng.integers(0, 4, size=(h, w)).astype(np.uint8)
        gt[0, :3] = 255
        scores_ = rng.normal(size=(1, 4, 12, 12)).astype(np.float32)    # padded, larger than the image
        pred = scores_[0, :, :h, :w].argmax(0).astype(np.uint8)
        Image.fromarray(gt).save(gt_dir / f"im{k}.png")
        Image.fromarray(pred).save(pred_dir / f"im{k}.png")
        write_blob(str(mat_dir / f"im{k}_blob_0.mat"), scores_)
        total += brute(pred, gt, 4)[0]
        ids.append(f"im{k}")
    lst = tmp_path / "val.txt"
    lst.write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClass/{i}.png\n" for i in ids))
    return tmp_path, total


def test_png_and_mat_predictions_give_the_brute_force_result(folders):
    tmp, total = folders
    for pred in ("pred", "mat"):
        r = evaluate(str(tmp / pred), str(tmp / "gt"), str(tmp / "val.txt"), 4)
        np.testing.assert_array_equal(r.confusion, total)
        assert r.images == 3
        assert "mIOU" in r.table()


def test_mat_files_are_matwrite_layout(tmp_path):
    import scipy.io
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    write_blob(str(tmp_path / "a_blob_0.mat"), x)
    m = scipy.io.loadmat(str(tmp_path / "a_blob_0.mat"))["data"]
    assert m.dtype == np.float32 and m.shape == (5, 4, 3, 2)         # [W, H, C, N]
    assert m[4, 1, 2, 0] == x[0, 2, 1, 4]
    np.testing.assert_array_equal(read_blob(str(tmp_path / "a_blob_0.mat")), x)


def test_eval_errors_name_file_and_value(folders):
    tmp, _ = folders
    bad = np.zeros((7, 9), np.uint8)
    bad[2, 2] = 9
    Image.fromarray(bad).save(tmp / "gt" / "im0.png")
    with pytest.raises(EvalError, match=r"val.txt:1:1: ground truth '.*im0.png' has value 9 outside \[0, 4\)"):
        evaluate(str(tmp / "pred"), str(tmp / "gt"), str(tmp / "val.txt"), 4)
    os.remove(tmp / "pred" / "im1.png")
    with pytest.raises(EvalError, match=r"val.txt:2:1: no prediction for 'im1'"):
        evaluate(str(tmp / "pred"), str(tmp / "gt"), str(tmp / "val.txt"), 10)


def test_eval_cli_writes_json_and_one_line_errors(folders):
    tmp, total = folders
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-m", "deeplab_compile.cli.evaluate", "--pred", str(tmp / "mat"), "--gt",
                        str(tmp / "gt"), "--list", str(tmp / "val.txt"), "--num-classes", "4", "--no-progress"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.load(open(tmp / "mat" / "results.json"))
    assert res["confusion"] == total.tolist() and set(res) >= {"miou", "pixel_accuracy", "per_class_iou"}
    # Both means, each named: DeepLab's MATLAB one and the defined-classes one.
    tp = np.diag(total).astype(float)
    union = total.sum(0) + total.sum(1) - tp
    assert res["miou_deeplab"] == pytest.approx((tp / np.maximum(union, 1)).sum() / 4)
    assert res["miou"] == pytest.approx((tp / union)[union > 0].mean())
    assert "MyVOCevalseg" in res["miou_conventions"]["miou_deeplab"]
    assert "mIOU (DeepLab)" in r.stdout and "MyVOCevalseg.m" in r.stdout and "defined classes" in r.stdout
    r = subprocess.run([sys.executable, "-m", "deeplab_compile.cli.evaluate", "--pred", str(tmp / "nope"), "--gt",
                        str(tmp / "gt"), "--list", str(tmp / "val.txt"), "--num-classes", "4"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr


def test_deeplab_test_writes_matwrite_features_pngs_and_multiscale(tmp_path):
    from deeplab_compile.data.synthetic import generate
    from deeplab_compile.test import run_test
    syn = generate(str(tmp_path / "voc"), num_images=5, min_size=30, max_size=40, seed=1, val_fraction=0.4)
    net = deeplab_compile.compile(TINY, phase="test", vars={"width": 4})
    torch.save(net.state_dict(), tmp_path / "w.pt")
    # a test netdef with DeepLab's MatWrite after the scores
    text = open(TINY).read().replace("name: deeplab_largefov_tiny", "name: tiny_matwrite")
    text = text.replace("include: [lib/vgg16.yaml]", f"include: [{NETDEF}/lib/vgg16.yaml]")
    text += (f"  - {{name: fc8_mat, type: MatWrite, bottom: fc8_interp, prefix: {tmp_path}/feat/,\n"
             f"     source: {syn}/list/val_id.txt, phase: test, top: []}}\n")
    (tmp_path / "test.yaml").write_text(text)
    lst = os.path.join(syn, "list", "val.txt")
    r = run_test(str(tmp_path / "test.yaml"), str(tmp_path / "w.pt"), list_path=lst, root=syn,
                 vars={"width": 4, "crop": 41}, png_dir=str(tmp_path / "png"), progress=False)
    ids = open(os.path.join(syn, "list", "val_id.txt")).read().split()
    assert r.images == 2 and len(ids) == 2
    for i in ids:
        blob = read_blob(str(tmp_path / "feat" / f"{i}_blob_0.mat"))
        assert blob.shape == (1, 21, 41, 41)
        png = np.asarray(Image.open(tmp_path / "png" / f"{i}.png"))
        h, w = Image.open(os.path.join(syn, "JPEGImages", i + ".jpg")).size[::-1]
        assert png.shape == (h, w)
        np.testing.assert_array_equal(png, blob[0, :, :h, :w].argmax(0))
    # the same through the command with multi-scale + flip
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "deeplab_compile.cli.test", "--net", TINY, "--weights",
                        str(tmp_path / "w.pt"), "--list", lst, "--root", syn, "-D", "width=4", "--scales",
                        "0.75,1,1.25", "--flip", "--features", str(tmp_path / "ms"), "--png", str(tmp_path / "mspng"),
                        "--gpu", "cpu", "--no-progress"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    for i in ids:
        f = read_blob(str(tmp_path / "ms" / f"{i}_blob_0.mat"))
        h, w = Image.open(os.path.join(syn, "JPEGImages", i + ".jpg")).size[::-1]
        assert f.shape == (1, 21, h, w)
        np.testing.assert_allclose(np.exp(f).sum(1), 1.0, rtol=1e-4)          # log of mean probabilities
    r = evaluate(str(tmp_path / "mspng"), os.path.join(syn, "SegmentationClass"), lst, 21)
    assert r.images == 2

"""matlab_compat/ in GNU Octave: its mIOU equals deeplab-eval's on the same files, its
MatWrite reader and its CRF-output conversion agree with the Python side.  Skipped
when octave is not installed (bash scripts/install_octave.sh)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from deeplab_compile.data.synthetic import generate
from deeplab_compile.evaluate import evaluate
from deeplab_compile.io.mat import read_scores, write_blob
from deeplab_compile.io.palette import read_label_png, write_label_png

from conftest import ROOT

OCTAVE = shutil.which("octave-cli") or shutil.which("octave")
pytestmark = pytest.mark.skipif(OCTAVE is None, reason="GNU Octave is not installed (scripts/install_octave.sh)")


def octave(code: str) -> str:
    r = subprocess.run([OCTAVE, "--no-gui", "--quiet", "--no-window-system", "--eval",
                        f"addpath('{os.path.join(ROOT, 'matlab_compat')}'); {code}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """A small synthetic set, noisy features padded past each image (as MatWrite saves
    them at the crop size) and PNG predictions from them."""
    tmp = tmp_path_factory.mktemp("matlab")
    syn = generate(str(tmp / "voc"), num_images=10, val_fraction=0.5, min_size=30, max_size=41, seed=3)
    rng = np.random.default_rng(0)
    ids = open(os.path.join(syn, "list", "val_id.txt")).read().split()
    feats, pngs = tmp / "feats", tmp / "pngs"
    pngs.mkdir()
    for i in ids:
        gt = read_label_png(os.path.join(syn, "SegmentationClass", i + ".png"))
        h, w = gt.shape
        s = rng.normal(0, 1, (21, 49, 49)).astype(np.float32)
        s[gt, np.arange(h)[:, None], np.arange(w)[None, :]] += 1.5 * (rng.random((h, w)) < 0.7)
        s[:, :h, :w][3] = np.where(rng.random((h, w)) < 0.05, 50, s[3, :h, :w])   # a few ties are impossible
        write_blob(str(feats / f"{i}_blob_0.mat"), s[None])
        write_label_png(str(pngs / f"{i}.png"), s[:, :h, :w].argmax(0).astype(np.uint8))
    return syn, feats, pngs, ids


@pytest.mark.parametrize("kind", ["feats", "pngs"])
def test_octave_miou_equals_deeplab_eval(predictions, kind):
    syn, feats, pngs, ids = predictions
    pred = feats if kind == "feats" else pngs
    lst = os.path.join(syn, "list", "val.txt")
    py = evaluate(str(pred), os.path.join(syn, "SegmentationClass"), lst, 21)
    out = octave(f"[m, iou, conf, acc, md] = eval_seg('{pred}', '{syn}/SegmentationClass', '{lst}', 21); "
                 "printf('%.12f %.12f %d %.12f\\n', m, acc, sum(conf(:)), md);")
    miou, acc, pixels, miou_deeplab = out.split()
    assert float(miou) == pytest.approx(py.scores["miou"], abs=1e-9)
    assert float(miou_deeplab) == pytest.approx(py.scores["miou_deeplab"], abs=1e-9)
    assert float(acc) == pytest.approx(py.scores["pixel_accuracy"], abs=1e-9)
    assert int(pixels) == int(py.confusion.sum())


def test_octave_deeplab_miou_counts_absent_classes_as_zero(predictions, tmp_path):
    # Predictions near the ground truth: the 5 images miss most of the 21 classes, so
    # MyVOCevalseg's mean (absent classes 0, over all 21) is far below the defined one.
    syn, _, _, ids = predictions
    rng = np.random.default_rng(1)
    pred = tmp_path / "near"
    pred.mkdir()
    for i in ids:
        gt = read_label_png(os.path.join(syn, "SegmentationClass", i + ".png"))
        p = np.where(gt == 255, 0, gt).astype(np.uint8)
        p[rng.random(p.shape) < 0.1] = 0
        write_label_png(str(pred / f"{i}.png"), p)
    lst = os.path.join(syn, "list", "val.txt")
    py = evaluate(str(pred), os.path.join(syn, "SegmentationClass"), lst, 21)
    out = octave(f"[m, iou, conf, acc, md] = eval_seg('{pred}', '{syn}/SegmentationClass', '{lst}', 21); "
                 "printf('%.12f %.12f\\n', m, md);")
    miou, miou_deeplab = (float(v) for v in out.split())
    assert miou == pytest.approx(py.scores["miou"], abs=1e-9)
    assert miou_deeplab == pytest.approx(py.scores["miou_deeplab"], abs=1e-9)
    assert miou_deeplab < miou - 0.1


def test_read_matwrite_and_crf_to_png(predictions, tmp_path):
    syn, feats, pngs, ids = predictions
    i = ids[0]
    ref = read_scores(str(feats / f"{i}_blob_0.mat"))
    out = octave(f"s = read_matwrite('{feats}/{i}_blob_0.mat'); printf('%d %d %d %.6f\\n', size(s, 1), "
                 "size(s, 2), size(s, 3), s(2, 3, 4));")
    h, w, c, v = out.split()
    assert (int(h), int(w), int(c)) == (49, 49, 21)
    assert float(v) == pytest.approx(float(ref[3, 1, 2]), abs=1e-5)      # MATLAB (2,3,4) = C 3, H 1, W 2
    out_dir = tmp_path / "png"
    octave(f"n = crf_to_png('{feats}', '{out_dir}', '{syn}/list/val.txt', '{syn}/JPEGImages'); printf('%d\\n', n);")
    for i in ids:
        got = read_label_png(str(out_dir / f"{i}.png"))
        assert np.array_equal(got, read_label_png(str(pngs / f"{i}.png")))

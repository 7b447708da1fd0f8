"""deeplab-crf over MatWrite features: outputs, resume, bad files, grid search."""
import csv
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image

from deeplab_compile.cli.crf import main
from deeplab_compile.crf import dense_crf
from deeplab_compile.io.mat import write_blob
from deeplab_compile.io.palette import read_label_png

from crf_helpers import noisy_logits

CROP = 48  # features are padded to the crop size, as DeepLab's test nets wrote them


@pytest.fixture
def tree(tmp_path):
    """Three small images (different sizes) with padded logits and labels."""
    feats, imgs, labs = tmp_path / "features", tmp_path / "images", tmp_path / "labels"
    for d in (feats, imgs, labs):
        d.mkdir()
    rng = np.random.default_rng(0)
    ids = ["a", "b", "c"]
    for k, (i, (h, w)) in enumerate(zip(ids, [(40, 30), (48, 48), (20, 44)])):
        regions = ((np.arange(h)[:, None] // 10 + np.arange(w)[None, :] // 15) % 3).astype(np.uint8)
        colours = rng.integers(0, 256, (3, 3))
        img = np.clip(colours[regions] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(imgs / f"{i}.png" if k != 1 else imgs / f"{i}.jpg", quality=100)
        Image.fromarray(regions, mode="L").save(labs / f"{i}.png")
        logits = noisy_logits(regions, 3, strength=1.0, noise=1.0, seed=k)
        padded = np.full((3, CROP, CROP), -5.0, np.float32)
        padded[:, :h, :w] = logits
        write_blob(feats / f"{i}_blob_0.mat", padded[None])
    (tmp_path / "val.txt").write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids))
    return tmp_path


def _run(tree, *extra):
    return main(["--features", str(tree / "features"), "--images", str(tree / "images"),
                 "--list", str(tree / "val.txt"), "-q", *extra])


def test_writes_palette_pngs_in_deeplab_folder(tree):
    assert _run(tree, "--save-probs") == 0
    out = tree / "features" / "post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3"
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png", "probs"]
    with Image.open(out / "c.png") as im:
        assert im.mode == "P" and im.size == (44, 20)
    # Same answer as the Python API on the cropped scores.
    img = np.array(Image.open(tree / "images" / "a.png").convert("RGB"))
    scores = scipy.io.loadmat(tree / "features" / "a_blob_0.mat")["data"].transpose(3, 2, 1, 0)[0, :, :40, :30]
    q = dense_crf(img, np.ascontiguousarray(scores), "deeplab_largefov")
    np.testing.assert_array_equal(read_label_png(out / "a.png"), q.argmax(0))
    probs = scipy.io.loadmat(out / "probs" / "a_blob_0.mat")["data"]
    assert probs.shape == (30, 40, 3, 1)


def test_resume_skips_complete_outputs(tree, capsys):
    out = tree / "o"
    assert _run(tree, "--out", str(out), "--jobs", "2") == 0
    stamp = os.path.getmtime(out / "b.png")
    os.remove(out / "a.png")
    assert _run(tree, "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "1 written, 2 already complete, 0 failed" in err
    assert os.path.getmtime(out / "b.png") == stamp


def test_bad_files_are_reported_and_skipped(tree, capsys):
    os.remove(tree / "images" / "b.jpg")
    scipy.io.savemat(tree / "features" / "c_blob_0.mat", {"probs": np.zeros((3, 3), np.float32)})
    out = tree / "o"
    assert _run(tree, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "missing image for feature file" in err and "b_blob_0.mat" in err
    assert "no variable 'data'" in err
    assert "1 written, 0 already complete, 2 failed" in err
    assert os.listdir(out) == ["a.png"]


def test_grid_prints_table_best_first_and_saves_csv(tree, capsys):
    csv_path = tree / "grid.csv"
    rc = _run(tree, "--labels", str(tree / "labels"), "--subset", "2", "--grid", "bi_w=0,4",
              "bi_xy_std=10:20:30", "--csv", str(csv_path))
    assert rc == 0
    printed = capsys.readouterr().out
    assert "without CRF" in printed and "mIOU" in printed
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 4 and {r["bi_xy_std"] for r in rows} == {"10.0", "30.0"}
    mious = [float(r["miou"]) for r in rows]
    assert mious == sorted(mious, reverse=True) and rows[0]["images"] == "2"


@pytest.mark.parametrize("args,match", [
    (["--grid", "bi_w=1"], "--grid needs --labels"),
    (["--bi-xy-std", "0"], "'bi_xy_std' must be a positive"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--grid", "bi_q=1", "--labels", "."], "unknown parameter 'bi_q'"),
])
def test_command_errors_exit_2_with_one_line(tree, capsys, args, match):
    assert _run(tree, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ": error: " in err
    assert match in err


def test_bad_storage_setting_fails_once_before_any_image(tree, capsys, monkeypatch):
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", "fp16")
    assert _run(tree, "--out", str(tree / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DEEPLAB_CRF_STORAGE" in err and "float32" in err
    assert not (tree / "out").exists()


def test_missing_folder_exits_2(tmp_path, capsys):
    assert main(["--features", str(tmp_path / "nope"), "--images", str(tmp_path)]) == 2
    assert "not a folder" in capsys.readouterr().err

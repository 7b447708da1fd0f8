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
    (["--grid", "sigma=1", "--labels", "."], "unknown parameter 'sigma'; use bi_w, bi_xy_std"),
    (["--grid", "bi_xy_sdt=1", "--labels", "."], "unknown parameter 'bi_xy_sdt'; did you mean 'bi_xy_std'?"),
])
def test_command_errors_exit_2_with_one_line(tree, capsys, args, match):
    assert _run(tree, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ": error: " in err
    assert match in err


def test_mistyped_choice_is_one_line_naming_the_near_miss(tree, capsys):
    with pytest.raises(SystemExit) as exit_:
        _run(tree, "--preset", "deeplab_largfov")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deeplab-crf: error: argument --preset")
    assert "did you mean 'deeplab_largefov'?" in err


@pytest.mark.parametrize("command", ["compile", "convert", "crf", "evaluate", "predict", "synthetic", "test",
                                     "train"])
def test_every_command_reports_argument_errors_in_one_line(command, capsys):
    import importlib
    parser = importlib.import_module(f"deeplab_compile.cli.{command}").build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--no-such-flag"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deeplab-") and "(-h for the usage)" in err
    assert "unrecognized argument --no-such-flag" in err   # not hidden behind a missing required flag


def test_mistyped_flag_is_named_before_the_required_one_it_misses(tree, capsys):
    # --imgs for --images: argparse alone says only that --images is required.
    with pytest.raises(SystemExit) as exit_:
        main(["--features", str(tree / "features"), "--imgs", str(tree / "images"), "-q"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "deeplab-crf: error: unrecognized argument --imgs; did you mean '--images'? (-h for the usage)"


def test_flag_prefixes_still_work(tree):
    # argparse takes an unambiguous prefix of a flag; the check for unknown flags keeps that.
    assert _run(tree, "--preset", "deeplab_largefov") == 0
    assert _run(tree, "--pres", "deeplab_largefov") == 0


def test_bad_storage_setting_fails_once_before_any_image(tree, capsys, monkeypatch):
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", "fp16")
    assert _run(tree, "--out", str(tree / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DEEPLAB_CRF_STORAGE" in err and "float32" in err
    assert not (tree / "out").exists()


def test_missing_folder_exits_2(tmp_path, capsys):
    assert main(["--features", str(tmp_path / "nope"), "--images", str(tmp_path)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_default_is_deeplab_normalization_and_symmetric_gets_its_own_folder(tree):
    assert _run(tree, "--save-probs") == 0
    assert _run(tree, "--save-probs", "--normalization", "symmetric") == 0
    feats = tree / "features"
    deeplab = feats / "post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3"
    sym = feats / "post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3_symmetric"
    assert sorted(p.name for p in feats.iterdir() if p.is_dir()) == [deeplab.name, sym.name]
    img = np.array(Image.open(tree / "images" / "a.png").convert("RGB"))
    scores = np.ascontiguousarray(
        scipy.io.loadmat(feats / "a_blob_0.mat")["data"].transpose(3, 2, 1, 0)[0, :, :40, :30])
    for folder, norm in ((deeplab, "after"), (sym, "symmetric")):
        probs = scipy.io.loadmat(folder / "probs" / "a_blob_0.mat")["data"].transpose(3, 2, 1, 0)[0]
        want = dense_crf(img, scores, dict(bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3, pos_xy_std=3,
                                           normalization=norm))
        np.testing.assert_allclose(probs, want, atol=1e-6)
    # The pydensecrf_* preset is the same as --normalization symmetric.
    assert _run(tree, "--preset", "pydensecrf_largefov", "--out", str(tree / "p")) == 0
    for i in ("a", "b", "c"):
        np.testing.assert_array_equal(read_label_png(tree / "p" / f"{i}.png"), read_label_png(sym / f"{i}.png"))


def test_grid_keeps_the_normalization_and_records_it(tree):
    for extra, norm in (((), "after"), (("--normalization", "symmetric"), "symmetric")):
        csv_path = tree / f"grid_{norm}.csv"
        assert _run(tree, "--labels", str(tree / "labels"), "--grid", "bi_w=0,4", "--csv", str(csv_path),
                    *extra) == 0
        assert {r["normalization"] for r in csv.DictReader(open(csv_path))} == {norm}


def test_grid_ranks_by_deeplab_miou_by_default_or_by_defined_classes(tree, capsys, monkeypatch):
    # Two settings whose order differs under the two conventions, with the CRF replaced
    # by fixed predictions: the ground truth holds classes 0 and 1 of 3.
    import deeplab_compile.cli.crf as crf_cli
    from deeplab_compile.io.palette import write_label_png

    labs = tree / "labels"
    gt = np.zeros((8, 8), np.uint8)
    gt[:, 4:] = 1                                      # classes 0 and 1 only; class 2 is absent
    for i in ("a", "b", "c"):
        write_label_png(labs / f"{i}.png", gt)

    def fake_crf(img, scores, params, iterations, kind):
        h, w = scores.shape[1:]
        q = np.zeros((3, h, w), np.float32)
        pred = gt.copy()
        if params.bi_w == 1:        # nearly perfect, but one pixel called class 2
            pred[0, 0] = 2          # both means (31/32 + 1 + 0) / 3 = 0.656
        else:                       # a quarter of class 1 called 0, never class 2
            pred[:2, 4:] = 0        # defined (32/40 + 24/32) / 2 = 0.775; DeepLab's / 3 = 0.517
        q[pred, np.arange(h)[:, None], np.arange(w)[None, :]] = 1
        return q

    def fake_pair(features, images, image_id, suffix):
        return np.zeros((8, 8, 3), np.uint8), np.zeros((3, 8, 8), np.float32)

    monkeypatch.setattr(crf_cli, "dense_crf", fake_crf)
    monkeypatch.setattr(crf_cli, "load_pair", fake_pair)
    orders = {}
    for extra in ((), ("--rank-by", "defined"), ("--rank-by", "deeplab")):
        csv_path = tree / "g.csv"
        assert _run(tree, "--labels", str(labs), "--grid", "bi_w=1,2", "--csv", str(csv_path), *extra) == 0
        rows = list(csv.DictReader(open(csv_path)))
        orders[extra] = [float(r["bi_w"]) for r in rows]
        by = {float(r["bi_w"]): r for r in rows}
        assert float(by[1.0]["miou_deeplab"]) == pytest.approx(100 * (31 / 32 + 1 + 0) / 3, abs=1e-3)
        assert float(by[1.0]["miou"]) == pytest.approx(100 * (31 / 32 + 1 + 0) / 3, abs=1e-3)
        assert float(by[2.0]["miou_deeplab"]) == pytest.approx(100 * (32 / 40 + 24 / 32) / 3, abs=1e-3)
        assert float(by[2.0]["miou"]) == pytest.approx(100 * (32 / 40 + 24 / 32) / 2, abs=1e-3)
    assert orders[()] == orders[("--rank-by", "deeplab")] == [1.0, 2.0]
    assert orders[("--rank-by", "defined")] == [2.0, 1.0]
    printed = capsys.readouterr().out
    assert "ranked by DeepLab mIOU" in printed and "ranked by defined-classes mIOU" in printed

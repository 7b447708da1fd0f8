"""deeplab_compile.crf: parameters, presets, input checks, batching; io helpers."""
import numpy as np
import pytest
import scipy.io
import torch

from deeplab_compile.crf import CRFError, CRFParams, PRESETS, dense_crf, dense_crf_batch, labels, resolve
from deeplab_compile.crf.grid import confusion, expand_grid, mean_iou, parse_grid_axis
from deeplab_compile.io.mat import MatFileError, read_blob, read_scores, write_blob
from deeplab_compile.io.palette import (ade20k_palette, cityscapes_palette, read_label_png, voc_palette,
                                        write_label_png)

RNG = np.random.default_rng(0)
IMG = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
LOGITS = RNG.normal(0, 1, (4, 20, 30)).astype(np.float32)


def test_presets_hold_published_values():
    got = {k: (p.bi_w, p.bi_xy_std, p.bi_rgb_std, p.pos_w, p.pos_xy_std, p.normalization)
           for k, p in PRESETS.items()}
    published = {"largefov": (4, 121, 5, 3, 3), "v1": (5, 50, 10, 3, 3), "v2_resnet101": (4, 67, 3, 3, 1)}
    # DeepLab's densecrf normalised each kernel after filtering; the pydensecrf_* twins
    # carry the same numbers with pydensecrf's default normalisation.
    assert got == {**{"deeplab_" + k: v + ("after",) for k, v in published.items()},
                   **{"pydensecrf_" + k: v + ("symmetric",) for k, v in published.items()}}
    assert PRESETS["deeplab_largefov"].dirname() == "post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3"


def test_dirname_has_a_suffix_only_for_non_deeplab_normalization():
    assert PRESETS["deeplab_v2_resnet101"].dirname() == "post_densecrf_W4_XStd67_RStd3_PosW3_PosXStd1"
    assert PRESETS["pydensecrf_largefov"].dirname() == "post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3_symmetric"
    assert resolve("deeplab_largefov", normalization="symmetric").dirname().endswith("_PosXStd3_symmetric")


def test_deeplab_spelling_defaults_to_deeplab_normalization_and_pydensecrf_spelling_to_pydensecrf():
    assert resolve(None).normalization == "after"
    assert resolve(dict(bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3, pos_xy_std=3)).normalization == "after"
    assert CRFParams(bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3, pos_xy_std=3).normalization == "after"
    pyd = {"gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": 121, "srgb": 5, "compat": 4}}
    assert resolve(pyd) == resolve("pydensecrf_largefov")
    assert resolve(dict(pyd, normalization="after")) == resolve("deeplab_largefov")


def test_both_spellings_resolve_to_the_same_parameters():
    deeplab = resolve(dict(bi_w=4, bi_xy_std=121, bi_rgb_std=5, pos_w=3, pos_xy_std=3))
    pyd = resolve({"gaussian": {"sxy": 3, "compat": 3}, "bilateral": {"sxy": (121, 121), "srgb": 5, "compat": 4}})
    pyd = pyd.with_(normalization="after")            # pydensecrf's spelling keeps its own default
    assert deeplab == pyd == resolve("deeplab_largefov") == resolve(None)
    assert resolve("deeplab_v1", bi_w=7).bi_w == 7
    assert resolve({"preset": "deeplab_v1", "pos_w": 1}).pos_w == 1
    assert pyd.as_pydensecrf()["bilateral"] == {"sxy": 121, "srgb": 5, "compat": 4}
    a = dense_crf(IMG, LOGITS, deeplab)
    b = dense_crf(IMG, LOGITS, pyd)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("params,match", [
    (dict(bi_w=4, bi_xy_std=0, bi_rgb_std=5, pos_w=3, pos_xy_std=3), "'bi_xy_std' must be a positive"),
    (dict(bi_w=4, bi_xy_std=50, bi_rgb_std=-1, pos_w=3, pos_xy_std=3), "'bi_rgb_std' must be a positive"),
    (dict(bi_w=-1, bi_xy_std=50, bi_rgb_std=5, pos_w=3, pos_xy_std=3), "'bi_w' must be a non-negative"),
    (dict(bi_w=4, bi_xy_std=float("nan"), bi_rgb_std=5, pos_w=3, pos_xy_std=3), "'bi_xy_std' must be finite"),
    (dict(bi_w=4), "miss bi_xy_std"),
    (dict(bi_ww=4), "unknown CRF parameter 'bi_ww'; did you mean 'bi_w'"),
    ({"bilateral": {"sxy": 3, "srgb": 0, "compat": 1}}, "'bilateral.srgb'"),
    ({"gaussian": {"sxy": (3, 4), "compat": 1}}, "equal"),
    ("nope", "unknown CRF preset 'nope'; choose one of deeplab_largefov"),
    ("deeplab_largefv", "unknown CRF preset 'deeplab_largefv'; did you mean 'deeplab_largefov'"),
])
def test_bad_parameters_name_the_argument(params, match):
    with pytest.raises(CRFError, match=match):
        resolve(params)


def test_bad_storage_setting_is_a_crf_error(monkeypatch):
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", "double")
    img = np.zeros((6, 7, 3), np.uint8)
    with pytest.raises(CRFError, match="DEEPLAB_CRF_STORAGE must be"):
        dense_crf(img, np.zeros((2, 6, 7), np.float32))


def test_bad_inputs_name_the_argument():
    with pytest.raises(CRFError, match="'scores' are 20x29 .* but 'image' is 20x30"):
        dense_crf(IMG, LOGITS[:, :, :29])
    with pytest.raises(CRFError, match="'scores' contain NaN"):
        dense_crf(IMG, np.where(LOGITS > 2, np.nan, LOGITS))
    with pytest.raises(CRFError, match="'scores' contain NaN or infinite"):
        dense_crf(IMG, np.where(LOGITS > 2, np.inf, LOGITS))
    with pytest.raises(CRFError, match="'image' must be uint8"):
        dense_crf(IMG.astype(np.float32), LOGITS)
    with pytest.raises(CRFError, match="'scores' must be floating point"):
        dense_crf(IMG, LOGITS.astype(np.int32))
    with pytest.raises(CRFError, match="'image' must be H x W x 3"):
        dense_crf(IMG[..., :2], LOGITS)
    with pytest.raises(CRFError, match="'scores' must be C x H x W"):
        dense_crf(IMG, LOGITS[0])
    with pytest.raises(CRFError, match="probabilities must lie in"):
        dense_crf(IMG, LOGITS, kind="probs")
    with pytest.raises(CRFError, match="'iterations'"):
        dense_crf(IMG, LOGITS, iterations=-1)
    with pytest.raises(CRFError, match="'kind'"):
        dense_crf(IMG, LOGITS, kind="energy")


def test_outputs_follow_the_input_kind():
    q = dense_crf(IMG, LOGITS)
    assert isinstance(q, np.ndarray) and q.dtype == np.float32 and q.shape == LOGITS.shape
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    qt = dense_crf(torch.from_numpy(IMG), torch.from_numpy(LOGITS))
    assert isinstance(qt, torch.Tensor)
    np.testing.assert_array_equal(qt.numpy(), q)
    assert labels(q).shape == (20, 30) and labels(q).dtype == np.uint8
    # kind="probs" and kind="unary" reach the same answer as logits
    p = torch.softmax(torch.from_numpy(LOGITS), 0).numpy()
    np.testing.assert_allclose(dense_crf(IMG, p, kind="probs"), q, atol=1e-4)
    np.testing.assert_allclose(dense_crf(IMG, -np.log(p), kind="unary"), q, atol=1e-4)


def test_crf_smooths_a_noisy_labelling():
    regions = (np.arange(40)[:, None] // 20 * 2 + np.arange(60)[None, :] // 30).astype(np.uint8)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]])
    img = colours[regions].astype(np.uint8)
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (4, 40, 60)).astype(np.float32)
    logits[regions, np.arange(40)[:, None], np.arange(60)[None, :]] += 1.0
    before = (logits.argmax(0) == regions).mean()
    after = (dense_crf(img, logits, "deeplab_v1").argmax(0) == regions).mean()
    assert before < 0.8 and after > 0.98


def test_batch_matches_single_calls():
    imgs = RNG.integers(0, 256, (3, 16, 18, 3), dtype=np.uint8)
    scores = RNG.normal(0, 1, (3, 5, 16, 18)).astype(np.float32)
    out = dense_crf_batch(imgs, scores, "deeplab_v1", 5)
    assert out.shape == scores.shape
    for b in range(3):
        np.testing.assert_allclose(out[b], dense_crf(imgs[b], scores[b], "deeplab_v1", 5), atol=1e-6)
    listed = dense_crf_batch([imgs[0], IMG], [scores[0], LOGITS], "deeplab_v1", 5)
    assert [q.shape for q in listed] == [(5, 16, 18), (4, 20, 30)]
    with pytest.raises(CRFError, match="'images' holds 3 images but 'scores' 2"):
        dense_crf_batch(imgs, scores[:2])


def test_grid_parsing_and_miou():
    assert parse_grid_axis("bi_xy_std=49:20:129") == ("bi_xy_std", [49, 69, 89, 109, 129])
    assert parse_grid_axis("bi_w=3,4,5") == ("bi_w", [3, 4, 5])
    grid = expand_grid(["bi_w=3,4", "bi_rgb_std=3:1:5"], PRESETS["deeplab_largefov"])
    assert len(grid) == 6 and {g.bi_xy_std for g in grid} == {121}
    for bad in ("bi_w", "foo=1", "bi_w=a", "bi_w=5:1:3"):
        with pytest.raises(CRFError):
            parse_grid_axis(bad)
    gt = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 0]])
    c = confusion(pred, gt, 2)
    assert c.tolist() == [[1, 1], [0, 1]]
    assert mean_iou(c) == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_mat_roundtrip_matches_matwrite_layout(tmp_path):
    blob = RNG.normal(0, 1, (1, 3, 5, 4)).astype(np.float32)
    path = tmp_path / "x_blob_0.mat"
    write_blob(path, blob)
    raw = scipy.io.loadmat(path)["data"]
    assert raw.shape == (4, 5, 3, 1) and raw.dtype == np.float32      # [W, H, C, N]
    assert raw[2, 1, 0, 0] == blob[0, 0, 1, 2]
    np.testing.assert_array_equal(read_blob(path), blob)
    np.testing.assert_array_equal(read_scores(path, 3, 2), blob[0, :, :3, :2])
    # MATLAB drops the trailing singleton N
    scipy.io.savemat(tmp_path / "y.mat", {"data": np.asfortranarray(raw[..., 0])})
    np.testing.assert_array_equal(read_blob(tmp_path / "y.mat"), blob)
    scipy.io.savemat(tmp_path / "z.mat", {"probs": raw})
    with pytest.raises(MatFileError, match="no variable 'data'"):
        read_blob(tmp_path / "z.mat")
    with pytest.raises(MatFileError, match="smaller|but the image is"):
        read_scores(path, 6, 4)
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(MatFileError, match="not a readable"):
        read_blob(tmp_path / "bad.mat")


def test_palettes_and_png(tmp_path):
    assert voc_palette()[[0, 1, 15]].tolist() == [[0, 0, 0], [128, 0, 0], [192, 128, 128]]
    assert cityscapes_palette()[0].tolist() == [128, 64, 128]
    assert ade20k_palette()[0].tolist() == [120, 120, 120] and len({tuple(c) for c in ade20k_palette()[:150]}) > 140
    lab = RNG.integers(0, 21, (7, 9)).astype(np.uint8)
    write_label_png(tmp_path / "a.png", lab)
    np.testing.assert_array_equal(read_label_png(tmp_path / "a.png"), lab)
    from PIL import Image
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P" and im.getpalette()[3:6] == [128, 0, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]       # no temporary left behind

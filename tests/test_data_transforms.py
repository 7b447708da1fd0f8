"""The ImageSegData transform against a direct, loop-by-loop reimplementation of
DeepLab's ``DataTransformer::TransformImgAndSeg`` and OpenCV's resize rules."""
import math

import numpy as np
import pytest

from deeplab_compile.data import transforms as T


def ref_resize_linear(img, f):
    """OpenCV INTER_LINEAR (cv::resize to DeepLab's int(H f) x int(W f)), one pixel at a time."""
    h, w, c = img.shape
    oh, ow = int(np.float32(h) * np.float32(f)), int(np.float32(w) * np.float32(f))
    out = np.zeros((oh, ow, c), np.uint8)

    def coord(d, n, o):
        scale = n / o
        x = np.float32((d + 0.5) * scale - 0.5)
        s = math.floor(x)
        fr = np.float32(x - np.float32(s))
        if s < 0:
            s, fr = 0, np.float32(0)
        if s >= n - 1:
            s, fr = n - 1, np.float32(0)
        return s, min(s + 1, n - 1), fr

    for y in range(oh):
        y0, y1, fy = coord(y, h, oh)
        for x in range(ow):
            x0, x1, fx = coord(x, w, ow)
            for ch in range(c):
                a = np.float32(img[y0, x0, ch]) * (1 - fx) + np.float32(img[y0, x1, ch]) * fx
                b = np.float32(img[y1, x0, ch]) * (1 - fx) + np.float32(img[y1, x1, ch]) * fx
                v = a * (1 - fy) + b * fy
                out[y, x, ch] = min(max(math.floor(v + 0.5), 0), 255)
    return out


def ref_resize_nearest(seg, f):
    h, w = seg.shape
    oh, ow = int(np.float32(h) * np.float32(f)), int(np.float32(w) * np.float32(f))
    out = np.zeros((oh, ow), seg.dtype)
    for y in range(oh):
        for x in range(ow):
            out[y, x] = seg[min(math.floor(y * (h / oh)), h - 1), min(math.floor(x * (w / ow)), w - 1)]
    return out


def ref_transform(p, img, seg, d):
    """DeepLab's TransformImgAndSeg with the draws ``d`` (scale, mirror, offsets)."""
    if d.scale_index is not None:
        f = p.scale_factors[d.scale_index]
        img = ref_resize_linear(img, f)
        seg = ref_resize_nearest(seg, f)
    h, w, c = img.shape
    mean = [p.mean[k] if len(p.mean) == c else p.mean[0] for k in range(c)] if p.mean else [0.0] * c
    ch, cw = p.crop_height, p.crop_width
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    padded = np.zeros((h + ph, w + pw, c))
    lab = np.full((h + ph, w + pw), float(p.ignore_label))
    for y in range(h + ph):
        for x in range(w + pw):
            for k in range(c):
                padded[y, x, k] = img[y, x, k] if (y < h and x < w) else mean[k]
            if y < h and x < w:
                lab[y, x] = seg[y, x]
    data = np.zeros((c, ch, cw), np.float32)
    label = np.zeros((1, ch, cw), np.float32)
    for y in range(ch):
        for x in range(cw):
            tx = cw - 1 - x if d.mirror else x
            for k in range(c):
                pixel = padded[y + d.h_off, x + d.w_off, k]
                data[k, y, tx] = (pixel - mean[k]) * p.scale
            label[0, y, tx] = lab[y + d.h_off, x + d.w_off]
    return data, label


CASES = [
    dict(crop=(17, 19), size=(12, 15), mirror=False, scales=(), train=True),     # pad both axes
    dict(crop=(9, 11), size=(20, 23), mirror=True, scales=(), train=True),       # random crop
    dict(crop=(13, 13), size=(20, 16), mirror=True, scales=(0.5, 0.75, 1.25), train=True),
    dict(crop=(21, 21), size=(20, 16), mirror=False, scales=(), train=False),    # test: top-left
    dict(crop=(8, 8), size=(20, 16), mirror=False, scales=(1.5,), train=False),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transform_is_pixel_exact(case, seed):
    rng = np.random.default_rng(100 + seed)
    h, w = case["size"]
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    seg = rng.integers(0, 21, size=(h, w)).astype(np.int32)
    seg[0, 0] = 255
    p = T.TransformParams(crop_height=case["crop"][0], crop_width=case["crop"][1],
                          mean=(104.008, 116.669, 122.675), scale=0.5, mirror=case["mirror"],
                          scale_factors=case["scales"], ignore_label=255, train=case["train"])
    data, label, d = T.transform(p, img, seg, np.random.default_rng(seed))
    want_data, want_label = ref_transform(p, img, seg, d)
    assert data.dtype == np.float32 and data.shape == (3, *case["crop"])
    np.testing.assert_array_equal(data, want_data)
    np.testing.assert_array_equal(label, want_label)
    if not case["train"]:
        assert (d.h_off, d.w_off) == (0, 0)


def test_padding_reads_zero_after_mean_and_ignore_in_label():
    img = np.full((4, 5, 3), 7, np.uint8)
    seg = np.ones((4, 5), np.int32)
    p = T.TransformParams(crop_height=6, crop_width=8, mean=(1.0, 2.0, 3.0), train=False)
    data, label, _ = T.transform(p, img, seg, np.random.default_rng(0))
    assert (data[:, 4:, :] == 0).all() and (data[:, :, 5:] == 0).all()
    assert (label[0, 4:, :] == 255).all() and (label[0, :, 5:] == 255).all()
    np.testing.assert_array_equal(data[:, :4, :5], np.array([6, 5, 4], np.float32)[:, None, None] * np.ones((4, 5)))


def test_random_crop_covers_every_offset():
    img = np.zeros((6, 6, 3), np.uint8)
    p = T.TransformParams(crop_height=4, crop_width=4, train=True)
    rng = np.random.default_rng(0)
    offs = {(T.draw(p, 6, 6, rng).h_off, T.draw(p, 6, 6, rng).w_off) for _ in range(400)}
    assert offs == {(a, b) for a in range(3) for b in range(3)}


def test_mirror_is_a_coin_flip_and_scale_uniform():
    p = T.TransformParams(crop_height=2, crop_width=2, mirror=True, scale_factors=(0.5, 1.0, 2.0))
    rng = np.random.default_rng(1)
    draws = [T.draw(p, 10, 10, rng) for _ in range(3000)]
    assert 0.45 < np.mean([d.mirror for d in draws]) < 0.55
    counts = np.bincount([d.scale_index for d in draws], minlength=3) / 3000
    assert np.all(np.abs(counts - 1 / 3) < 0.04)


@pytest.mark.parametrize("f", [0.5, 0.75, 1.25, 1.5, 2.0, 0.3])
def test_resizes_match_opencv_rules(f):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(11, 14, 3), dtype=np.uint8)
    seg = rng.integers(0, 21, size=(11, 14)).astype(np.int32)
    np.testing.assert_array_equal(T.resize_linear(img, f), ref_resize_linear(img, f))
    np.testing.assert_array_equal(T.resize_nearest(seg, f), ref_resize_nearest(seg, f))


def test_resize_size_truncates_like_deeplabs_int_times_float():
    # DeepLab: img_height *= scale (int *= float) truncates toward zero
    assert T.resize_size(5, 7, 0.5) == (2, 3)      # 2.5 -> 2, 3.5 -> 3
    assert T.resize_size(321, 321, 0.75) == (240, 240)     # 240.75 -> 240
    assert T.resize_size(500, 375, 1.25) == (625, 468)     # 468.75 -> 468


def test_data_dim_is_image_size_clipped_to_crop():
    p = T.TransformParams(crop_height=10, crop_width=20)
    np.testing.assert_array_equal(T.data_dim(p, 15, 12), [[[10, 12]]])


def test_cv2_agrees_within_one_level_when_available():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(31, 40, 3), dtype=np.uint8)
    for f in (0.5, 0.75, 1.25, 1.75):
        ours = T.resize_linear(img, f).astype(int)
        theirs = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR).astype(int)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1
        seg = rng.integers(0, 21, size=(31, 40)).astype(np.uint8)
        np.testing.assert_array_equal(T.resize_nearest(seg, f),
                                      cv2.resize(seg, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST))

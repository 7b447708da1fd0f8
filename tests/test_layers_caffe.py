"""Caffe / DeepLab semantics of the layer modules, against brute-force references."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from deeplab_compile.layers.testing import make_layer

torch.set_num_threads(1)
FLT_MAX = 3.4028234663852886e38


# ---------------------------------------------------------------- Pooling
def caffe_pool_ref(x, pool, k, s, p):
    """Caffe's PoolingLayer::Reshape + Forward_cpu, written out as loops; k, s, p are ints
    or (h, w) pairs."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = [v if isinstance(v, tuple) else (v, v) for v in (k, s, p)]

    def size(d, k, s, p):
        o = int(math.ceil((d + 2 * p - k) / s)) + 1
        if (ph or pw) and (o - 1) * s >= d + p:
            o -= 1
        return o

    ho, wo = size(h, kh, sh, ph), size(w, kw, sw, pw)
    out = torch.empty(n, c, ho, wo, dtype=x.dtype)
    for i, j in itertools.product(range(ho), range(wo)):
        hs, ws = i * sh - ph, j * sw - pw
        if pool == "max":
            he, we = min(hs + kh, h), min(ws + kw, w)
            hs, ws = max(hs, 0), max(ws, 0)
            win = x[:, :, hs:he, ws:we]
            val = torch.full((n, c), -FLT_MAX, dtype=x.dtype)
            if win.numel():
                val = torch.maximum(val, win.amax(dim=(2, 3)))
        else:
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size_ = (he - hs) * (we - ws)
            hs, ws = max(hs, 0), max(ws, 0)
            he, we = min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            # an empty window (only for pad 0 and kernel < stride) is 0 here; Caffe divides 0 by
            # a non-positive count
            val = win.sum(dim=(2, 3)) / size_ if win.numel() else torch.zeros(n, c, dtype=x.dtype)
        out[:, :, i, j] = val
    return out


def test_pooling_deeplab_sizes():
    shapes = [(1, 64, 321, 321)]
    for want in (161, 81, 41):
        layer, _ = make_layer("Pooling", {"pool": "max", "kernel_size": 3, "stride": 2, "pad": 1}, shapes)
        assert layer.out_shapes[0][2:] == (want, want)
        shapes = layer.out_shapes
    # pool4/pool5 of LargeFOV: kernel 3 stride 1 pad 1 keeps 41
    layer, _ = make_layer("Pooling", {"pool": "max", "kernel_size": 3, "stride": 1, "pad": 1}, shapes)
    assert layer.out_shapes[0] == (1, 64, 41, 41)
    # 513: 257, 129, 65
    layer, _ = make_layer("Pooling", {"pool": "max", "kernel_size": 3, "stride": 2, "pad": 1}, [(1, 1, 513, 513)])
    assert layer.out_shapes[0][2:] == (257, 257)


CONFIGS = [(h, k, s, p) for h in (4, 5, 7, 8) for k in (1, 2, 3, 4) for s in (1, 2, 3) for p in range(k)
           if h + 2 * p >= k]


@pytest.mark.parametrize("pool", ["max", "ave"])
def test_pooling_matches_caffe_reference(pool):
    g = torch.Generator().manual_seed(1)
    seen_explicit = 0
    for h, k, s, p in CONFIGS:
        w = h + 1
        x = torch.randn(1, 2, h, w, generator=g, dtype=torch.float64)
        layer, mod = make_layer("Pooling", {"pool": pool, "kernel_size": k, "stride": s, "pad": p},
                                [tuple(x.shape)])
        want = caffe_pool_ref(x, pool, k, s, p)
        got = mod(x)
        assert tuple(got.shape) == layer.out_shapes[0] == tuple(want.shape), (h, k, s, p)
        torch.testing.assert_close(got, want, msg=f"{pool} h={h} k={k} s={s} p={p}")
        seen_explicit += not mod._native(h, w)
    assert seen_explicit > 5  # the cases torch refuses or sizes differently were exercised


def test_pooling_rectangular_and_global():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 9, 6, generator=g)
    for pool in ("max", "ave"):
        for k, s, p in (((3, 2), (2, 1), (1, 0)), ((2, 4), (1, 3), (0, 3)), ((3, 1), (3, 2), (2, 0))):
            params = {"pool": pool, "kernel_h": k[0], "kernel_w": k[1], "stride_h": s[0], "stride_w": s[1],
                      "pad_h": p[0], "pad_w": p[1]}
            layer, mod = make_layer("Pooling", params, [tuple(x.shape)])
            want = caffe_pool_ref(x, pool, k, s, p)
            assert layer.out_shapes[0] == tuple(want.shape)
            torch.testing.assert_close(mod(x), want)
    for pool, fn in (("max", lambda t: t.amax(dim=(2, 3), keepdim=True)),
                     ("ave", lambda t: t.mean(dim=(2, 3), keepdim=True))):
        layer, mod = make_layer("Pooling", {"pool": pool, "global_pooling": True}, [tuple(x.shape)])
        torch.testing.assert_close(mod(x), fn(x))
        assert layer.out_shapes == [(2, 3, 1, 1)]
        from deeplab_compile.layers import registry
        assert registry.get("Pooling").geometry(layer) == (9, 1)   # whole input height


# ---------------------------------------------------------------- Interp
def caffe_interp_ref(x, ho, wo, pad_beg=0, pad_end=0):
    """DeepLab's caffe_cpu_interp2 (align corners over the cropped region), as loops."""
    n, c, h, w = x.shape
    h1, w1 = h + pad_beg + pad_end, w + pad_beg + pad_end
    y0 = x0 = -pad_beg
    rh = (h1 - 1) / (ho - 1) if ho > 1 else 0.0
    rw = (w1 - 1) / (wo - 1) if wo > 1 else 0.0
    out = torch.empty(n, c, ho, wo, dtype=x.dtype)
    for i in range(ho):
        hr = rh * i
        hi = int(hr)
        hp = 1 if hi < h1 - 1 else 0
        lh = hr - hi
        for j in range(wo):
            wr = rw * j
            wi = int(wr)
            wp = 1 if wi < w1 - 1 else 0
            lw = wr - wi
            a, b = y0 + hi, x0 + wi
            out[:, :, i, j] = ((1 - lh) * ((1 - lw) * x[:, :, a, b] + lw * x[:, :, a, b + wp])
                               + lh * ((1 - lw) * x[:, :, a + hp, b] + lw * x[:, :, a + hp, b + wp]))
    return out


@pytest.mark.parametrize("params,size,want", [
    ({"shrink_factor": 8}, 321, 41),
    ({"shrink_factor": 8}, 513, 65),
    ({"zoom_factor": 8}, 41, 321),
    ({"zoom_factor": 8}, 65, 513),
    ({"shrink_factor": 4, "zoom_factor": 3}, 321, 241),   # DeepLab v2 MSC, scale 0.75
    ({"shrink_factor": 2}, 321, 161),                      # DeepLab v2 MSC, scale 0.5
    ({"shrink_factor": 4, "zoom_factor": 3}, 513, 385),
    ({"height": 50, "width": 50}, 321, 50),
    ({"zoom_factor": 2, "pad_beg": -1, "pad_end": -1}, 11, 17),
])
def test_interp_sizes(params, size, want):
    layer, _ = make_layer("Interp", params, [(1, 1, size, size)])
    assert layer.out_shapes == [(1, 1, want, want)]


def test_interp_second_bottom_and_precedence():
    layer, _ = make_layer("Interp", {}, [(1, 2, 41, 41), (1, 1, 321, 300)])
    assert layer.out_shapes == [(1, 2, 321, 300)]
    # parameters win over the second bottom, as in DeepLab
    layer, _ = make_layer("Interp", {"zoom_factor": 2}, [(1, 2, 5, 5), (1, 1, 321, 300)])
    assert layer.out_shapes == [(1, 2, 9, 9)]


@pytest.mark.parametrize("params,hw", [
    ({"zoom_factor": 3}, (5, 4)),
    ({"shrink_factor": 3}, (11, 8)),
    ({"shrink_factor": 4, "zoom_factor": 3}, (13, 10)),
    ({"height": 7, "width": 1}, (4, 6)),
    ({"zoom_factor": 2, "pad_beg": -2, "pad_end": -1}, (9, 8)),
    ({"height": 9, "width": 5, "pad_beg": -1}, (6, 7)),
])
def test_interp_values_match_reference(params, hw):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, *hw, generator=g, dtype=torch.float64)
    layer, mod = make_layer("Interp", params, [tuple(x.shape)])
    _, _, ho, wo = layer.out_shapes[0]
    want = caffe_interp_ref(x, ho, wo, params.get("pad_beg", 0), params.get("pad_end", 0))
    torch.testing.assert_close(mod(x), want)


def test_interp_geometry():
    from deeplab_compile.layers import registry
    spec = registry.get("Interp")
    assert spec.geometry(make_layer("Interp", {"zoom_factor": 8}, [(1, 1, 41, 41)])[0]) == (1, Fraction(1, 8))
    assert spec.geometry(make_layer("Interp", {"shrink_factor": 8}, [(1, 1, 321, 321)])[0]) == (1, 8)
    assert spec.geometry(make_layer("Interp", {"shrink_factor": 4, "zoom_factor": 3},
                                    [(1, 1, 321, 321)])[0]) == (1, Fraction(4, 3))
    assert spec.geometry(make_layer("Interp", {"height": 321, "width": 321},
                                    [(1, 1, 41, 41)])[0]) == (1, Fraction(1, 8))


# ---------------------------------------------------------------- SoftmaxWithLoss
def loss_ref(score, label, ignore, mode):
    n, c, h, w = score.shape
    total, valid = 0.0, 0
    for b, i, j in itertools.product(range(n), range(h), range(w)):
        lab = int(label[b, 0, i, j])
        if ignore is not None and lab == ignore:
            continue
        e = [math.exp(float(score[b, k, i, j])) for k in range(c)]
        total -= math.log(e[lab] / sum(e))
        valid += 1
    norm = {"full": n * h * w, "valid": valid, "batch_size": n, "none": 1}[mode]
    return total / max(norm, 1)


@pytest.mark.parametrize("params,mode", [
    ({}, "valid"), ({"normalization": "FULL"}, "full"), ({"normalization": "Batch_Size"}, "batch_size"),
    ({"normalization": "none"}, "none"), ({"normalize": False}, "batch_size"), ({"normalize": True}, "valid"),
])
@pytest.mark.parametrize("ignore", [None, 255])
def test_softmax_loss_matches_hand_computation(params, mode, ignore):
    g = torch.Generator().manual_seed(4)
    score = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    label = torch.randint(0, 4, (2, 1, 3, 5), generator=g).double()
    if ignore is not None:
        label[0, 0, 0, :] = ignore
        label[1, 0, 2, 1] = ignore
        params = {**params, "ignore_label": ignore}
    _, mod = make_layer("SoftmaxWithLoss", params, [tuple(score.shape), tuple(label.shape)])
    got = mod(score, label)
    assert got.shape == ()
    assert got.item() == pytest.approx(loss_ref(score, label, ignore, mode), rel=1e-9)


def test_softmax_loss_all_ignored_and_prob_top():
    score = torch.randn(1, 3, 2, 2)
    label = torch.full((1, 1, 2, 2), 255.0)
    _, mod = make_layer("SoftmaxWithLoss", {"ignore_label": 255}, [(1, 3, 2, 2), (1, 1, 2, 2)],
                        tops=["loss", "prob"])
    loss, prob = mod(score, label)
    assert loss.item() == 0.0                      # Caffe clamps the VALID count to >= 1
    torch.testing.assert_close(prob, score.softmax(1))
    # long labels without the channel axis work too
    _, mod = make_layer("SoftmaxWithLoss", {}, [(1, 3, 2, 2), (1, 2, 2)])
    lab = torch.tensor([[[0, 1], [2, 0]]])
    want = -score.log_softmax(1).gather(1, lab[:, None]).mean()
    torch.testing.assert_close(mod(score, lab), want)


def test_a_label_out_of_range_is_one_clear_error_naming_the_layer_and_the_fix():
    """A label shrunk bilinearly mixes 255 with a class id at a border (254.x -> 254):
    Caffe only DCHECKs it; here it is a located error, also under hard-pixel mining."""
    from deeplab_compile.layers.loss import LabelValueError
    from deeplab_compile.training.mining import TopKSoftmaxLoss
    score = torch.randn(1, 21, 2, 2)
    label = torch.tensor([[[[0.0, 255.0], [254.4, 3.0]]]])
    layer, mod = make_layer("SoftmaxWithLoss", {"ignore_label": 255}, [(1, 21, 2, 2), (1, 1, 2, 2)])
    mod.layer_name = "loss_075"
    with pytest.raises(LabelValueError) as e:
        mod(score, label)
    msg = str(e.value)
    assert "layer 'loss_075': label value 254 is neither a class of the 21 scores (0..20) nor ignore_label 255" in msg
    assert "interpolation: nearest" in msg and "\n" not in msg
    mined = TopKSoftmaxLoss(mod)
    mined.ratio = 0.5
    with pytest.raises(LabelValueError, match="label value 254"):
        mined(score, label)
    # ignored and in-range labels pass, negative ones do not
    label[0, 0, 1, 0] = 255.0
    assert torch.isfinite(mod(score, label)) and torch.isfinite(mined(score, label))
    label[0, 0, 1, 0] = -1.0
    with pytest.raises(LabelValueError, match="label value -1"):
        mod(score, label)


# ---------------------------------------------------------------- SegAccuracy
def seg_ref(score, label, ignore):
    c = score.shape[1]
    m = [[0] * c for _ in range(c)]
    for b, i, j in itertools.product(range(score.shape[0]), range(score.shape[2]), range(score.shape[3])):
        gt = int(label[b, 0, i, j])
        if gt in ignore:
            continue
        pred = max(range(c), key=lambda k: (float(score[b, k, i, j]), -k))
        m[gt][pred] += 1
    rows = [sum(r) for r in m]
    cols = [sum(m[r][k] for r in range(c)) for k in range(c)]
    total = sum(rows)
    acc = sum(m[k][k] for k in range(c)) / total if total else 0.0
    rec = [m[k][k] / rows[k] for k in range(c) if rows[k]]
    ious = []
    for k in range(c):
        inter, union = m[k][k], rows[k] + cols[k] - m[k][k]
        ious.append(1.0 if inter == union else inter / union)
    return [acc, sum(rec) / len(rec) if rec else 0.0, sum(ious) / c]


def test_seg_accuracy_matches_confusion_matrix():
    g = torch.Generator().manual_seed(5)
    score = torch.randn(2, 5, 4, 6, generator=g)
    score[:, 4] = -10                                  # class 4 never predicted ...
    label = torch.randint(0, 4, (2, 1, 4, 6), generator=g).float()   # ... nor present: IoU counts 1
    label[0, 0, 0, :3] = 255
    label[1, 0, 3, 3] = 21
    layer, mod = make_layer("SegAccuracy", {"ignore_label": [255, 21]}, [tuple(score.shape), tuple(label.shape)])
    got = mod(score, label)
    assert tuple(got.shape) == layer.out_shapes[0] == (1, 1, 1, 3)
    want = seg_ref(score, label, {255, 21})
    torch.testing.assert_close(got.flatten().double(), torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)
    # DeepLab counts the absent class 4 as IoU 1 (leaving it out would give a lower mean)
    assert want[2] > (want[2] * 5 - 1) / 4


def test_seg_accuracy_accumulates_without_reset():
    score = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])      # predicts 0, 1
    label = torch.tensor([[[[0.0, 0.0]]]])
    _, mod = make_layer("SegAccuracy", {"reset": False}, [(1, 2, 1, 2), (1, 1, 1, 2)])
    mod(score, label)
    got = mod(score, label).flatten()
    assert got[0].item() == pytest.approx(0.5)
    _, mod = make_layer("SegAccuracy", {}, [(1, 2, 1, 2), (1, 1, 1, 2)])
    mod(score, torch.ones(1, 1, 1, 2))
    assert mod(score, label).flatten()[0].item() == pytest.approx(0.5)


# ---------------------------------------------------------------- Eltwise
def test_eltwise_operations():
    a, b, c = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([4.0, 5.0, -6.0]), torch.tensor([0.5, 0.5, 2.0])
    shapes = [(3,)] * 3
    assert make_layer("Eltwise", {}, shapes)[1](a, b, c).tolist() == [5.5, 3.5, -1.0]
    assert make_layer("Eltwise", {"operation": "SUM", "coeff": [1, -1, 2]}, shapes)[1](a, b, c).tolist() == \
        [-2.0, -6.0, 13.0]
    assert make_layer("Eltwise", {"operation": "Prod"}, shapes)[1](a, b, c).tolist() == [2.0, -5.0, -36.0]
    assert make_layer("Eltwise", {"operation": "MAX"}, shapes)[1](a, b, c).tolist() == [4.0, 5.0, 3.0]


# ---------------------------------------------------------------- BatchNorm
def test_batchnorm_running_stats_follow_caffe():
    g = torch.Generator().manual_seed(6)
    maf, eps = 0.9, 1e-5
    layer, mod = make_layer("BatchNorm", {"moving_average_fraction": maf}, [(4, 3, 5, 5)], phase="train")
    blobs = [torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0.0]   # Caffe's 3 blobs
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) * 2 + 1
        y = mod(x.float())
        m = x.numel() // 3
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
        torch.testing.assert_close(y.double(), (x - mean[None, :, None, None]) /
                                   (var[None, :, None, None] + eps).sqrt(), atol=1e-4, rtol=1e-4)
        blobs[2] = blobs[2] * maf + 1
        blobs[0] = maf * blobs[0] + mean
        blobs[1] = maf * blobs[1] + var * m / (m - 1)
    torch.testing.assert_close(mod.running_mean.double(), blobs[0] / blobs[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mod.running_var.double(), blobs[1] / blobs[2], atol=1e-5, rtol=1e-5)
    assert mod.running_weight.item() == pytest.approx(blobs[2])
    # TEST phase (eval) uses the stored estimates and leaves them alone
    mod.eval()
    x = torch.randn(2, 3, 5, 5, generator=g)
    before = mod.running_mean.clone()
    want = (x - mod.running_mean[None, :, None, None]) / (mod.running_var[None, :, None, None] + eps).sqrt()
    torch.testing.assert_close(mod(x), want)
    assert torch.equal(mod.running_mean, before)


def test_batchnorm_use_global_stats_in_training():
    _, mod = make_layer("BatchNorm", {"use_global_stats": True}, [(2, 3, 4, 4)], phase="train")
    mod.running_mean.fill_(1.0)
    mod.running_var.fill_(4.0)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(mod(x), (x - 1) / math.sqrt(4 + 1e-5))
    assert mod.training and mod.running_weight.item() == 0.0      # nothing updated
    assert dict(mod.named_parameters()) == {}                       # no affine part


# ---------------------------------------------------------------- Scale / Bias
def test_scale_both_forms():
    x = torch.randn(2, 3, 4, 5)
    _, mod = make_layer("Scale", {"bias_term": True, "bias_filler": {"type": "constant", "value": 0.5}},
                        [tuple(x.shape)])
    assert tuple(mod.weight.shape) == (3,) and mod.weight.eq(1).all()     # Caffe's default filler: 1
    with torch.no_grad():
        mod.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(mod(x), x * torch.tensor([1.0, 2.0, 3.0])[:, None, None] + 0.5)
    s = torch.randn(4, 5)
    _, mod = make_layer("Scale", {"axis": 2}, [tuple(x.shape), tuple(s.shape)])
    assert mod.weight is None
    torch.testing.assert_close(mod(x, s), x * s)
    _, mod = make_layer("Scale", {"num_axes": 2}, [tuple(x.shape)])
    assert tuple(mod.weight.shape) == (3, 4)
    _, mod = make_layer("Bias", {"filler": {"type": "constant", "value": 2}}, [tuple(x.shape)])
    torch.testing.assert_close(mod(x), x + 2)
    b = torch.randn(3)
    _, mod = make_layer("Bias", {}, [tuple(x.shape), (3,)])
    torch.testing.assert_close(mod(x, b), x + b[:, None, None])


# ---------------------------------------------------------------- plumbing
def test_slice_crop_reshape_flatten_semantics():
    x = torch.arange(2 * 6 * 2 * 2, dtype=torch.float32).reshape(2, 6, 2, 2)
    _, mod = make_layer("Slice", {"slice_point": [1, 4]}, [tuple(x.shape)], tops=["a", "b", "c"])
    a, b, c = mod(x)
    assert torch.equal(a, x[:, :1]) and torch.equal(b, x[:, 1:4]) and torch.equal(c, x[:, 4:])
    _, mod = make_layer("Slice", {"axis": 0}, [tuple(x.shape)], tops=["a", "b"])
    a, b = mod(x)
    assert torch.equal(a, x[:1]) and torch.equal(b, x[1:])
    big = torch.arange(100.0).reshape(1, 1, 10, 10)
    _, mod = make_layer("Crop", {"offset": [2, 3]}, [(1, 1, 10, 10), (1, 5, 4, 6)])
    assert torch.equal(mod(big, torch.zeros(1, 5, 4, 6)), big[:, :, 2:6, 3:9])
    _, mod = make_layer("Crop", {"offset": 1}, [(1, 1, 10, 10), (1, 5, 4, 6)])
    assert torch.equal(mod(big, torch.zeros(1, 5, 4, 6)), big[:, :, 1:5, 1:7])
    layer, mod = make_layer("Reshape", {"shape": [0, -1, 4]}, [(2, 6, 2, 2)])
    assert layer.out_shapes == [(2, 6, 4)] and torch.equal(mod(x), x.reshape(2, 6, 4))
    layer, _ = make_layer("Reshape", {"shape": [2, 3], "axis": 1, "num_axes": 1}, [(2, 6, 2, 2)])
    assert layer.out_shapes == [(2, 2, 3, 2, 2)]
    layer, _ = make_layer("Reshape", {"shape": [1], "axis": 0, "num_axes": 0}, [(2, 6)])
    assert layer.out_shapes == [(1, 2, 6)]
    layer, _ = make_layer("Reshape", {"shape": [-1], "axis": -2}, [(2, 6, 2)])
    assert layer.out_shapes == [(2, 6, 2)]     # axis -2 starts at the last axis, num_axes -1: (2,) -> (2,)
    layer, mod = make_layer("Flatten", {"axis": 1, "end_axis": 2}, [(2, 6, 2, 2)])
    assert layer.out_shapes == [(2, 12, 2)] and torch.equal(mod(x), x.reshape(2, 12, 2))
    _, mod = make_layer("Reshape", {"shape": [0, -1]}, [(2, 6, 2, 2)])
    assert tuple(mod(torch.zeros(5, 6, 2, 2)).shape) == (5, 24)   # batch may change at run time


def test_concat_and_split_and_dropout():
    a, b = torch.randn(1, 2, 3), torch.randn(1, 4, 3)
    _, mod = make_layer("Concat", {"concat_dim": 1}, [(1, 2, 3), (1, 4, 3)])
    assert torch.equal(mod(a, b), torch.cat([a, b], 1))
    _, mod = make_layer("Dropout", {"dropout_ratio": 0.5}, [(1000,)])
    x = torch.ones(1000)
    assert torch.equal(mod(x), x)           # TEST phase: identity
    mod.train()
    y = mod(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and 350 < int((y == 0).sum()) < 650
    _, mod = make_layer("Dropout", {"dropout_ratio": 0.25, "scale_train": False}, [(4,)])
    torch.testing.assert_close(mod(torch.ones(4)), torch.full((4,), 0.75))


# ---------------------------------------------------------------- Deconvolution / bilinear
@pytest.mark.parametrize("f", [2, 3, 4])
def test_deconv_bilinear_filler_upsamples(f):
    c = 2
    k, pad = 2 * f - f % 2, math.ceil((f - 1) / 2)
    x = torch.randn(1, c, 6, 7, dtype=torch.float64)
    layer, mod = make_layer("Deconvolution", {"num_output": c, "group": c, "kernel_size": k, "stride": f,
                                              "pad": pad, "bias_term": False,
                                              "weight_filler": {"type": "bilinear"}}, [tuple(x.shape)])
    assert layer.out_shapes == [(1, c, 6 * f, 7 * f)]
    assert tuple(mod.weight.shape) == (c, 1, k, k)          # Caffe layout [Cin, Cout/group, kh, kw]
    y = mod.double()(x)
    ref = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y[..., f:-f, f:-f], ref[..., f:-f, f:-f])


# ---------------------------------------------------------------- flops / geometry
def test_conv_defaults_flops_and_geometry():
    from deeplab_compile.layers import registry
    conv = registry.get("Convolution")
    layer, mod = make_layer("Convolution", {"num_output": 4, "kernel_size": 3}, [(1, 2, 5, 5)])
    assert mod.weight.abs().sum() == 0 and mod.bias.abs().sum() == 0    # Caffe's default fillers
    layer, _ = make_layer("Convolution", {"num_output": 1024, "kernel_size": 3, "hole": 12, "pad": 12},
                          [(1, 512, 41, 41)])
    assert layer.out_shapes == [(1, 1024, 41, 41)]
    assert conv.geometry(layer) == (25, 1)     # LargeFOV fc6: 3x3 at rate 12 spans 25 pixels
    # VGG16 at 224x224: the 13 convolutions cost 15.35 G multiply-adds (Simonyan & Zisserman)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    shape, total = (1, 3, 224, 224), 0
    for v in cfg:
        if v == "M":
            shape, = make_layer("Pooling", {"kernel_size": 2, "stride": 2}, [shape])[0].out_shapes
            continue
        layer, _ = make_layer("Convolution", {"num_output": v, "kernel_size": 3, "pad": 1}, [shape])
        total += conv.flops(layer)
        shape = layer.out_shapes[0]
    assert total == pytest.approx(15.35e9, rel=0.005)
    ip = registry.get("InnerProduct")
    layer, _ = make_layer("InnerProduct", {"num_output": 4096}, [(2, 512, 7, 7)])
    assert ip.flops(layer) == 2 * 4096 * 25088
    dec = registry.get("Deconvolution")
    layer, _ = make_layer("Deconvolution", {"num_output": 21, "kernel_size": 16, "stride": 8}, [(1, 21, 10, 10)])
    assert dec.geometry(layer) == (2, Fraction(1, 8))
    assert registry.get("ReLU").flops(make_layer("ReLU", {}, [(1, 3)])[0]) == 0

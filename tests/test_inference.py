"""deeplab_compile.inference and compiler.reshape: one multi-scale/flip helper checked
against a slow reference, one score-blob rule, reshaping a compiled IR, and fused-op
measurements keyed by shape buckets."""
import os

import numpy as np
import pytest
import torch

from deeplab_compile.compiler import build_net, compile_net, reshape
from deeplab_compile.inference import ScoreError, multi_scale_probs, score_reader
from deeplab_compile.netdef.parse import loads
from deeplab_compile.ops import _ext, dispatch

from conftest import NETDEF

TINY = os.path.join(NETDEF, "deeplab_largefov_tiny.yaml")


# --------------------------------------------------------------------------- the slow reference

def _bilinear_corners(a: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """C x H x W -> C x oh x ow, bilinear with corners aligned, one output pixel at a time."""
    c, h, w = a.shape
    out = np.zeros((c, oh, ow))
    for i in range(oh):
        y = i * (h - 1) / (oh - 1) if oh > 1 else 0.0
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, h - 1)
        fy = y - y0
        for j in range(ow):
            x = j * (w - 1) / (ow - 1) if ow > 1 else 0.0
            x0 = int(np.floor(x))
            x1 = min(x0 + 1, w - 1)
            fx = x - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * a[:, y0, x0] + fx * a[:, y0, x1])
                            + fy * ((1 - fx) * a[:, y1, x0] + fx * a[:, y1, x1]))
    return out


def _reference(run, x: np.ndarray, scales, flip) -> np.ndarray:
    c, h, w = x.shape
    probs = []
    for s in scales:
        oh, ow = max(1, int(np.round(h * s))), max(1, int(np.round(w * s)))  # half to even
        xs = x if (oh, ow) == (h, w) else _bilinear_corners(x, oh, ow)
        for mirrored in ([False, True] if flip else [False]):
            inp = xs[:, :, ::-1] if mirrored else xs
            scores = run(torch.tensor(np.ascontiguousarray(inp), dtype=torch.float32)[None])[0].double().numpy()
            if mirrored:
                scores = scores[:, :, ::-1]
            scores = _bilinear_corners(scores, h, w)
            e = np.exp(scores - scores.max(0))
            probs.append(e / e.sum(0))
    return sum(probs) / len(probs)


def _toy_net():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    pool = torch.nn.AvgPool2d(2, ceil_mode=True)          # scores at half size, like a real net

    def run(x):
        with torch.no_grad():
            return pool(conv(x)) * 3
    return run


@pytest.mark.parametrize("scales,flip", [([1.0], False), ([1.0], True), ([0.5, 0.75, 1.25], True),
                                         ([0.6], False), ([0.25], True)])
def test_multi_scale_probs_equals_the_slow_reference(scales, flip):
    run = _toy_net()
    x = np.random.default_rng(0).normal(size=(3, 11, 14))
    got = multi_scale_probs(run, torch.tensor(x, dtype=torch.float32)[None], scales, flip)
    assert got.shape == (1, 4, 11, 14)
    np.testing.assert_allclose(got[0].numpy(), _reference(run, x, scales, flip), atol=1e-5)


def test_mirrored_runs_are_mirrored_back():
    # A net that only sees the left edge: without mirroring back, the flipped run would
    # put its evidence on the right and the average would not be symmetric in this way.
    def run(x):
        s = torch.zeros(1, 2, *x.shape[-2:])
        s[:, 0, :, 0] = 10.0
        return s
    p = multi_scale_probs(run, torch.zeros(1, 3, 5, 6), [1.0], flip=True)[0]
    assert torch.allclose(p[0, :, 0], torch.full((5,), (np.exp(10) / (np.exp(10) + 1) + 0.5) / 2), atol=1e-6)
    assert torch.allclose(p[0, :, 3], torch.full((5,), 0.5))


def test_resizing_the_normalised_tensor_equals_normalising_the_resized_float_image():
    # The reason in the module doc: mean/scale is per-channel affine, bilinear weights sum to 1.
    img = np.random.default_rng(2).integers(0, 256, (3, 9, 13)).astype(np.float64)
    mean, scale = np.array([104.0, 117.0, 123.0])[:, None, None], 0.017
    a = _bilinear_corners((img - mean) * scale, 6, 17)
    b = (_bilinear_corners(img, 6, 17) - mean) * scale
    np.testing.assert_allclose(a, b, atol=1e-9)


# --------------------------------------------------------------------------- the score blob

SCORE_NET = """
name: s
inputs: {data: [3, 9, 9]}
layers:
  - {name: fc8, type: Convolution, bottom: data, num_output: 2, kernel_size: 1}
  - {name: other, type: Convolution, bottom: data, num_output: 3, kernel_size: 1}
"""


def test_score_rule_named_blob_else_first_matwrite_bottom_else_first_output(tmp_path):
    net = compile_net(loads(SCORE_NET))
    x = torch.randn(1, 3, 9, 9)
    name, read = score_reader(net)
    assert name == "fc8" and read(net(x)).shape == (1, 2, 9, 9)
    name, read = score_reader(net, "other")
    assert name == "other" and read(net(x)).shape == (1, 3, 9, 9)
    with pytest.raises(ScoreError, match="--blob 'nope' is not an output"):
        score_reader(net, "nope")

    mat = SCORE_NET + f"  - {{name: save, type: MatWrite, bottom: other, prefix: '{tmp_path}/'}}\n"
    net = compile_net(loads(mat))
    name, read = score_reader(net)
    out = net(x)
    assert name == "other" and read(out).shape == (1, 3, 9, 9)
    assert torch.equal(read(out), net.other(x))


# --------------------------------------------------------------------------- reshape

def test_reshape_equals_compiling_at_that_size_and_leaves_its_input_alone():
    ir = build_net(TINY, phase="test")
    before = {b: blob.shape for b, blob in ir.blobs.items()}
    new = reshape(ir, {"data": (1, 3, 41, 57)})
    direct = build_net(TINY, phase="test", inputs={"data": (1, 3, 41, 57)})
    assert {b: (x.shape, x.stride, x.rf) for b, x in new.blobs.items()} == \
        {b: (x.shape, x.stride, x.rf) for b, x in direct.blobs.items()}
    assert [(lay.in_shapes, lay.out_shapes) for lay in new.layers] == \
        [(lay.in_shapes, lay.out_shapes) for lay in direct.layers]
    assert new.blobs["fc8"].shape == (1, 21, 6, 8)           # 41 -> 21 -> 11 -> 6, 57 -> 29 -> 15 -> 8
    assert {b: blob.shape for b, blob in ir.blobs.items()} == before
    assert reshape(new, {"data": (1, 3, 41, 57)}).blobs["fc8"].shape == (1, 21, 6, 8)


def test_reshape_refuses_a_fused_net():
    fused = build_net(os.path.join(NETDEF, "deeplab_v2_vgg16_aspp_l.yaml"), phase="test", fuse=True)
    assert any(lay.fused_from for lay in fused.layers)
    with pytest.raises(ValueError, match="before the passes"):
        reshape(fused, {"data": (1, 3, 65, 65)})


# --------------------------------------------------------------------------- measurement buckets

def test_shape_bucket_rounds_height_and_width_up_to_a_power_of_two():
    assert dispatch.shape_bucket((1, 8, 33, 64)) == (1, 8, 64, 64)
    assert dispatch.shape_bucket((2, 3, 1, 5)) == (2, 3, 1, 8)
    assert dispatch.shape_bucket(torch.Size([4, 16, 65, 17])) == (4, 16, 128, 32)


def test_sizes_in_one_bucket_cost_one_measurement(monkeypatch):
    from deeplab_compile.ops.aspp_sum import aspp_sum_choice
    if not _ext.has_kernel("aspp_sum", "CPU"):
        pytest.skip("no CPU aspp_sum kernel: nothing is measured")
    monkeypatch.setenv("DEEPLAB_KERNELS", "auto")
    timed = []
    real = dispatch._time
    monkeypatch.setattr(dispatch, "_time", lambda *a: timed.append(1) or real(*a))
    dispatch.clear()
    w, b = [torch.randn(4, 3, 3, 3) for _ in range(2)], [torch.randn(4) for _ in range(2)]
    try:
        aspp_sum_choice(torch.randn(1, 3, 9, 12), w, b, [2, 3])
        once = len(timed)
        assert once > 0
        for h, ww in [(13, 16), (16, 10), (10, 9)]:                  # all in the 16 x 16 bucket
            aspp_sum_choice(torch.randn(1, 3, h, ww), w, b, [2, 3])
        assert len(timed) == once and len(dispatch.decisions()) == 1
        aspp_sum_choice(torch.randn(1, 3, 17, 12), w, b, [2, 3])     # 32 x 16: a new round
        assert len(timed) == 2 * once and len(dispatch.decisions()) == 2
    finally:
        dispatch.clear()

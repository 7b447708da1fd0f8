"""The DenseCRF netdef layer."""
import numpy as np
import pytest
import torch

from deeplab_compile.compiler import compile_net
from deeplab_compile.crf import dense_crf
from deeplab_compile.layers.dense_crf import DenseCRFModule
from deeplab_compile.layers.registry import get
from deeplab_compile.netdef.errors import NetDefError


def _doc(h=20, w=24, c=4, **params):
    layer = {"name": "crf", "type": "DenseCRF", "bottom": ["scores", "data_dim", "data"], **params}
    return {"name": "crf_net", "inputs": {"data": [3, h, w], "scores": [c, h, w], "data_dim": [1, 1, 2]},
            "layers": [layer]}


def test_registered_with_deeplab_parameters():
    t = get("DenseCRF")
    assert t is not None
    assert {"max_iter", "pos_w", "pos_xy_std", "bi_w", "bi_xy_std", "bi_rgb_std"} <= set(t.params)


def test_compiled_net_matches_the_python_api():
    net = compile_net(_doc(max_iter=5, bi_w=5, bi_xy_std=50, bi_rgb_std=10, pos_w=3, pos_xy_std=3),
                      inputs={"data": "2x3x20x24", "scores": "2x4x20x24", "data_dim": "2x1x1x2"})
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    scores = torch.from_numpy(rng.normal(0, 1, (2, 4, 20, 24)).astype(np.float32))
    data = torch.from_numpy(img).permute(0, 3, 1, 2).float()
    dims = torch.tensor([[20.0, 24.0], [12.0, 16.0]]).reshape(2, 1, 1, 2)   # second image was padded
    out = net(data=data, scores=scores, data_dim=dims)
    q = out["crf"] if isinstance(out, dict) else out
    assert q.shape == (2, 4, 20, 24)
    want0 = dense_crf(img[0], scores[0], "deeplab_v1", 5)
    torch.testing.assert_close(q[0], want0, rtol=1e-5, atol=1e-6)
    want1 = dense_crf(img[1, :12, :16], scores[1, :, :12, :16], "deeplab_v1", 5)
    torch.testing.assert_close(q[1, :, :12, :16], want1, rtol=1e-5, atol=1e-6)
    assert float(q[1, :, 12:].abs().sum()) == 0 and float(q[1, :, :, 16:].abs().sum()) == 0


def test_mean_subtracted_bgr_data_gives_the_same_labels():
    # DeepLab fed the transformed blob (BGR, mean-subtracted); only the lattice's sampling moves.
    rng = np.random.default_rng(1)
    regions = (np.arange(30)[:, None] // 10 + np.arange(40)[None, :] // 20) % 3
    img = np.clip(rng.integers(0, 256, (3, 3))[regions] + rng.normal(0, 6, (30, 40, 3)), 0, 255).astype(np.uint8)
    scores = torch.from_numpy(rng.normal(0, 1, (1, 3, 30, 40)).astype(np.float32))
    scores[0, torch.from_numpy(regions), torch.arange(30)[:, None], torch.arange(40)[None, :]] += 1
    rgb = torch.from_numpy(img).permute(2, 0, 1).float()[None]
    bgr = rgb.flip(1) - torch.tensor([104.0, 117.0, 123.0]).reshape(1, 3, 1, 1)
    m = DenseCRFModule(bi_w=5, bi_xy_std=50, bi_rgb_std=10, pos_w=3, pos_xy_std=3)
    a = m(scores, None, rgb).argmax(1)
    b = m(scores, None, bgr).argmax(1)
    assert (a == b).float().mean() > 0.99


def test_without_image_only_the_positional_kernel_runs():
    scores = torch.randn(1, 3, 10, 12)
    m = DenseCRFModule(max_iter=3)
    q = m(scores, torch.tensor([10.0, 12.0]).reshape(1, 1, 1, 2))
    ref = dense_crf(np.zeros((10, 12, 3), np.uint8), scores[0], dict(bi_w=0, bi_xy_std=1, bi_rgb_std=1, pos_w=3,
                                                                      pos_xy_std=3), 3)
    torch.testing.assert_close(q[0], ref)


@pytest.mark.parametrize("doc,match", [
    (_doc(bi_xy_std=0), "bi_xy_std.*positive"),
    (_doc(bi_w=-1), "bi_w"),
    (_doc(max_iters=3), "unknown parameter 'max_iters'"),
])
def test_bad_parameters_are_netdef_errors(doc, match):
    with pytest.raises(NetDefError, match=match):
        compile_net(doc)


def test_mismatched_bottoms_are_shape_errors():
    doc = _doc()
    doc["inputs"]["data"] = [3, 20, 25]
    with pytest.raises(NetDefError, match="bottom 'data' must be"):
        compile_net(doc)
    doc = _doc()
    doc["inputs"]["data_dim"] = [1, 1, 3]
    with pytest.raises(NetDefError, match="data_dim"):
        compile_net(doc)


def test_default_normalization_is_deeplab_caffe_layers(float32_storage):
    # DeepLab's densecrf_layer (PottsPotential): each kernel adds w * (K q)_i / (K 1)_i,
    # normalised per pixel after filtering; unary -fc8 (equal to -log softmax up to a
    # per-pixel constant).  Checked against the dense mean-field with the same lattice
    # kernel matrices, with no normalization parameter given.
    from crf_helpers import brute_force_meanfield, lattice_matrix
    assert get("DenseCRF").params["normalization"].default == "after"
    rng = np.random.default_rng(3)
    h, w, c = 9, 11, 4
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    fc8 = rng.normal(0, 1.5, (c, h, w)).astype(np.float32)
    net = compile_net(_doc(h, w, c, max_iter=5, bi_w=4, bi_xy_std=5, bi_rgb_std=30, pos_w=3, pos_xy_std=1.5))
    out = net(data=torch.from_numpy(img).permute(2, 0, 1).float()[None], scores=torch.from_numpy(fc8)[None],
              data_dim=torch.tensor([float(h), float(w)]).reshape(1, 1, 1, 2))
    q = (out["crf"] if isinstance(out, dict) else out)[0].numpy()
    want = brute_force_meanfield(img, -fc8, 4, 5.0, 30.0, 3, 1.5, 5, lattice_matrix, "after")
    np.testing.assert_allclose(q, want, atol=2e-4)
    other = brute_force_meanfield(img, -fc8, 4, 5.0, 30.0, 3, 1.5, 5, lattice_matrix, "symmetric")
    assert np.abs(q - other).max() > 1e-2

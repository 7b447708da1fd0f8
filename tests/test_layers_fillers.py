"""Caffe's fillers: statistics, fan computation and the exact bilinear kernel."""
from __future__ import annotations

import math

import pytest
import torch

from deeplab_compile.layers.fillers import apply_filler, bilinear_kernel, filler
from deeplab_compile.layers.testing import make_layer

torch.set_num_threads(1)


def _filled(shape, **spec):
    g = torch.Generator().manual_seed(7)
    return apply_filler(torch.empty(shape, dtype=torch.float64), filler(**spec), generator=g)


# conv weight (Cout=128, Cin=64, 3, 3): fan_in = 576, fan_out = 1152
@pytest.mark.parametrize("norm,n", [("fan_in", 576), ("fan_out", 1152), ("average", 864)])
def test_xavier_and_msra_variance(norm, n):
    w = _filled((128, 64, 3, 3), type="xavier", variance_norm=norm)
    assert w.abs().max() <= math.sqrt(3 / n)
    assert w.var().item() == pytest.approx(1 / n, rel=0.03)
    w = _filled((128, 64, 3, 3), type="msra", variance_norm=norm)
    assert w.mean().item() == pytest.approx(0, abs=3e-3)
    assert w.var().item() == pytest.approx(2 / n, rel=0.03)


def test_deconv_fans_follow_caffe_blob_layout():
    # Deconvolution weight [Cin, Cout/group, k, k]: Caffe's fan_in is count / shape[0]
    layer, mod = make_layer("Deconvolution", {"num_output": 64, "kernel_size": 4, "stride": 2,
                                              "weight_filler": {"type": "msra"}}, [(1, 256, 4, 4)])
    assert mod.weight.var().item() == pytest.approx(2 / (64 * 16), rel=0.05)


def test_simple_fillers():
    assert _filled((5, 3), type="constant", value=0.25).eq(0.25).all()
    u = _filled((100000,), type="uniform", min=-2.0, max=6.0)
    assert u.min() >= -2 and u.max() <= 6 and u.mean().item() == pytest.approx(2, abs=0.05)
    gs = _filled((100000,), type="gaussian", mean=1.0, std=0.01)
    assert gs.mean().item() == pytest.approx(1, abs=1e-3) and gs.std().item() == pytest.approx(0.01, rel=0.02)
    sp = _filled((100, 1000), type="gaussian", sparse=20)      # keep 20 of 100 outputs' weights
    assert (sp != 0).double().mean().item() == pytest.approx(0.2, abs=0.01)
    pu = _filled((7, 3, 2, 2), type="positive_unitball")
    assert (pu >= 0).all()
    torch.testing.assert_close(pu.reshape(7, -1).sum(1), torch.ones(7, dtype=torch.float64))


def test_bilinear_kernel_exact():
    k4 = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    torch.testing.assert_close(bilinear_kernel(4, torch.float64), torch.outer(k4, k4))
    k3 = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(bilinear_kernel(3, torch.float64), torch.outer(k3, k3))
    # a factor-f kernel sums to f along each axis (f = 8: kernel 16)
    k16 = bilinear_kernel(16, torch.float64)
    assert k16.sum(0).sum().item() == pytest.approx(64.0)
    w = _filled((3, 1, 4, 4), type="bilinear")
    assert all(torch.equal(w[i, 0], torch.outer(k4, k4)) for i in range(3))


def test_layer_default_fillers():
    _, mod = make_layer("PReLU", {}, [(1, 4, 2, 2)])
    assert mod.weight.eq(0.25).all() and tuple(mod.weight.shape) == (4,)
    _, mod = make_layer("InnerProduct", {"num_output": 3, "weight_filler": {"type": "constant", "value": 2}},
                        [(2, 5)])
    assert mod.weight.eq(2).all() and mod.bias.eq(0).all()
    _, mod = make_layer("Convolution", {"num_output": 2, "kernel_size": 1, "weight_filler": "xavier",
                                        "bias_filler": {"type": "constant", "value": 0.1}}, [(1, 3, 2, 2)])
    assert mod.weight.abs().max() <= math.sqrt(3 / 3) and mod.bias.sub(0.1).abs().max() < 1e-7

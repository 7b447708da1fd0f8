"""Pooling's round_mode: CEIL is Caffe's, FLOOR matches torch's default (torchvision/TF nets)."""
import pytest
import torch
import torch.nn.functional as F

from deeplab_compile.layers.testing import make_layer


@pytest.mark.parametrize("size", [8, 9, 10, 11, 13, 257, 258])
@pytest.mark.parametrize("pool,k,s,p", [("max", 3, 2, 1), ("ave", 3, 2, 1), ("max", 2, 2, 0), ("ave", 3, 2, 0)])
def test_floor_mode_equals_torch_default(size, pool, k, s, p):
    x = torch.randn(2, 3, size, size + 1)
    layer, mod = make_layer("Pooling", {"pool": pool, "kernel_size": k, "stride": s, "pad": p,
                                        "round_mode": "FLOOR"}, [tuple(x.shape)])
    ref = (F.max_pool2d(x, k, s, p) if pool == "max"
           else F.avg_pool2d(x, k, s, p, count_include_pad=True))
    out = mod(x)
    assert layer.out_shapes[0] == tuple(ref.shape) == tuple(out.shape)
    torch.testing.assert_close(out, ref)


def test_ceil_and_floor_differ_where_caffe_and_torchvision_do():
    # 3x3/2 pad 1 on 10: Caffe (ceil) gives 6 windows, torchvision's maxpool (floor) gives 5
    ceil, _ = make_layer("Pooling", {"pool": "max", "kernel_size": 3, "stride": 2, "pad": 1}, [(1, 1, 10, 10)])
    floor, _ = make_layer("Pooling", {"pool": "max", "kernel_size": 3, "stride": 2, "pad": 1,
                                      "round_mode": "floor"}, [(1, 1, 10, 10)])
    assert ceil.out_shapes[0][2:] == (6, 6) and floor.out_shapes[0][2:] == (5, 5)

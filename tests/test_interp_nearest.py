"""Interp with ``interpolation: nearest``: every output value is one input value (label
maps keep 255 and their class ids), taken from the pixel nearest to where the bilinear
resize samples; the MSC nets shrink their labels this way."""
import os

import numpy as np
import pytest
import torch

from deeplab_compile.compiler import build_net
from deeplab_compile.layers.interp import CaffeInterp

from conftest import NETDEF, ROOT


def _label(h, w, seed=0):
    """A label map with classes 0..20 in blocks and a 255 band between them."""
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.repeat(rng.integers(0, 21, (h // 4 + 1, w // 4 + 1)), 4, 0), 4, 1)[:h, :w]
    lab[:, w // 3] = 255
    lab[h // 2, :] = 255
    return torch.from_numpy(lab.astype(np.float32))[None, None]


@pytest.mark.parametrize("h,w,ho,wo", [(321, 321, 31, 31), (321, 321, 21, 21), (65, 65, 7, 7), (41, 33, 9, 12)])
def test_nearest_keeps_label_ids_where_bilinear_mixes_them(h, w, ho, wo):
    lab = _label(h, w)
    ref = torch.zeros(1, 1, ho, wo)
    near = CaffeInterp(interpolation="nearest")(lab, ref)
    assert near.shape == (1, 1, ho, wo)
    assert set(near.unique().tolist()) <= set(lab.unique().tolist())
    # the pixel nearest to the aligned-corner sample: round(i (H - 1) / (Ho - 1)), by hand
    for i in (0, ho // 3, ho - 1):
        for j in (0, wo // 2, wo - 1):
            y = int(np.floor(i * (h - 1) / (ho - 1) + 0.5))
            x = int(np.floor(j * (w - 1) / (wo - 1) + 0.5))
            assert near[0, 0, i, j] == lab[0, 0, y, x]
    bil = CaffeInterp()(lab, ref)
    if (h - 1) % (ho - 1):                      # samples between pixels: bilinear invents ids
        assert not set(bil.round().unique().tolist()) <= set(lab.unique().tolist())


def test_nearest_equals_bilinear_on_whole_pixel_samples():
    lab = _label(97, 97)                       # 8k + 1 at stride 8: DeepLab's own label shrink
    assert torch.equal(CaffeInterp(shrink_factor=8, interpolation="nearest")(lab),
                       CaffeInterp(shrink_factor=8)(lab))


def test_nearest_half_pixel_centres():
    x = torch.arange(10.0).reshape(1, 1, 1, 10)
    out = CaffeInterp(height=1, width=4, interpolation="nearest", align_corners=False)(x)
    # floor((j + 0.5) * 10 / 4): 1, 3, 6, 8
    assert out.flatten().tolist() == [1.0, 3.0, 6.0, 8.0]


@pytest.mark.parametrize("path", [os.path.join(NETDEF, "deeplab_v2_resnet101_msc.yaml"),
                                  os.path.join(ROOT, "experiments", "voc12", "config", "deeplab_v2_resnet101_msc",
                                               "train.yaml")])
def test_msc_nets_shrink_every_label_by_nearest_neighbour(path):
    v = {"NUM_LABELS": 21, "DATA_ROOT": "/d", "LIST_DIR": "/l", "TRAIN_SET": "train_aug"} if "experiments" in path \
        else {}
    ir = build_net(path, phase="train", vars=v)
    label = {ir.input_ids[n] for n in ir.input_ids if n == "label"}
    shrinks = [lay for lay in ir.layers if lay.type == "Interp" and lay.bottom_ids[0] in label]
    assert len(shrinks) == 3                    # one per scale: 1, 0.75, 0.5
    assert all(lay.params["interpolation"] == "nearest" for lay in shrinks)
    losses = [lay for lay in ir.layers if lay.type == "SoftmaxWithLoss"]
    fed = {lay.bottom_ids[1] for lay in losses}
    assert fed == {b for lay in shrinks for b in lay.top_ids}

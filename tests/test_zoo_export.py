"""deeplab-compile --emit onnx on v3 and v3+: onnxruntime reproduces the outputs."""
import numpy as np
import pytest
import torch

import deeplab_compile
from deeplab_compile.emit import export_onnx

from zoo_helpers import netdef

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", ["deeplab_v3_resnet101", "deeplab_v3plus_mobilenetv2",
                                  pytest.param("deeplab_v3plus_xception65", marks=pytest.mark.slow),
                                  pytest.param("deeplab_v3plus_resnet101", marks=pytest.mark.slow)])
def test_onnx_matches(tmp_path, name):
    torch.manual_seed(0)
    net = deeplab_compile.compile(netdef(name), vars={"crop": 49}, fuse=False)     # exporters take the netdef's graph
    x = torch.randn(1, 3, 49, 49)
    with torch.no_grad():
        ref = net(x)["logits_interp"].numpy()
    path = str(tmp_path / "net.onnx")
    export_onnx(net, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    # randomly initialised 100-layer nets reach large activations: compare on their scale
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()

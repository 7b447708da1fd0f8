"""deeplab-test runs a snapshot trained at output stride 16 at output stride 8: the same
parameters, only strides and dilations change (TF DeepLab's train-at-16, evaluate-at-8)."""
import os
import textwrap

import numpy as np
import torch
from PIL import Image

from deeplab_compile.cli import test as test_cli
from deeplab_compile.compiler import compile_net
from deeplab_compile.data.synthetic import generate
from deeplab_compile.io.features import read_blob
from deeplab_compile.training.loop import train
from deeplab_compile.training.solver import load_solver
from deeplab_compile.weights import load_weights

SIZE = 48     # every synthetic image is 48 x 48: the test crop needs no padding

# conv1 strides 8; conv2 strides 2 at OS 16, or keeps stride 8 and dilates by 2 at OS 8.
NET = """\
name: tiny_os
vars: {num_classes: 21, crop: %d, OUTPUT_STRIDE: 16}
inputs:
  data: [3, "${crop}", "${crop}"]
  label: [1, "${crop}", "${crop}"]
layers:
  - {name: conv1, type: Convolution, bottom: data, num_output: 6, kernel_size: 3, stride: 8, pad: 1,
     weight_filler: {type: msra}}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - {name: conv2, type: Convolution, bottom: conv1, num_output: 6, kernel_size: 3,
     stride: "${OUTPUT_STRIDE / 8}", dilation: "${16 / OUTPUT_STRIDE}", pad: "${16 / OUTPUT_STRIDE}",
     weight_filler: {type: msra}}
  - {name: relu2, type: ReLU, bottom: conv2, top: conv2}
  - {name: score, type: Convolution, bottom: conv2, num_output: "${num_classes}", kernel_size: 1,
     weight_filler: {type: msra}}
  - {name: score_interp, type: Interp, bottom: [score, data]}
  - {name: loss, type: SoftmaxWithLoss, bottom: [score_interp, label], ignore_label: 255, phase: train}
""" % SIZE


def _snapshot_at_os16(tmp_path):
    syn = generate(str(tmp_path / "voc"), num_images=6, min_size=SIZE, max_size=SIZE, seed=0)
    net = tmp_path / "tiny_os.yaml"
    net.write_text(NET)
    solver = tmp_path / "solver.yaml"
    solver.write_text(textwrap.dedent(f"""\
        net: {net}
        vars: {{OUTPUT_STRIDE: 16}}
        data: {{source: {syn}/list/train.txt, root_folder: {syn}, batch_size: 2, preprocess: tf, num_workers: 0}}
        base_lr: 0.01
        lr_policy: fixed
        max_iter: 2
        momentum: 0.9
        snapshot_prefix: {tmp_path}/model/train
        random_seed: 0
        """))
    r = train(load_solver(str(solver)), progress=False, echo=lambda *_: None)
    return syn, str(net), r.snapshot


def _run_test(net, snap, syn, out, stride):
    lst = os.path.join(syn, "list", "val.txt")
    rc = test_cli.main(["--net", net, "--weights", snap, "--list", lst, "--root", syn, "-D", f"OUTPUT_STRIDE={stride}",
                        "--preprocess", "tf", "--features", out, "--workers", "0", "--no-progress"])
    assert rc == 0
    ids = [os.path.splitext(os.path.basename(ln.split()[0]))[0] for ln in open(lst) if ln.strip()]
    return ids, {i: read_blob(os.path.join(out, f"{i}_blob_0.mat")) for i in ids}


def test_a_snapshot_trained_at_os16_tests_at_os8_with_its_own_parameters(tmp_path):
    syn, net, snap = _snapshot_at_os16(tmp_path)
    ids, os8 = _run_test(net, snap, syn, str(tmp_path / "os8"), 8)
    _, os16 = _run_test(net, snap, syn, str(tmp_path / "os16"), 16)

    # the reference: the net compiled at OS 8, the snapshot's tensors loaded, run by hand
    ref = compile_net(net, vars={"OUTPUT_STRIDE": 8}, inputs={"data": (1, 3, SIZE, SIZE)}).eval()
    load_weights(ref, snap)
    assert dict(ref.named_parameters())["conv2.weight"].shape == (6, 6, 3, 3)
    for i in ids:
        rgb = np.asarray(Image.open(os.path.join(syn, "JPEGImages", i + ".jpg")).convert("RGB"), dtype=np.float32)
        x = torch.from_numpy((rgb - 127.5) / 127.5).permute(2, 0, 1)[None]
        with torch.no_grad():
            want = ref(x)
        want = want["score_interp"] if isinstance(want, dict) else want
        want = want[0] if isinstance(want, (tuple, list)) else want
        got = os8[i]
        assert got.shape == (1, 21, SIZE, SIZE)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
        # the strides differ: the OS 16 scores are another (coarser) function of the same weights
        assert np.abs(got - os16[i]).max() > 1e-3

"""The input normalisation travels with the net: deeplab-train records it in the
snapshot, the netdef can declare it, and deeplab-predict and deeplab-test use it;
--preprocess overrides it.  deeplab-test never crops an image larger than the crop."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import deeplab_compile.inference as inference
from deeplab_compile.cli.predict import main as predict
from deeplab_compile.cli.test import main as deeplab_test
from deeplab_compile.data.synthetic import generate
from deeplab_compile.training.loop import train
from deeplab_compile.training.solver import load_solver

from conftest import ROOT

CFG = os.path.join(ROOT, "experiments", "common", "config", "deeplab_largefov_tiny")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The experiment's tiny net after 2 iterations on a synthetic set."""
    tmp = tmp_path_factory.mktemp("pre")
    syn = str(tmp / "syn")
    generate(syn, num_images=6, min_size=40, max_size=48, seed=0)
    sv = load_solver(os.path.join(CFG, "solver.yaml"),
                     {"NUM_LABELS": 21, "DATA_ROOT": syn, "LIST_DIR": os.path.join(syn, "list"), "TRAIN_SET": "train",
                      "CONFIG_DIR": CFG, "MODEL_DIR": str(tmp / "model"), "LABEL_MAP": "none", "MAX_ITER": 2})
    r = train(sv, gpu="cpu", progress=False)
    image = os.path.join(syn, "JPEGImages", sorted(os.listdir(os.path.join(syn, "JPEGImages")))[0])
    return tmp, syn, r.snapshot, image


@pytest.fixture
def fed(monkeypatch):
    """The tensors deeplab-predict feeds to the net."""
    seen = []
    real = inference.multi_scale_probs

    def spy(run, x, scales, flip=False):
        seen.append(x.clone())
        return real(run, x, scales, flip)
    monkeypatch.setattr(inference, "multi_scale_probs", spy)
    return seen


def _rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.float64)


def test_snapshot_records_the_training_normalisation(trained):
    from deeplab_compile.weights import read_state_dict
    _, meta = read_state_dict(trained[2])
    # train.yaml's data layer: mean_value 127.5, scale 0.0078125 on Caffe's B G R pixels
    assert meta["preprocess"] == {"order": "bgr", "mean": [127.5] * 3, "scale": [0.0078125] * 3}


def test_predict_normalises_as_training_did_with_no_flag(trained, fed, tmp_path, capsys):
    tmp, syn, snap, image = trained
    assert predict(["--netdef", os.path.join(CFG, "train.yaml"), "--weights", snap, image, "-o", str(tmp_path)]) == 0
    assert "from the weights file" in capsys.readouterr().err
    # what the training data layer computes for this image: B G R, (x - 127.5) * 0.0078125
    bgr = _rgb(image)[..., ::-1]
    want = ((bgr - 127.5) * 0.0078125).astype(np.float32).transpose(2, 0, 1)
    assert len(fed) == 1 and fed[0].shape == (1, 3, *bgr.shape[:2])
    np.testing.assert_allclose(fed[0][0].numpy(), want, rtol=0, atol=1e-6)
    # and the data pipeline of the training net, run on the same image, agrees
    from deeplab_compile.compiler import load_netdef, net_from_doc
    from deeplab_compile.data import pipeline_for, resolve_spec
    ir = net_from_doc(load_netdef(os.path.join(CFG, "train.yaml"), {"NUM_LABELS": 21, "DATA_ROOT": syn,
                      "LIST_DIR": os.path.join(syn, "list"), "TRAIN_SET": "train"}), phase="test")
    lst = tmp_path / "one.txt"
    lst.write_text(os.path.relpath(image, syn) + "\n")
    spec = resolve_spec(ir, "test", {"source": str(lst), "label_type": "none", "num_workers": 0,
                                     "batch_size": 1, "shuffle": False, "mirror": False})
    batch = next(iter(pipeline_for(ir, "test", spec, num_workers=0)))
    h, w = bgr.shape[:2]
    np.testing.assert_allclose(batch["data"][0, :, :h, :w].numpy(), fed[0][0].numpy(), rtol=0, atol=1e-6)


def test_the_flag_overrides_the_record(trained, fed, tmp_path):
    _, _, snap, image = trained
    assert predict(["--netdef", os.path.join(CFG, "train.yaml"), "--weights", snap, image, "-o", str(tmp_path),
                    "--preprocess", "tf"]) == 0
    want = (_rgb(image) / 127.5 - 1).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(fed[0][0].numpy(), want, rtol=0, atol=1e-6)


def test_a_netdef_declares_its_normalisation(tmp_path, fed):
    net = tmp_path / "n.yaml"
    net.write_text("name: n\npreprocess: {order: rgb, mean: [10, 20, 30], scale: 0.5}\n"
                   "inputs: {data: [3, 9, 9]}\n"
                   "layers:\n  - {name: fc8, type: Convolution, bottom: data, num_output: 2, kernel_size: 1}\n")
    img = tmp_path / "a.png"
    rgb = np.random.default_rng(0).integers(0, 255, (9, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(img)
    assert predict(["--netdef", str(net), str(img), "-o", str(tmp_path / "o")]) == 0
    want = ((rgb - np.array([10, 20, 30])) * 0.5).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(fed[0][0].numpy(), want, rtol=0, atol=1e-6)


def test_a_bad_declared_normalisation_is_one_line(tmp_path, capsys):
    net = tmp_path / "n.yaml"
    net.write_text("name: n\npreprocess: {order: gbr}\ninputs: {data: [3, 9, 9]}\n"
                   "layers:\n  - {name: fc8, type: Convolution, bottom: data, num_output: 2, kernel_size: 1}\n")
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(img)
    assert predict(["--netdef", str(net), str(img), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n.yaml:2" in err[0] and "order 'gbr'" in err[0]


def test_zoo_nets_declare_what_their_weights_expect():
    from deeplab_compile.compiler import load_netdef
    from deeplab_compile.data.preprocess import PRESETS, of_netdef
    for name, want in (("deeplab_largefov", "caffe"), ("deeplab_v2_resnet101_aspp", "caffe"),
                       ("deeplab_v3plus_mobilenetv2", "imagenet"), ("deeplab_v3plus_xception65", "tf"),
                       ("deeplab_v3_resnet101", "imagenet")):
        assert of_netdef(load_netdef(os.path.join(ROOT, "netdef", name + ".yaml"))) == PRESETS[want], name


def _test_args(syn, tmp, snap, crop=49):
    lst = os.path.join(syn, "list", "val.txt")
    return ["--net", os.path.join(CFG, "test.yaml"), "--weights", snap, "--no-progress",
            "-D", "NUM_LABELS=21", "-D", f"DATA_ROOT={syn}", "-D", f"TEST_LIST={lst}",
            "-D", f"FEATURE_DIR={tmp}", "-D", f"TEST_CROP={crop}"]


def test_deeplab_test_refuses_a_data_layer_that_normalises_otherwise(trained, tmp_path, capsys):
    _, syn, snap, _ = trained
    obj = torch.load(snap, weights_only=True)
    obj["preprocess"] = {"order": "rgb", "mean": [127.5] * 3, "scale": [1 / 127.5] * 3}
    other = tmp_path / "other.pt"
    torch.save(obj, other)
    assert deeplab_test(_test_args(syn, tmp_path, str(other))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "normalises as" in err[0] and "trained with tf" in err[0]
    # the flag overrides the record
    assert deeplab_test(_test_args(syn, tmp_path, str(other)) + ["--preprocess", "caffe", "--mean", "127.5"]) == 0


def test_deeplab_test_uses_the_record_for_a_net_without_a_data_layer(trained, tmp_path, monkeypatch):
    """A net fed by ``inputs:`` used to get Caffe's mean; now it gets the snapshot's."""
    _, syn, snap, image = trained
    net = tmp_path / "plain.yaml"
    net.write_text("name: plain\ninputs: {data: [3, 49, 49]}\n"
                   "layers:\n  - {name: conv1_1, type: Convolution, bottom: data, num_output: 8, kernel_size: 3,"
                   " pad: 1}\n")
    state = torch.load(snap, weights_only=True)
    small = {"format": state["format"], "version": state["version"], "iter": 2,
             "model": {k: v for k, v in state["model"].items() if k.startswith("conv1_1.")},
             "preprocess": state["preprocess"]}
    w = tmp_path / "small.pt"
    torch.save(small, w)
    seen = []
    from deeplab_compile.data import dataset
    real = dataset.ImageSegDataset.__getitem__

    def spy(self, item):
        out = real(self, item)
        seen.append(self.params)
        return out
    monkeypatch.setattr(dataset.ImageSegDataset, "__getitem__", spy)
    lst = tmp_path / "one.txt"
    lst.write_text(os.path.relpath(image, syn) + "\n")
    from deeplab_compile.test import run_test
    run_test(str(net), str(w), list_path=str(lst), root=syn, progress=False, num_workers=0, blob="conv1_1")
    assert seen and seen[0].mean == (127.5, 127.5, 127.5) and seen[0].scale == 0.0078125


def test_deeplab_test_covers_an_image_larger_than_the_crop(trained, tmp_path, capsys):
    _, syn, snap, _ = trained
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (61, 75, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    small = rng.integers(0, 255, (30, 20, 3), dtype=np.uint8)
    Image.fromarray(small).save(tmp_path / "small.png")
    lst = tmp_path / "l.txt"
    lst.write_text("big.png\nsmall.png\n")
    feats = tmp_path / "f"
    args = _test_args(str(tmp_path), feats, snap) + ["--list", str(lst), "--png", str(tmp_path / "png")]
    args[args.index(f"TEST_LIST={os.path.join(str(tmp_path), 'list', 'val.txt')}")] = f"TEST_LIST={lst}"
    os.makedirs(feats)
    assert deeplab_test(args) == 0
    assert "1 of 2 images are larger than the crop 49x49" in capsys.readouterr().err
    from deeplab_compile.io.palette import read_label_png
    from deeplab_compile.io.mat import FEATURE_SUFFIX
    import scipy.io
    lab = read_label_png(tmp_path / "png" / "big.png")
    assert lab.shape == (61, 75)
    # features cover the whole image (MatWrite's [W, H, C, N] layout) and the small one keeps the crop
    w, h = scipy.io.loadmat(feats / ("big" + FEATURE_SUFFIX))["data"].shape[:2]
    assert w >= 75 and h >= 61
    assert scipy.io.loadmat(feats / ("small" + FEATURE_SUFFIX))["data"].shape[:2] == (49, 49)
    # the labels are those of the whole image run at its own size, as deeplab-predict runs it
    assert predict(["--netdef", os.path.join(CFG, "train.yaml"), "--weights", snap, str(tmp_path / "big.png"),
                    "-o", str(tmp_path / "pred")]) == 0
    assert (read_label_png(tmp_path / "pred" / "big.png") == lab).all()


# ImageNet's normalisation as torchvision publishes it (0..1 RGB): per channel, not one scale
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _identity_net(tmp_path, header="", data_layer=""):
    """A 1x1 convolution that copies its three channels: its features are its input."""
    net = tmp_path / "ident.yaml"
    body = ("layers:\n" + data_layer +
            "  - {name: copy, type: Convolution, bottom: data, num_output: 3, kernel_size: 1}\n")
    net.write_text("name: ident\n" + header + body)
    return net


def _image_list(tmp_path, h=9, w=11):
    rgb = np.random.default_rng(3).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    (tmp_path / "l.txt").write_text("a.png\n")
    return rgb, str(tmp_path / "l.txt")


def _identity_weights(path, **meta):
    sd = {"copy.weight": torch.eye(3)[:, :, None, None], "copy.bias": torch.zeros(3)}
    torch.save({"state_dict": sd, **meta}, path)
    return str(path)


def _features(feats, h, w):
    from deeplab_compile.io.mat import FEATURE_SUFFIX, read_scores
    return read_scores(os.path.join(feats, "a" + FEATURE_SUFFIX), h, w)


def test_deeplab_test_normalises_per_channel_as_the_netdef_declares_imagenet(tmp_path):
    rgb, lst = _image_list(tmp_path)
    net = _identity_net(tmp_path, "preprocess: imagenet\ninputs: {data: [3, 13, 13]}\n")
    w = _identity_weights(tmp_path / "w.pt")
    feats = str(tmp_path / "f")
    assert deeplab_test(["--net", str(net), "--weights", w, "--list", lst, "--root", str(tmp_path),
                         "--features", feats, "--no-progress", "--workers", "0"]) == 0
    want = ((rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(_features(feats, 9, 11), want, rtol=0, atol=1e-5)


def test_deeplab_test_takes_imagenet_from_the_weights_record_for_a_data_layer_without_mean(tmp_path, fed):
    """A test net whose ImageSegData sets no mean_value or scale runs as the weights were
    trained (here ImageNet's mean and std), single-scale and with --scales, no --preprocess."""
    from deeplab_compile.data.preprocess import PRESETS
    rgb, lst = _image_list(tmp_path)
    layer = ("  - {name: data, type: ImageSegData, top: [data], source: " + lst + ", root_folder: "
             + str(tmp_path) + ", label_type: none, batch_size: 1, crop_size: 13}\n")
    net = _identity_net(tmp_path, data_layer=layer)
    w = _identity_weights(tmp_path / "w.pt", preprocess=PRESETS["imagenet"].to_dict())
    want = ((rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    feats = str(tmp_path / "f")
    assert deeplab_test(["--net", str(net), "--weights", w, "--features", feats, "--no-progress",
                         "--workers", "0"]) == 0
    np.testing.assert_allclose(_features(feats, 9, 11), want, rtol=0, atol=1e-5)
    # multi-scale: the image normalised once, then resized per scale (what the net is fed at scale 1)
    assert deeplab_test(["--net", str(net), "--weights", w, "--features", feats, "--no-progress",
                         "--scales", "0.5,1", "--flip"]) == 0
    assert len(fed) == 1
    np.testing.assert_allclose(fed[0][0].numpy(), want, rtol=0, atol=1e-5)


def test_training_with_imagenet_preprocessing_feeds_and_records_it(tmp_path):
    from deeplab_compile.compiler import load_netdef, net_from_doc
    from deeplab_compile.data import pipeline_for, resolve_spec
    from deeplab_compile.data.preprocess import PRESETS, from_value
    from deeplab_compile.weights import read_state_dict
    syn = str(tmp_path / "syn")
    generate(syn, num_images=4, min_size=24, max_size=24, seed=0)
    net = tmp_path / "n.yaml"
    net.write_text("name: n\ninputs: {data: [3, 17, 17], label: [1, 17, 17]}\nlayers:\n"
                   "  - {name: fc8, type: Convolution, bottom: data, num_output: 21, kernel_size: 1}\n"
                   "  - {name: loss, type: SoftmaxWithLoss, bottom: [fc8, label], ignore_label: 255}\n")
    data = {"source": f"{syn}/list/train.txt", "root_folder": syn, "batch_size": 1, "preprocess": "imagenet",
            "num_workers": 0}
    ir = net_from_doc(load_netdef(str(net)), phase="train")
    batch = next(iter(pipeline_for(ir, "train", resolve_spec(ir, "train", dict(data, shuffle=False)),
                                   num_workers=0)))
    fed = batch["data"][0].numpy().transpose(1, 2, 0)
    whole = (_rgb(syn + open(data["source"]).read().split()[0]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    # the 17 x 17 crop (at a random offset) of the image normalised per channel
    assert any(np.allclose(fed, whole[y:y + 17, x:x + 17], rtol=0, atol=1e-5) for y in range(8) for x in range(8))
    solver = tmp_path / "solver.yaml"
    solver.write_text(f"net: {net}\nbase_lr: 0.001\nmax_iter: 1\nsnapshot_prefix: {tmp_path}/m\n"
                      f"data: {{source: {syn}/list/train.txt, root_folder: {syn}, batch_size: 1, "
                      "preprocess: imagenet, num_workers: 0}\n")
    _, meta = read_state_dict(train(load_solver(str(solver)), gpu="cpu", progress=False).snapshot)
    assert from_value(meta["preprocess"]).close_to(PRESETS["imagenet"])


def test_a_data_section_with_imagenet_refuses_its_own_mean(tmp_path):
    from deeplab_compile.data.errors import DataError
    from deeplab_compile.data.spec import check_section
    assert check_section({"preprocess": "imagenet"}) == {"preprocess": "imagenet"}
    from deeplab_compile.compiler import load_netdef, net_from_doc
    from deeplab_compile.data.spec import resolve_spec
    net = _identity_net(tmp_path, "inputs: {data: [3, 13, 13]}\n")
    ir = net_from_doc(load_netdef(str(net)), phase="test")
    with pytest.raises(DataError, match="fixes mean and scale"):
        resolve_spec(ir, "test", {"source": "x.txt", "preprocess": "imagenet", "mean_value": [1, 2, 3]})

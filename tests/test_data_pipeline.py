"""The data pipeline: list files, label checks, label maps, seeding, sharding, the
synthetic set, and how a net's data layer feeds its placeholders."""
import hashlib
import os
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import deeplab_compile
from deeplab_compile.data import DataError, pipeline_for
from deeplab_compile.data.dataset import StreamSampler
from deeplab_compile.data.labels import map_labels
from deeplab_compile.data.synthetic import generate

from conftest import NETDEF

TINY = os.path.join(NETDEF, "deeplab_largefov_tiny.yaml")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("syn") / "voc"), num_images=24, min_size=40, max_size=56, seed=3)


def tiny(phase="train", crop=33):
    return deeplab_compile.compile(TINY, phase=phase, vars={"crop": crop})


def data(syn, **kw):
    d = {"source": os.path.join(syn, "list", "train.txt"), "root_folder": syn, "batch_size": 4,
         "mean_value": [104.008, 116.669, 122.675], "num_workers": 0}
    d.update(kw)
    return d


def batches(pipe, n):
    it = iter(pipe)
    return [next(it) for _ in range(n)]


def test_synthetic_is_deterministic_and_voc_shaped(tmp_path, syn):
    again = generate(str(tmp_path / "again"), num_images=24, min_size=40, max_size=56, seed=3)
    for sub in ("JPEGImages/syn_000005.jpg", "SegmentationClass/syn_000005.png", "list/train.txt"):
        a = hashlib.sha256(open(os.path.join(syn, sub), "rb").read()).hexdigest()
        b = hashlib.sha256(open(os.path.join(again, sub), "rb").read()).hexdigest()
        assert a == b, sub
    lab = Image.open(os.path.join(syn, "SegmentationClass", "syn_000005.png"))
    assert lab.mode == "P" and lab.getpalette()[3:6] == [128, 0, 0]      # VOC colour of class 1
    vals = set()
    for k in range(24):
        vals |= set(np.unique(np.asarray(Image.open(os.path.join(syn, "SegmentationClass", f"syn_{k:06d}.png")))))
    assert 0 in vals and len(vals) > 8 and max(vals) <= 20
    lines = open(os.path.join(syn, "list", "val.txt")).read().split("\n")
    assert lines[0].startswith("/JPEGImages/syn_") and " /SegmentationClass/syn_" in lines[0]
    for f in ("ImageSets/Segmentation/train.txt", "list/train_aug.txt", "list/val_id.txt", "synthetic.json"):
        assert os.path.exists(os.path.join(syn, f))
    other = generate(str(tmp_path / "other"), num_images=2, min_size=40, max_size=56, seed=4)
    assert open(os.path.join(other, "JPEGImages/syn_000000.jpg"), "rb").read() != \
        open(os.path.join(syn, "JPEGImages/syn_000000.jpg"), "rb").read()


def test_batches_feed_the_placeholders(syn):
    net = tiny()
    pipe = pipeline_for(net, "train", data(syn, mirror=True, scale_factors=[0.75, 1.0, 1.25]))
    b = batches(pipe, 1)[0]
    feeds = pipe.feeds(b)
    assert [tuple(t.shape) for t in feeds] == [(4, 3, 33, 33), (4, 1, 33, 33)]
    out = net(*feeds)
    assert torch.isfinite(out["loss"])
    labels = set(b["label"].unique().tolist())
    assert labels <= set(range(21)) | {255.0}


def test_batches_do_not_depend_on_workers_and_resume_mid_stream(syn):
    net = tiny()
    kw = dict(mirror=True, shuffle=True, scale_factors=[0.5, 1.0, 1.5])
    a = batches(pipeline_for(net, "train", data(syn, **kw), seed=7), 8)       # crosses an epoch (19 images)
    b = batches(pipeline_for(net, "train", data(syn, **kw), seed=7, num_workers=2), 8)
    c = batches(pipeline_for(net, "train", data(syn, **kw), seed=7, start=5 * 4), 3)
    for x, y in zip(a, b):
        assert x["id"] == y["id"] and torch.equal(x["data"], y["data"]) and torch.equal(x["label"], y["label"])
    for x, y in zip(a[5:], c):
        assert x["id"] == y["id"] and torch.equal(x["data"], y["data"])
    d = batches(pipeline_for(net, "train", data(syn, **kw), seed=8), 1)
    assert not torch.equal(a[0]["data"], d[0]["data"])


def test_stream_sampler_shards_each_epoch_across_processes():
    n = 10
    streams = [StreamSampler(n, shuffle=True, seed=1, rank=r, world_size=2) for r in range(2)]
    firsts = [[i for i, _ in zip(s, range(5))] for s in streams]
    assert sorted(x[0] for f in firsts for x in f) == list(range(10))
    assert all(e == 0 for f in firsts for _, e in f)


def test_test_phase_walks_the_list_once_in_order(syn):
    net = tiny("test", crop=57)
    pipe = pipeline_for(net, "test", data(syn, source=os.path.join(syn, "list", "val.txt"), label_type="none",
                                          batch_size=2))
    ids = [i for b in pipe for i in b["id"]]
    want = open(os.path.join(syn, "list", "val_id.txt")).read().split()
    assert ids == want


def test_tf_preprocessing_is_rgb_in_minus_one_one(syn):
    net = tiny()
    caffe = batches(pipeline_for(net, "test", data(syn, mean_value=[0.0, 0.0, 0.0])), 1)[0]["data"]
    tf = batches(pipeline_for(net, "test", data(syn, preprocess="tf", mean_value=None) if False else
                              {k: v for k, v in data(syn, preprocess="tf").items() if k != "mean_value"}), 1)[0]
    x = tf["data"]
    assert x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[:, [2, 1, 0]][:, :, :20, :20], caffe[:, :, :20, :20] / 127.5 - 1)


def _one_line_list(tmp_path, syn, line, name="bad.txt"):
    p = tmp_path / name
    good = open(os.path.join(syn, "list", "train.txt")).read().splitlines()[0]
    p.write_text(good + "\n" + line + "\n")
    return str(p)


def test_missing_file_names_file_and_line(tmp_path, syn):
    lst = _one_line_list(tmp_path, syn, "/JPEGImages/nope.jpg /SegmentationClass/syn_000000.png")
    with pytest.raises(DataError, match=r"bad.txt:2:1: image '.*nope.jpg' does not exist"):
        pipeline_for(tiny(), "train", data(syn, source=lst))


def test_corrupt_image_names_file_and_line(tmp_path, syn):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lst = tmp_path / "c.txt"
    lst.write_text(f"{bad} {syn}/SegmentationClass/syn_000000.png\n")
    pipe = pipeline_for(tiny(), "train", data(syn, source=str(lst), root_folder=""))
    with pytest.raises(DataError, match=r"c.txt:1:1: cannot read image '.*corrupt.jpg'"):
        batches(pipe, 1)


def test_label_out_of_range_names_file_and_value(tmp_path, syn):
    lab = np.zeros((50, 50), np.uint8)
    lab[3, 3] = 37
    Image.fromarray(lab).save(tmp_path / "l.png")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "i.jpg")
    lst = tmp_path / "l.txt"
    lst.write_text("/i.jpg /l.png\n")
    pipe = pipeline_for(tiny(), "train", data(syn, source=str(lst), root_folder=str(tmp_path)))
    with pytest.raises(DataError, match=r"l.txt:1:1: label '.*l.png' has value\(s\) 37 outside \[0, 21\)"):
        batches(pipe, 1)


def test_bad_data_key_is_one_line_with_position(tmp_path):
    from deeplab_compile.netdef.parse import loads
    sec = loads("data: {source: a.txt, mirorr: true}\n", "solver.yaml")["data"]
    with pytest.raises(DataError, match=r"solver.yaml:1:23: data: unknown key 'mirorr'; did you mean 'mirror'\?"):
        pipeline_for(tiny(), "train", sec)


def test_label_maps():
    city = np.array([[7, 8, 26, 0, 33, 255, 3]])
    np.testing.assert_array_equal(map_labels(city, "cityscapes"), [[0, 1, 13, 255, 18, 255, 255]])
    ade = np.array([[0, 1, 150, 75]])
    np.testing.assert_array_equal(map_labels(ade, "ade20k"), [[255, 0, 149, 74]])
    voc = np.array([[0, 20, 255]])
    np.testing.assert_array_equal(map_labels(voc, "voc"), voc)


def test_image_seg_data_layer_with_data_dim_and_image_labels(tmp_path, syn):
    net_text = textwrap.dedent(f"""
        name: segdata
        layers:
          - {{name: data, type: ImageSegData, top: [data, label, data_dim], source: {syn}/list/train.txt,
             root_folder: {syn}, batch_size: 2, crop_size: 64, mean_value: [104, 117, 123]}}
          - {{name: conv, type: Convolution, bottom: data, num_output: 21, kernel_size: 1}}
          - {{name: loss, type: SoftmaxWithLoss, bottom: [conv, label], ignore_label: 255}}
          - {{name: silence, type: Silence, bottom: data_dim, top: []}}
        """)
    p = tmp_path / "segdata.yaml"
    p.write_text(net_text)
    net = deeplab_compile.compile(str(p), phase="train")
    assert net.input_names == ["data", "label", "data_dim"]
    pipe = pipeline_for(net, "test", None, num_workers=0)
    b = batches(pipe, 1)[0]
    assert b["data_dim"].shape == (2, 1, 1, 2)
    h, w = b["size"][0].tolist()
    assert b["data_dim"][0, 0, 0].tolist() == [min(64, h), min(64, w)]
    assert (b["label"][0, 0, h:, :] == 255).all()            # padded below the image
    net(*pipe.feeds(b))
    img_list = tmp_path / "cls.txt"
    img_list.write_text(f"/JPEGImages/syn_000000.jpg 7\n")
    pipe = pipeline_for(net, "train", {"source": str(img_list), "label_type": "image", "num_workers": 0})
    b = batches(pipe, 1)[0]
    # DeepLab's label_type image: the class id fills the image's pixels of the label map
    assert b["label"].shape[1:] == (1, 64, 64)
    labels = set(b["label"].unique().tolist())
    assert 7.0 in labels and labels <= {7.0, 255.0}
    pipe = pipeline_for(net, "test", {"source": str(img_list), "label_type": "none", "num_workers": 0})
    b = batches(pipe, 1)[0]
    assert b["label"].shape[1:] == (1, 64, 64) and (b["label"] == 255).all()   # no label: ignore_label

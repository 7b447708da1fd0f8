"""The datasets table and the one list maker behind experiments/*/list/make_lists.py."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from deeplab_compile.data.datasets import DATASETS, get_dataset, make_lists
from deeplab_compile.data.errors import DataError
from deeplab_compile.data.labels import map_labels
from deeplab_compile.io.palette import get_palette


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def test_each_entry_names_a_known_label_map_and_palette():
    assert set(DATASETS) == {"voc12", "cityscapes", "ade20k"}
    for d in DATASETS.values():
        map_labels(__import__("numpy").zeros((2, 2), "uint8"), d.label_map)     # raises when unknown
        assert get_palette(d.palette).shape[1] == 3
        assert d.classes is None or len(d.classes) == d.num_labels
    assert [DATASETS[n].num_labels for n in ("voc12", "cityscapes", "ade20k")] == [21, 19, 150]


def test_an_unknown_dataset_suggests_the_known_one():
    with pytest.raises(DataError, match="unknown dataset 'cityscape'.*cityscapes"):
        get_dataset("cityscape")


def test_voc_lists_with_sbd(tmp_path):
    sets = tmp_path / "VOC2012" / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("b\na\n")
    (sets / "val.txt").write_text("v\n")
    (sets / "test.txt").write_text("t\n")
    sbd = tmp_path / "sbd"
    sbd.mkdir()
    (sbd / "train.txt").write_text("s1\nv\n")          # SBD holds a VOC val id: it must leave train_aug
    (sbd / "val.txt").write_text("s2\n")
    out = tmp_path / "list"
    counts = make_lists("voc12", str(tmp_path / "VOC2012"), str(out), sbd=str(sbd), say=lambda t: None)
    assert counts["train_aug"] == 4 and counts["trainval_aug"] == 5
    assert _lines(out / "train_aug.txt")[0] == "/JPEGImages/a.jpg /SegmentationClassAug/a.png"
    assert [ln.split()[0] for ln in _lines(out / "train_aug.txt")] == \
        [f"/JPEGImages/{i}.jpg" for i in ("a", "b", "s1", "s2")]
    assert _lines(out / "test.txt") == ["/JPEGImages/t.jpg"]
    assert _lines(out / "val_id.txt") == ["v"] and _lines(out / "test_id.txt") == ["t"]
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_cityscapes_lists(tmp_path):
    for split in ("train", "val", "test"):
        _touch(str(tmp_path / "leftImg8bit" / split / "ulm" / f"ulm_000000_00001{split[0]}_leftImg8bit.png"))
    counts = make_lists("cityscapes", str(tmp_path), str(tmp_path / "list"), say=lambda t: None)
    assert counts == {"train": 1, "val": 1, "test": 1, "trainval": 2}
    assert _lines(tmp_path / "list" / "val.txt") == [
        "/leftImg8bit/val/ulm/ulm_000000_00001v_leftImg8bit.png /gtFine/val/ulm/ulm_000000_00001v_gtFine_labelIds.png"]
    assert _lines(tmp_path / "list" / "test.txt") == ["/leftImg8bit/test/ulm/ulm_000000_00001t_leftImg8bit.png"]


def test_ade20k_lists_and_a_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no .*images.training"):
        make_lists("ade20k", str(tmp_path), str(tmp_path / "list"))
    for split, name in (("training", "ADE_train_1"), ("validation", "ADE_val_1")):
        _touch(str(tmp_path / "images" / split / f"{name}.jpg"))
    make_lists("ade20k", str(tmp_path), str(tmp_path / "list"), say=lambda t: None)
    assert _lines(tmp_path / "list" / "trainval.txt") == [
        "/images/training/ADE_train_1.jpg /annotations/training/ADE_train_1.png",
        "/images/validation/ADE_val_1.jpg /annotations/validation/ADE_val_1.png"]


@pytest.mark.parametrize("dataset", ["voc12", "cityscapes", "ade20k"])
def test_the_old_entry_points_write_next_to_themselves_and_fail_in_one_line(tmp_path, dataset):
    script = os.path.join(ROOT, "experiments", dataset, "list", "make_lists.py")
    r = subprocess.run([sys.executable, script, "--data-root", str(tmp_path / "missing")],
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("make_lists.py: error: ") and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "images" / "training").mkdir(parents=True)
    (tmp_path / "images" / "validation").mkdir(parents=True)
    if dataset == "ade20k":
        r = subprocess.run([sys.executable, script, "--data-root", str(tmp_path), "--out", str(tmp_path / "l")],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "train.txt: 0 images" in r.stdout
        assert (tmp_path / "l" / "trainval.txt").is_file()


def test_a_dataset_without_a_synthetic_set_needs_data_root(tmp_path):
    env = dict(os.environ, EXP=str(tmp_path), DATA_ROOT="", PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(ROOT, "experiments", "cityscapes", "run_experiment.sh")],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == ("run_experiment: error: DATA_ROOT is not set; set it to the Cityscapes "
                                "folder (leftImg8bit/, gtFine/)")
    assert not any(tmp_path.iterdir())

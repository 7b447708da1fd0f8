"""experiments/*/run_experiment.sh end to end on shrunk settings: the synthetic default,
resume and skip behaviour, a failing step, and the Cityscapes / ADE20K trees on tiny
fixtures in their datasets' layouts."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

VOC = os.path.join(ROOT, "experiments", "voc12", "run_experiment.sh")
NET = "deeplab_largefov_tiny"
# 16 images of 40..56 pixels, 8 iterations: the whole tree in a few seconds of compute.
SHRUNK = {"NUM_IMAGES": "16", "IMAGE_MIN": "40", "IMAGE_MAX": "56", "MAX_ITER": "8", "TEST_CROP": "57",
          "QUIET": "1", "CRF_JOBS": "1", "DATA_ROOT": ""}


def run(script, exp, **env):
    e = dict(os.environ, EXP=str(exp), PYTHON=sys.executable, **SHRUNK)
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", script], env=e, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    exp = tmp_path_factory.mktemp("voc12")
    r = run(VOC, exp)
    assert r.returncode == 0, r.stdout + r.stderr
    return exp, r


def test_default_run_writes_every_folder_and_the_table(voc_run):
    exp, r = voc_run
    feats = exp / "features" / NET / "val" / "fc8"
    ids = [ln.split()[0].rsplit("/", 1)[1][:-4] for ln in
           open(next((exp / "cache").glob("synthetic_voc12_*")) / "list" / "val.txt")]
    assert ids and all((feats / f"{i}_blob_0.mat").is_file() for i in ids)
    crf = feats / "post_densecrf_W4_XStd121_RStd5_PosW3_PosXStd3"
    assert crf.is_dir() or any(p.name.startswith("post_densecrf_") for p in feats.iterdir())
    crf = next(p for p in feats.iterdir() if p.name.startswith("post_densecrf_"))
    assert all((crf / f"{i}.png").is_file() for i in ids)
    assert (exp / "model" / NET / "train_iter_8.pt").is_file()
    for step in ("train", "test", "crf", "eval_fc8", "eval_crf"):
        assert (exp / "log" / NET / f"{step}.log").is_file(), step
    assert (exp / "log" / NET / "train" / "train.log").is_file()
    res = exp / "res" / NET / "val"
    before, after = (json.load(open(res / f"{t}.json")) for t in ("fc8", "crf"))
    assert before["images"] == len(ids)
    assert before["miou"] > 1 / 21 and after["miou"] > 1 / 21
    assert (res / "summary.txt").read_text().strip() in r.stdout
    assert "before CRF (fc8)" in r.stdout and "after CRF" in r.stdout and "CRF gain" in r.stdout
    with Image.open(res / "before_after_crf.png") as im:
        assert im.width > 4 * 40 and im.height >= 40


def test_rerun_skips_complete_steps_and_redoes_broken_outputs(voc_run):
    exp, first = voc_run
    feats = exp / "features" / NET / "val" / "fc8"
    mats = sorted(feats.glob("*_blob_0.mat"))
    mats[0].unlink()                                           # a missing feature file
    data = mats[1].read_bytes()
    mats[1].write_bytes(data[: len(data) // 2])                 # a truncated one
    crf = next(p for p in feats.iterdir() if p.name.startswith("post_densecrf_"))
    pngs = sorted(crf.glob("*.png"))
    pngs[-1].unlink()                                          # a missing CRF result
    r = run(VOC, exp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[train] complete" in r.stdout
    assert f"testing the other 2" in r.stdout
    assert all(m.is_file() and m.stat().st_size > len(data) // 2 for m in mats[:2])
    assert pngs[-1].is_file()
    # the same numbers as the first run: the redone files are the same
    table = lambda out: out[out.index(f"{NET} on val"):].split("\n\n")[0]   # noqa: E731
    assert table(r.stdout) == table(first.stdout)
    r = run(VOC, exp)                                          # everything complete now
    assert r.returncode == 0 and "[test] complete" in r.stdout and "[crf] complete" in r.stdout
    assert "[eval_fc8] complete" in r.stdout and "[eval_crf] complete" in r.stdout


def test_training_resumes_from_the_snapshot_with_the_largest_iteration(tmp_path):
    r = run(VOC, tmp_path, MAX_ITER=4, RUN_TEST=0, RUN_CRF=0, RUN_EVAL=0)
    assert r.returncode == 0, r.stdout + r.stderr
    model = tmp_path / "model" / NET
    assert (model / "train_iter_4.pt").is_file() and not (tmp_path / "features").exists()
    shutil.copy(model / "train_iter_4.pt", model / "train_iter_2.pt")   # newer file, smaller number
    r = run(VOC, tmp_path, MAX_ITER=6, RUN_TEST=0, RUN_CRF=0, RUN_EVAL=0)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming from" in r.stdout and "train_iter_4.pt (iteration 4 of 6)" in r.stdout
    assert (model / "train_iter_6.pt").is_file()


def test_a_failing_step_names_itself_and_its_log(tmp_path):
    r = run(VOC, tmp_path, DEV_ID="99")
    assert r.returncode != 0
    log = tmp_path / "log" / NET / "train.log"
    assert f"step 'train' failed; log: {log}" in r.stderr
    assert log.is_file() and "--gpu 99" in log.read_text()
    assert (r.stdout + r.stderr).count("deeplab-train: error:") == 1      # QUIET: shown by the driver


def test_a_step_error_prints_once_when_the_console_shows_the_step(tmp_path):
    r = run(VOC, tmp_path, DEV_ID="99", QUIET=0)
    assert r.returncode == 1
    assert (r.stdout + r.stderr).count("deeplab-train: error:") == 1
    assert "step 'train' failed; log:" in r.stderr


@pytest.mark.parametrize("var", ["RUN_TRAIN", "RUN_CRF"])
def test_a_switch_that_is_neither_on_nor_off_is_an_error(tmp_path, var):
    r = run(VOC, tmp_path, **{var: "nope"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"run_experiment: error: {var}='nope' is not a switch; set it to 1 or 0"
    assert not (tmp_path / "cache").exists()


def _png(path, array, mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


def _scene(rng, h, w):
    """An image with two flat regions and its class map (0 / 1)."""
    lab = np.zeros((h, w), np.uint8)
    lab[:, w // 2:] = 1
    img = np.where(lab[..., None] == 1, [200, 40, 40], [40, 60, 200]) + rng.normal(0, 5, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), lab


def test_cityscapes_tree_on_a_tiny_fixture(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "cityscapes"
    for split, n in (("train", 6), ("val", 2)):
        for k in range(n):
            img, lab = _scene(rng, 32, 64)
            name = f"aachen_{k:06d}_000019"
            _png(str(data / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png"), img, "RGB")
            _png(str(data / "gtFine" / split / "aachen" / f"{name}_gtFine_labelIds.png"),
                 np.where(lab == 1, 26, 7))                     # labelIds car / road -> trainIds 13 / 0
    exp = tmp_path / "exp"
    r = run(os.path.join(ROOT, "experiments", "cityscapes", "run_experiment.sh"), exp, DATA_ROOT=data,
            DEV_ID="cpu", MAX_ITER=4, TEST_CROP=65)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (exp / "list" / "train.txt").read_text().count("\n") == 6
    res = json.load(open(exp / "res" / NET / "val" / "crf.json"))
    assert res["num_classes"] == 19 and res["images"] == 2
    assert "after CRF" in r.stdout


def test_ade20k_tree_on_a_tiny_fixture(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "ADEChallengeData2016"
    for split, n in (("training", 6), ("validation", 2)):
        for k in range(n):
            img, lab = _scene(rng, 40, 48)
            name = f"ADE_{split[:5]}_{k:08d}"
            _png(str(data / "images" / split / f"{name}.jpg"), img, "RGB")
            _png(str(data / "annotations" / split / f"{name}.png"), np.where(lab == 1, 3, 1))
    exp = tmp_path / "exp"
    r = run(os.path.join(ROOT, "experiments", "ade20k", "run_experiment.sh"), exp, DATA_ROOT=data,
            DEV_ID="cpu", MAX_ITER=4)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.load(open(exp / "res" / NET / "val" / "fc8.json"))
    assert res["num_classes"] == 150 and res["images"] == 2


@pytest.mark.slow
def test_full_default_run(tmp_path):
    """The README's main job as shipped: the default synthetic set, the default length."""
    e = {k: "" for k in SHRUNK if k != "DATA_ROOT"}
    r = run(VOC, tmp_path, **e)
    assert r.returncode == 0, r.stdout + r.stderr
    res = tmp_path / "res" / NET / "val"
    before, after = (json.load(open(res / f"{t}.json")) for t in ("fc8", "crf"))
    assert before["miou"] > 3 / 21
    assert after["miou"] > before["miou"] + 0.01          # the CRF visibly helps on this data


def test_voc_layout_with_lists_made_and_stage_two(tmp_path):
    """DATA_ROOT in VOC's layout: list/make_lists.py writes the lists (train_aug = VOC
    train without SBD), stage 2 fine-tunes from stage 1's final snapshot and tests the
    label-less test list into features2/ (nothing to evaluate there)."""
    rng = np.random.default_rng(2)
    voc = tmp_path / "VOC2012"
    sets = {"train": [f"2007_{k:06d}" for k in range(6)], "val": ["2008_000001", "2008_000002"],
            "test": ["2009_000001"]}
    for split, ids in sets.items():
        for i in ids:
            img, lab = _scene(rng, 36, 44)
            _png(str(voc / "JPEGImages" / f"{i}.jpg"), img, "RGB")
            if split != "test":
                _png(str(voc / "SegmentationClassAug" / f"{i}.png"), np.where(lab == 1, 15, 0))
        (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    exp = tmp_path / "exp"
    r = run(VOC, exp, DATA_ROOT=voc, NET_ID=NET, DEV_ID="cpu", MAX_ITER=4, MAX_ITER2=2, RUN_TRAIN2=1, RUN_TEST2=1)
    assert r.returncode == 0, r.stdout + r.stderr
    lists = exp / "list"
    assert (lists / "train_aug.txt").read_text().count("\n") == 6
    assert (lists / "trainval_aug.txt").read_text().count("\n") == 8
    assert "/JPEGImages/2008_000001.jpg /SegmentationClassAug/2008_000001.png" in (lists / "val.txt").read_text()
    model = exp / "model" / NET
    assert (model / "train_iter_4.pt").is_file() and (model / "train2_iter_2.pt").is_file()
    assert "--weights " + str(model / "train_iter_4.pt") in r.stdout
    assert (exp / "features2" / NET / "test" / "fc8" / "2009_000001_blob_0.mat").is_file()
    assert "has no labels: nothing to evaluate" in r.stdout
    assert json.load(open(exp / "res" / NET / "val" / "crf.json"))["images"] == 2


def test_a_mistyped_net_id_names_the_configs_there(tmp_path):
    r = run(VOC, tmp_path, NET_ID="deeplab_largefov_tinny")
    assert r.returncode == 2
    assert f"did you mean '{NET}'? configs here: " in r.stderr and "deeplab_largefov," in r.stderr


def test_a_bad_kernel_setting_fails_before_the_first_step(tmp_path):
    r = run(VOC, tmp_path, DEEPLAB_CRF_STORAGE="fp16")
    assert r.returncode == 2
    assert "DEEPLAB_CRF_STORAGE must be one of half, float32, got 'fp16'" in r.stderr
    assert not any((tmp_path / d).exists() for d in ("data", "model", "features", "res"))


@pytest.mark.parametrize("extra,suffix", [("", ""), ("normalization: symmetric\n", "_symmetric"),
                                          ("normalization: after\n", "")])
def test_crf_step_passes_the_normalization_of_crf_yaml(tmp_path, extra, suffix):
    # The CRF step names its folder after the resolved parameters and hands the
    # normalisation to deeplab-crf; DeepLab's own normalisation is the default.
    from types import SimpleNamespace

    from deeplab_compile.experiment.steps import step_crf
    cfg, feats = tmp_path / "config", tmp_path / "feats"
    cfg.mkdir()
    feats.mkdir()
    (cfg / "crf.yaml").write_text("preset: deeplab_largefov\nbi_w: 5\n" + extra)
    (feats / "a_blob_0.mat").write_bytes(b"x")
    lst = tmp_path / "val.txt"
    lst.write_text("JPEGImages/a.jpg SegmentationClass/a.png\n")
    s = SimpleNamespace(config_dir=str(cfg), data_root=str(tmp_path), cache_dir=str(tmp_path / "cache"),
                        palette="voc", crf_jobs=1)
    cmds = []
    r = SimpleNamespace(run=lambda name, cmd, work=None: cmds.append(cmd))
    out = step_crf(s, r, 1, str(lst), str(feats))
    assert os.path.basename(out) == "post_densecrf_W5_XStd121_RStd5_PosW3_PosXStd3" + suffix
    from deeplab_compile.cli.crf import build_parser
    args = build_parser().parse_args(cmds[0][1:])
    assert args.out == out and args.bi_w == 5
    assert (args.normalization or "after") == (suffix.lstrip("_") or "after")


def test_a_data_root_without_the_folders_the_steps_read_stops_before_the_first_step(tmp_path):
    voc = tmp_path / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split in ("train", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("2007_000001\n")
    exp = tmp_path / "exp"
    r = run(VOC, exp, DATA_ROOT=voc, DEV_ID="cpu")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and f"DATA_ROOT {voc} lacks SegmentationClassAug/ (read by the lists to make)" in err[0]
    assert "[train]" not in r.stdout and not (exp / "model").exists()
    # with the lists already made, every folder they name is checked, all in one line
    (exp / "list").mkdir(parents=True)
    for name in ("train_aug", "val"):
        (exp / "list" / f"{name}.txt").write_text("/JPEGImages/a.jpg /SegmentationClassAug/a.png\n"
                                                 "/JPEGImages2/b.jpg /SegmentationClassAug/b.png\n")
    r = run(VOC, exp, DATA_ROOT=voc, DEV_ID="cpu")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1
    assert ("lacks JPEGImages2/ (read by train_aug.txt, val.txt), SegmentationClassAug/ (read by train_aug.txt, "
            "val.txt)") in err[0]


def test_outputs_record_what_they_were_made_from_and_other_data_is_never_complete(tmp_path):
    """Two synthetic datasets in one experiment folder: the second DATA_ROOT is never
    answered with the first one's model, features or results."""
    exp = tmp_path / "exp"
    r = run(VOC, exp)
    assert r.returncode == 0, r.stdout + r.stderr
    feats = exp / "features" / NET / "val" / "fc8"
    first = json.load(open(feats / "made_from.json"))
    assert first["data_root"].endswith("synthetic_voc12_n16_40-56_s0") and len(first["model"]) == 64
    assert json.load(open(exp / "model" / NET / "train.made_from.json"))["data_root"] == first["data_root"]
    # another dataset (larger images: another DATA_ROOT): the model is refused in one line
    r = run(VOC, exp, IMAGE_MAX="60")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "train_iter_8.pt was made from other inputs than this run's" in err[0]
    assert "data_root was " + first["data_root"] in err[0] and "n16_40-60_s0" in err[0]
    assert "complete" not in r.stdout
    # a new model folder: everything downstream is redone, nothing reported complete
    r = run(VOC, exp, IMAGE_MAX="60", MODEL_DIR=tmp_path / "model2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "complete" not in r.stdout and "[test] the features in" in r.stdout
    second = json.load(open(feats / "made_from.json"))
    assert second["data_root"].endswith("n16_40-60_s0") and second["model"] != first["model"]
    for tag in ("fc8", "crf"):
        rec = json.load(open(exp / "res" / NET / "val" / f"{tag}.made_from.json"))
        assert rec["data_root"] == second["data_root"]
    # the same inputs again: every step is complete
    r = run(VOC, exp, IMAGE_MAX="60", MODEL_DIR=tmp_path / "model2")
    assert r.returncode == 0 and r.stdout.count("complete") == 5, r.stdout
    # a changed test list (same data, same model) redoes the test and what follows it
    val = next((exp / "cache").glob("synthetic_voc12_n16_40-60_s0")) / "list" / "val.txt"
    lines = val.read_text().splitlines(True)
    val.write_text("".join(lines[:-1]))
    r = run(VOC, exp, IMAGE_MAX="60", MODEL_DIR=tmp_path / "model2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[train] complete" in r.stdout and "[test] complete" not in r.stdout
    assert json.load(open(exp / "res" / NET / "val" / "fc8.json"))["images"] == len(lines) - 1


def test_lists_made_from_another_data_root_are_made_again(tmp_path):
    def voc(root, ids):
        (root / "JPEGImages").mkdir(parents=True)
        (root / "SegmentationClassAug").mkdir()
        (root / "ImageSets" / "Segmentation").mkdir(parents=True)
        for split, part in (("train", ids[:-1]), ("val", ids[-1:])):
            (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(i + "\n" for i in part))
        return root
    a = voc(tmp_path / "A", ["a1", "a2", "a3"])
    b = voc(tmp_path / "B", ["b1", "b2"])
    exp = tmp_path / "exp"
    r = run(VOC, exp, DATA_ROOT=a, DEV_ID="cpu", RUN_TRAIN=0)      # stops at training: no model
    assert r.returncode == 1 and "/JPEGImages/a1.jpg" in (exp / "list" / "train_aug.txt").read_text()
    r = run(VOC, exp, DATA_ROOT=b, DEV_ID="cpu", RUN_TRAIN=0)
    assert r.returncode == 1 and f"data_root was {a}, now {b}" in r.stdout
    assert (exp / "list" / "train_aug.txt").read_text() == "/JPEGImages/b1.jpg /SegmentationClassAug/b1.png\n"
    # lists written by hand (no record) are the user's: kept
    (exp / "list" / "made_from.json").unlink()
    (exp / "list" / "train_aug.txt").write_text("/JPEGImages/mine.jpg /SegmentationClassAug/mine.png\n")
    run(VOC, exp, DATA_ROOT=a, DEV_ID="cpu", RUN_TRAIN=0)
    assert "mine" in (exp / "list" / "train_aug.txt").read_text()


V3PLUS = "deeplab_v3plus_mobilenetv2_tiny"


@pytest.mark.slow
def test_tiny_v3plus_default_run(tmp_path):
    """NET_ID=deeplab_v3plus_mobilenetv2_tiny as the README runs it: BatchNorm trained, the
    decoder, poly lr and hard-pixel mining at OS 16, tested at OS 8 with scales and flip,
    then the CRF, whose before/after figures the table reports."""
    import torch

    from deeplab_compile.compiler import build_net
    from deeplab_compile.experiment.settings import declared_vars, eval_options
    from deeplab_compile.weights import read_state_dict
    e = {k: "" for k in SHRUNK if k != "DATA_ROOT"}
    r = run(VOC, tmp_path, NET_ID=V3PLUS, **e)
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("train", "test", "crf", "eval_fc8", "eval_crf"):
        assert (tmp_path / "log" / V3PLUS / f"{step}.log").is_file(), step
    res = tmp_path / "res" / V3PLUS / "val"
    before, after = (json.load(open(res / f"{t}.json")) for t in ("fc8", "crf"))
    # background everywhere scores ~0.03 (one class's IoU over the 21); the README's run
    # gives 0.51 before the CRF
    assert before["miou"] > 0.40
    assert after["miou"] > before["miou"]                 # the CRF helps these scores
    table = (res / "summary.txt").read_text()
    assert table.strip() in r.stdout
    for row, got in (("before CRF (fc8)", before), ("after CRF", after)):
        assert f"{row}" in table and f"{100 * got['miou']:.2f}%" in table
    assert f"{100 * (after['miou'] - before['miou']):+.2f}" in table
    # trained at output stride 16: the net and values the snapshot records
    model = tmp_path / "model" / V3PLUS
    snap = next(model.glob("train_iter_*.pt"))
    state, meta = read_state_dict(snap)
    ir = build_net(meta["net"], phase="train", vars={k: v for k, v in meta["vars"].items()
                                                      if k in declared_vars(meta["net"])})
    assert [b.stride for b in ir.blobs.values() if b.name == "ir17_project"][-1] == 16
    obj = torch.load(snap, weights_only=True)
    assert obj["solver"]["top_k_percent_pixels"] < 1 and obj["solver"]["lr_policy"] == "poly"
    running = [v for k, v in state.items() if k.endswith("running_mean")]
    assert running and all(v.abs().sum() > 0 for v in running)      # BatchNorm statistics were updated
    # tested at output stride 8, with scales and flip: the net and values the features were made from
    feats = tmp_path / "features" / V3PLUS / "val" / "fc8"
    made = json.load(open(feats / "made_from.json"))
    test = os.path.join(ROOT, "experiments", "voc12", "config", V3PLUS, "test.yaml")
    log = (tmp_path / "log" / V3PLUS / "test.log").read_text()
    assert "OUTPUT_STRIDE" not in made["defines"] and "-D OUTPUT_STRIDE" not in log
    values = {"NUM_LABELS": 21, "DATA_ROOT": "/d", "TEST_LIST": "/l.txt", "FEATURE_DIR": str(feats)}
    ir = build_net(test, phase="test", vars=values)
    assert [b.stride for b in ir.blobs.values() if b.name == "ir17_project"][-1] == 8
    opts = eval_options(test, {})
    assert "--scales " + ",".join(f"{v:g}" for v in opts["scales"]) in log and "--flip" in log

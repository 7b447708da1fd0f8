"""experiments/voc12/run_experiment.sh on a DeepLab user's own config folder: DeepLab's
train/test/solver/solver2 prototxts (tests/deeplab_exper.py, both layer syntaxes) in
config/<NET_ID>/, an init.caffemodel written by our caffemodel writer in model/<NET_ID>/,
run on the synthetic set with 2 iterations."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from deeplab_exper import write_config

from deeplab_compile.caffe.caffemodel import write_caffemodel
from deeplab_compile.compiler import compile_net
from deeplab_compile.experiment import caffe_config

VOC = os.path.join(ROOT, "experiments", "voc12", "run_experiment.sh")
SHRUNK = {"NUM_IMAGES": "16", "IMAGE_MIN": "40", "IMAGE_MAX": "56", "QUIET": "1", "CRF_JOBS": "1", "DATA_ROOT": ""}
NET = "my_deeplab"


def run(exp, **env):
    e = dict(os.environ, EXP=str(exp), NET_ID=NET, PYTHON=sys.executable, **SHRUNK)
    for k in ("MAX_ITER", "MAX_ITER2", "TEST_CROP", "SEED"):     # DeepLab's files take no such -D
        e.pop(k, None)
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", VOC], env=e, capture_output=True, text=True, timeout=600)


def init_caffemodel(config, model_dir) -> dict:
    """model/<NET_ID>/init.caffemodel for the config's test net (fc8_${EXP} named as the
    experiment names it); returns the state written."""
    net = compile_net(str(config / "test.prototxt"), phase="test",
                         vars={"EXP": "voc12", "NUM_LABELS": 21, "NET_ID": NET, "DATA_ROOT": "/d",
                               "TEST_SET": "val", "FEATURE_DIR": "/f"})
    torch.manual_seed(3)
    state = {k: torch.randn_like(v) for k, v in net.state_dict().items()}
    os.makedirs(model_dir, exist_ok=True)
    with open(model_dir / "init.caffemodel", "wb") as f:
        write_caffemodel(net, state, f)
    return state


def val_ids(exp):
    lst = next((exp / "cache").glob("synthetic_voc12_*")) / "list" / "val.txt"
    return [ln.split()[0].rsplit("/", 1)[1][:-4] for ln in open(lst)]


@pytest.fixture(scope="module")
def new_syntax_run(tmp_path_factory):
    exp = tmp_path_factory.mktemp("exper") / "voc12"          # DeepLab's exper/voc12
    config = exp / "config" / NET
    files = write_config(config, "new", max_iter=2, base_lr=0.0)   # lr 0: the snapshot is the init
    state = init_caffemodel(config, exp / "model" / NET)
    r = run(exp)
    assert r.returncode == 0, r.stdout + r.stderr
    return exp, files, state, r


def test_deeplab_config_folder_trains_tests_crfs_and_evaluates(new_syntax_run):
    exp, files, state, r = new_syntax_run
    ids = val_ids(exp)
    feats = exp / "features" / NET / "val" / "fc8"
    assert ids and all((feats / f"{i}_blob_0.mat").is_file() for i in ids)
    crf = next(p for p in feats.iterdir() if p.name.startswith("post_densecrf_"))
    assert all((crf / f"{i}.png").is_file() for i in ids)
    for tag in ("fc8", "crf"):
        assert (exp / "res" / NET / "val" / f"{tag}.json").is_file()
    assert f"{NET} on val ({len(ids)} images, 21 classes)" in r.stdout and "after CRF" in r.stdout
    # trained from model/<NET_ID>/init.caffemodel: with base_lr 0 the snapshot is that file
    snap = torch.load(exp / "model" / NET / "train_iter_2.pt", weights_only=True)
    assert set(snap["model"]) == set(state)
    assert all(torch.equal(snap["model"][k], v) for k, v in state.items())
    assert "init.caffemodel" in (exp / "log" / NET / "train.log").read_text()


def test_the_copies_are_filled_in_as_run_pascal_sh_and_the_originals_untouched(new_syntax_run):
    exp, files, _, _ = new_syntax_run
    config = exp / "config" / NET
    for name, text in files.items():
        assert (config / name).read_text() == text
    solver = (config / "solver_train_aug.prototxt").read_text()
    assert f'net: "voc12/config/{NET}/train_train_aug.prototxt"' in solver
    assert f'snapshot_prefix: "voc12/model/{NET}/train"' in solver
    train = (config / "train_train_aug.prototxt").read_text()
    assert 'name: "fc8_voc12"' in train and "num_output: 21" in train and f'name: "{NET}"' in train
    assert 'source: "voc12/list/train_aug.txt"' in train and "${" not in train
    test = (config / "test_val.prototxt").read_text()
    assert f'prefix: "{exp}/features/{NET}/val/fc8/"' in test and 'source: "voc12/list/val_id.txt"' in test


def test_rerun_skips_and_a_missing_feature_is_redone_under_its_own_id(new_syntax_run):
    exp, _, _, _ = new_syntax_run
    feats = exp / "features" / NET / "val" / "fc8"
    mats = sorted(feats.glob("*_blob_0.mat"))
    mats[-1].unlink()
    r = run(exp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[train] complete" in r.stdout and "testing the other 1" in r.stdout
    assert mats[-1].is_file() and len(sorted(feats.glob("*_blob_0.mat"))) == len(mats)


def test_v1_syntax_config_runs_both_stages(tmp_path):
    exp = tmp_path / "exper" / "voc12"
    write_config(exp / "config" / NET, "v1", max_iter=1)
    r = run(exp, RUN_TRAIN2=1, RUN_TEST2=1, RUN_CRF=0)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "training from the netdef's fillers" in r.stdout     # no init.caffemodel
    model = exp / "model" / NET
    assert (model / "train_iter_1.pt").is_file() and (model / "train2_iter_1.pt").is_file()
    assert (exp / "config" / NET / "solver2_trainval_aug.prototxt").is_file()
    assert (exp / "config" / NET / "train_trainval_aug.prototxt").is_file()
    ids = val_ids(exp)
    for folder in ("features", "features2"):
        assert all((exp / folder / NET / "val" / "fc8" / f"{i}_blob_0.mat").is_file() for i in ids), folder
    assert (exp / "res" / NET / "val" / "fc8.json").is_file()
    log = (exp / "log" / NET / "train2.log").read_text()
    assert f"--weights {model / 'train_iter_1.pt'}" in log


def test_a_matwrite_prefix_elsewhere_fails_the_test_step_with_the_fix(tmp_path):
    exp = tmp_path / "exper" / "voc12"
    config = exp / "config" / NET
    files = write_config(config, "new", max_iter=1)
    (config / "test.prototxt").write_text(files["test.prototxt"].replace("${FEATURE_DIR}/${TEST_SET}/fc8/",
                                                                         "${EXP}/out/"))
    r = run(exp, RUN_CRF=0, RUN_EVAL=0)
    assert r.returncode == 1
    assert "step 'test' failed" in r.stderr
    assert "no MatWrite layer of the test net writes to" in r.stderr and "${FEATURE_DIR}/${TEST_SET}/fc8/" in r.stderr


def test_sed_fills_every_name_of_the_set_and_leaves_the_others():
    text = '# ${EXP} in a comment\nsource: "${EXP}/list/${TEST_SET}.txt" # ${MODEL}\n'
    assert caffe_config.sed(text, {"EXP": "voc12", "TEST_SET": "val", "UNUSED": 1}) == \
        '# voc12 in a comment\nsource: "voc12/list/val.txt" # ${MODEL}\n'


def test_a_folder_is_deeplabs_when_it_has_prototxts_and_no_yaml_config(tmp_path):
    assert not caffe_config.is_caffe(str(tmp_path))
    (tmp_path / "test.prototxt").write_text("")
    assert caffe_config.is_caffe(str(tmp_path))
    (tmp_path / "solver.yaml").write_text("")
    assert not caffe_config.is_caffe(str(tmp_path))
    shipped = os.path.join(ROOT, "experiments", "voc12", "config")
    assert not any(caffe_config.is_caffe(os.path.join(shipped, d)) for d in os.listdir(shipped))


def test_deeplab_train_reads_deeplabs_solver_prototxt_from_exper(tmp_path):
    """What run_pascal.sh ran by hand, from exper/: a solver.prototxt with train_net,
    GPU mode and repeated stepvalue; DeepLab's whole variable set with -D, the ones the
    files do not use ignored as sed would, a near miss refused."""
    from deeplab_compile.data.synthetic import generate
    data = tmp_path / "data"
    generate(str(data), num_images=8, min_size=40, max_size=48, seed=0)
    exper = tmp_path / "exper"
    config = exper / "voc12" / "config" / NET
    write_config(config, "new")
    (exper / "voc12" / "list").mkdir()
    (exper / "voc12" / "list" / "train_aug.txt").write_text((data / "list" / "train_aug.txt").read_text())
    (config / "solver.prototxt").write_text(
        'train_net: "${EXP}/config/${NET_ID}/train.prototxt"\nlr_policy: "multistep"\ngamma: 0.1\n'
        'stepvalue: 1\nstepvalue: 2\nbase_lr: 0.001\nmax_iter: 2\nmomentum: 0.9\nsolver_mode: GPU\n'
        'snapshot_prefix: "${EXP}/model/${NET_ID}/train"\n')
    defines = {"EXP": "voc12", "NET_ID": NET, "TRAIN_SET": "train_aug", "NUM_LABELS": 21,
               "DATA_ROOT": str(data), "TEST_SET": "val", "FEATURE_DIR": "voc12/features"}

    def train(**extra):
        args = [a for k, v in {**defines, **extra}.items() for a in ("-D", f"{k}={v}")]
        return subprocess.run([sys.executable, "-m", "deeplab_compile.cli.train", "--solver",
                               f"voc12/config/{NET}/solver.prototxt", "--gpu", "cpu", "--no-progress", *args],
                              cwd=exper, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    r = train()
    assert r.returncode == 0, r.stdout + r.stderr
    assert (exper / "voc12" / "model" / NET / "train_iter_2.pt").is_file()
    assert "uses no ${TEST_SET}, ${FEATURE_DIR}; -D ignored for it (as sed would)" in r.stderr
    r = train(NUM_LABEL=21)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "NUM_LABEL" in r.stderr and "did you mean 'NUM_LABELS'" in r.stderr


def test_with_a_data_root_the_lists_are_read_from_exp_as_deeplab_wrote_them(tmp_path):
    """DATA_ROOT set: the data layer's ${EXP}/list/${TRAIN_SET}.txt is read from the folder
    above EXP (the run's working directory is elsewhere)."""
    from deeplab_compile.data.synthetic import generate
    data = tmp_path / "VOC2012"
    generate(str(data), num_images=10, min_size=40, max_size=48, seed=1)
    exp = tmp_path / "exper" / "voc12"
    write_config(exp / "config" / NET, "v1", max_iter=1)
    (exp / "list").mkdir(parents=True)
    for name in ("train_aug", "val"):
        (exp / "list" / f"{name}.txt").write_text((data / "list" / f"{name}.txt").read_text())
    r = run(exp, DATA_ROOT=data, DEV_ID="cpu", RUN_CRF=0)
    assert r.returncode == 0, r.stdout + r.stderr
    train_log = (exp / "log" / NET / "train.log").read_text()
    assert f"data {exp / 'list' / 'train_aug.txt'} (" in train_log
    assert f"--list {exp / 'list' / 'val.txt'} --root {data}" in (exp / "log" / NET / "test.log").read_text()
    assert (exp / "res" / NET / "val" / "fc8.json").is_file()


@pytest.mark.parametrize("text, expect", [
    ('net: "t.prototxt"\nbse_lr: 0.001\nmax_iter: 2\n', ":2:1: SolverParameter has no field 'bse_lr'; did you mean 'base_lr'?"),
    ('net: "${EXP}/t.prototxt"\nbase_lr: 0.001\nmax_iter: 2\n', ":1:1: undefined variable 'EXP' in field 'net'"),
])
def test_a_bad_solver_prototxt_is_one_located_line(tmp_path, text, expect):
    (tmp_path / "solver.prototxt").write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "EXP"}
    r = subprocess.run([sys.executable, "-m", "deeplab_compile.cli.train", "--solver", "solver.prototxt"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(env, PYTHONPATH=ROOT))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "solver.prototxt" + expect in r.stderr

"""A loss that diverges in a run started from the netdef's fillers says that initial
weights are missing (a full-size net such as LargeFOV NaNs within a few iterations from
fillers); a run started from weights gets the usual advice."""
import textwrap

import pytest

from deeplab_compile.data.synthetic import generate
from deeplab_compile.training.loop import TrainingDiverged, train
from deeplab_compile.training.solver import load_solver

from conftest import NETDEF


def _solver(tmp_path, max_iter):
    syn = generate(str(tmp_path / "voc"), num_images=4, min_size=40, max_size=48, seed=1)
    p = tmp_path / f"solver_{max_iter}.yaml"
    p.write_text(textwrap.dedent(f"""\
        net: {NETDEF}/deeplab_largefov_tiny.yaml
        vars: {{crop: 33, width: 4}}
        data: {{source: {syn}/list/train.txt, root_folder: {syn}, batch_size: 2, preprocess: tf, num_workers: 0}}
        base_lr: 1.0e+30
        lr_policy: fixed
        max_iter: {max_iter}
        clip_gradients: -1
        warmup_iter: 1
        warmup_lr: 0.0001
        snapshot_prefix: {tmp_path}/model/run_{max_iter}
        random_seed: 0
        """))
    return load_solver(str(p))


def test_divergence_from_fillers_says_initial_weights_are_missing(tmp_path):
    with pytest.raises(TrainingDiverged) as e:
        train(_solver(tmp_path, 6), progress=False, echo=lambda *_: None)
    assert "without initial weights" in str(e.value) and "deeplab-convert --from" in str(e.value)


def test_divergence_from_weights_keeps_the_usual_advice(tmp_path):
    sane = _solver(tmp_path, 1)
    sane.base_lr = 1e-4
    first = train(sane, progress=False, echo=lambda *_: None)          # a one-iteration snapshot
    with pytest.raises(TrainingDiverged) as e:
        train(_solver(tmp_path, 6), weights=first.snapshot, progress=False, echo=lambda *_: None)
    assert "initial weights" not in str(e.value) and "lower base_lr" in str(e.value)

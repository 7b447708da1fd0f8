"""End to end: the tiny LargeFOV trains on the synthetic set, is tested and evaluated."""
import os
import textwrap

import pytest

from deeplab_compile.data.synthetic import generate
from deeplab_compile.evaluate import evaluate
from deeplab_compile.test import run_test
from deeplab_compile.training.loop import train
from deeplab_compile.training.solver import load_solver

from conftest import NETDEF

TINY = os.path.join(NETDEF, "deeplab_largefov_tiny.yaml")
CHANCE = 1 / 21


def run(tmp_path, *, images, size, crop, iters, batch, width=8, lr=0.01):
    syn = generate(str(tmp_path / "voc"), num_images=images, min_size=size[0], max_size=size[1], seed=0)
    p = tmp_path / "solver.yaml"
    p.write_text(textwrap.dedent(f"""\
        net: {TINY}
        vars: {{crop: {crop}, width: {width}, dropout: 0.0}}
        data: {{source: {syn}/list/train.txt, root_folder: {syn}, batch_size: {batch}, mirror: true,
                shuffle: true, preprocess: tf, num_workers: 0}}
        base_lr: {lr}
        lr_policy: poly
        power: 0.9
        max_iter: {iters}
        momentum: 0.9
        weight_decay: 0.0005
        display: 20
        average_loss: 20
        snapshot_prefix: {tmp_path}/model/tiny
        random_seed: 0
        """))
    r = train(load_solver(str(p)), progress=False, echo=lambda *_: None)
    lst = os.path.join(syn, "list", "val.txt")
    run_test(TINY, r.snapshot, list_path=lst, root=syn, vars={"width": width, "crop": size[1] + 1},
             data={"preprocess": "tf"}, png_dir=str(tmp_path / "pred"), progress=False, num_workers=0)
    ev = evaluate(str(tmp_path / "pred"), os.path.join(syn, "SegmentationClass"), lst, 21)
    losses = r.history["loss"]
    return losses, ev


def test_tiny_largefov_learns_quickly(tmp_path):
    """The fast variant: the loss falls clearly and the net gets most pixels right; in this
    budget it learns the background first (the object classes come in the slow test)."""
    losses, ev = run(tmp_path, images=60, size=(48, 64), crop=49, iters=150, batch=8, lr=0.02)
    first, last = sum(losses[:15]) / 15, sum(losses[-15:]) / 15
    assert last < 0.75 * first, (first, last)
    assert ev.scores["pixel_accuracy"] > 0.6, ev.table()


@pytest.mark.slow
def test_tiny_largefov_reaches_miou_well_above_chance(tmp_path):
    losses, ev = run(tmp_path, images=200, size=(96, 128), crop=97, iters=600, batch=8)
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    assert ev.scores["miou"] > 3 * CHANCE, ev.table()

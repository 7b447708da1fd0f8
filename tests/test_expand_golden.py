"""Golden tests for netdef expansion: tests/data/netdef/golden/<case>.yaml expands to
<case>.expanded.yaml (and, for phase filtering, <case>.<phase>.yaml); expanding or
filtering again changes nothing.

Regenerate the expected files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/test_expand_golden.py`` and review the diff.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from deeplab_compile.netdef.expand import expand, filter_phase
from deeplab_compile.netdef.parse import Map, Seq, dump, load, loads

GOLDEN = Path(__file__).parent / "data" / "netdef" / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# Overrides a case is expanded with (as from -D name=value).
OVERRIDES = {
    "overrides": {"crop": 513, "num_classes": 59, "tag": "c${crop}"},
}
CASES = ["vars", "overrides", "include", "templates", "repeat", "phase"]


def _check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path.name} differs; run with UPDATE_GOLDEN=1 and review"


def _expanded(case: str) -> Map:
    return expand(load(GOLDEN / f"{case}.yaml"), overrides=OVERRIDES.get(case))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


@pytest.mark.parametrize("case", CASES)
def test_golden_expand(case):
    doc = _expanded(case)
    expected = GOLDEN / f"{case}.expanded.yaml"
    _check_golden(expected, dump(doc))
    # the written form reads back to the same document, and is a fixed point of expand
    again = expand(load(expected))
    assert _plain(again) == _plain(doc)
    assert _plain(expand(loads(dump(again), str(expected)))) == _plain(doc)


@pytest.mark.parametrize("case", CASES)
def test_expand_is_idempotent(case):
    doc = _expanded(case)
    assert expand(doc) == doc
    assert expand(expand(doc)) == doc
    assert set(doc) <= {"name", "vars", "inputs", "outputs", "layers"}
    assert list(doc)[:2] == ["name", "vars"] and list(doc)[-1] == "layers"


@pytest.mark.parametrize("case", CASES)
def test_expand_is_pure(case):
    source = load(GOLDEN / f"{case}.yaml")
    before = _plain(source)
    expand(source, overrides=OVERRIDES.get(case))
    assert _plain(source) == before


@pytest.mark.parametrize("phase", ["train", "test"])
def test_golden_filter_phase(phase):
    doc = _expanded("phase")
    kept = filter_phase(doc, phase)
    _check_golden(GOLDEN / f"phase.{phase}.yaml", dump(kept))
    assert filter_phase(kept, phase) == kept
    assert filter_phase(doc, phase.upper()) == kept
    assert all(layer.get("phase", phase) == phase for layer in kept["layers"])
    assert len(doc["layers"]) == 6                     # expand itself filters nothing


def test_layers_keep_positions():
    doc = _expanded("templates")
    src = GOLDEN / "templates.yaml"
    lines = src.read_text().splitlines()
    for layer in doc["layers"]:
        assert isinstance(layer, Map) and layer.loc.file == str(src)
        assert isinstance(layer["bottom"], Seq) and isinstance(layer["top"], Seq)
        name_loc = layer.key_locs["name"]
        assert lines[name_loc.line - 1][name_loc.col - 1:].startswith("name:")
    # conv1 was made by conv_bn (called from conv_bn_relu): positions are conv_bn's body
    conv1 = doc["layers"][0]
    assert conv1["name"] == "conv1" and conv1.loc.line == 9
    assert doc.key_locs["layers"].line == lines.index("layers:") + 1


def test_vars_case_values():
    doc = _expanded("vars")
    v = doc["vars"]
    assert doc["name"] == "vars_v21"
    assert v["out_size"] == 41 and v["floor"] == -4 and v["rem"] == 2 and v["neg"] == -15
    assert v["base_lr"] == 0.001 and v["use_bias"] is False and v["mode"] == "max"
    assert v["price"] == "$5 and ${not_a_var}"
    fc8 = doc["layers"][1]
    assert fc8["param"] == [{"lr_mult": 10}] and fc8["weight_filler"]["shape"] == [8, 64]
    assert fc8["comment"] == "cost $-15, max21" and fc8["dollar"] == "$x and a$b"
    assert doc["inputs"] == {"data": [3, 321, 321], "label": [1, 321, 321]}
    assert doc["outputs"] == ["fc8"]


def test_overrides_case_values():
    doc = _expanded("overrides")
    assert doc["vars"] == {"crop": 513, "half": 256, "num_classes": 59, "tag": "c513"}
    assert doc["inputs"]["data"] == [3, 513, 513]


def test_include_case_values():
    doc = _expanded("include")
    assert doc["vars"] == {"width": 32, "depth": 2, "act_type": "ReLU"}
    names = [layer["name"] for layer in doc["layers"]]
    assert names == ["conv1", "conv1_act", "conv2", "conv2_act"]
    assert [layer.get("num_output") for layer in doc["layers"]] == [32, None, 64, None]
    # the activation comes from lib/sub/base.yaml and keeps its position there
    assert doc["layers"][1].loc.file.endswith(os.path.join("lib", "sub", "base.yaml"))


def test_repeat_case_values():
    doc = _expanded("repeat")
    names = [layer["name"] for layer in doc["layers"]]
    assert names == ["res4a", "res4b0", "res4b1", "res4b1_relu", "res4b2", "res4b2_relu",
                     "res4b3", "res4b3_relu", "branch0", "branch1",
                     "s1_1", "s1_2", "s2_1", "s2_2", "s2_3"]
    layers = {layer["name"]: layer for layer in doc["layers"]}
    assert layers["res4b2"]["bottom"] == ["res4b1"]
    assert layers["branch1"]["dilation"] == 12 and layers["branch1"]["bottom"] == ["res4b3"]
    assert layers["s2_3"]["bottom"] == ["s2_2"]


def test_expand_accepts_plain_dicts():
    doc = {"name": "p", "vars": {"n": 2}, "layers": [{"name": "a", "type": "ReLU", "bottom": "x",
                                                      "k": "${n * 3}"}]}
    out = expand(doc)
    assert out["layers"] == [{"name": "a", "type": "ReLU", "bottom": ["x"], "top": ["a"], "k": 6}]
    assert out["layers"][0].loc is None

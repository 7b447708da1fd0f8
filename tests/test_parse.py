"""parse.load / parse.loads: positions, strict YAML, one-line errors."""
from __future__ import annotations

import math

import pytest

from deeplab_compile.netdef import parse
from deeplab_compile.netdef.errors import Loc, NetDefError, NetDefSyntaxError
from deeplab_compile.netdef.parse import Map, Seq, dump, load, loads, loc_of, parse_scalar


def raises(cls, text, *, filename="net.yaml"):
    """Parse ``text``; the line marked ``#!`` (else line 1) must be the error's line."""
    with pytest.raises(cls) as info:
        loads(text, filename)
    err = info.value
    marked = [i + 1 for i, line in enumerate(text.splitlines()) if line.rstrip().endswith("#!")]
    line = marked[0] if marked else 1
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(f"{filename}:{line}:"), msg
    assert err.hint and msg.endswith(err.hint)
    return err


def test_positions_of_maps_seqs_and_keys():
    doc = loads("name: x\nlayers:\n  - {name: a, type: ReLU}\n  - name: b\n    type: ReLU\n", "n.yaml")
    assert isinstance(doc, Map) and doc.loc == Loc("n.yaml", 1, 1)
    assert doc.key_locs["layers"] == Loc("n.yaml", 2, 1)
    layers = doc["layers"]
    assert isinstance(layers, Seq) and layers.item_locs == [Loc("n.yaml", 3, 5), Loc("n.yaml", 4, 5)]
    assert layers[0].loc == Loc("n.yaml", 3, 5) and layers[0].key_locs["type"] == Loc("n.yaml", 3, 15)
    assert loc_of(layers[1], "type") == Loc("n.yaml", 5, 5)
    assert loc_of(layers, 1) == Loc("n.yaml", 4, 5)
    assert loc_of(layers[1], "missing") == layers[1].loc
    assert loc_of(3) is None


def test_scalars_follow_yaml_1_2():
    doc = loads("a: yes\nb: on\nc: 1e-3\nd: 010\ne: 0x1f\nf: ~\ng: true\nh: 2001-01-01\n"
                "i: .inf\nj: '3'\nk: 1.5\n")
    assert doc == {"a": "yes", "b": "on", "c": 0.001, "d": 10, "e": 31, "f": None, "g": True,
                   "h": "2001-01-01", "i": math.inf, "j": "3", "k": 1.5}
    assert loads("1: a\ntrue: b\n") == {"1": "a", "true": "b"}      # keys are text
    assert parse_scalar("59") == 59 and parse_scalar("1e-4") == 1e-4 and parse_scalar("no") == "no"


def test_unquoted_expressions_inside_flow_collections():
    doc = loads("a: {n: ${x}, m: [3, ${crop / 2}, x${i}y]}\nb: ${y} # comment\n")
    assert doc == {"a": {"n": "${x}", "m": [3, "${crop / 2}", "x${i}y"]}, "b": "${y}"}


def test_anchors_and_aliases_are_shared_values():
    doc = loads("f: &w {type: gaussian}\ng: *w\n")
    assert doc["g"] == {"type": "gaussian"}


def test_load_reads_files(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("\ufeffname: x\nlayers: []\n")
    doc = load(path)
    assert doc == {"name": "x", "layers": []} and doc.loc.file == str(path)


def test_dump_round_trips():
    doc = loads("name: n\nvars: {a: '1e3', b: yes, c: '$x', d: 'a: b', e: 0.5}\n"
                "layers: [{name: a, type: T, bottom: [x], p: {q: [1, 2]}}]\n")
    text = dump(doc)
    assert "$$x" in text
    back = loads(text)
    assert back["layers"] == doc["layers"] and back["vars"]["a"] == "1e3"
    assert back["vars"]["c"] == "$$x"        # dump escapes '$' for the expander


@pytest.mark.parametrize("text, what", [
    ("name: x\nlayers: [a, b  #!\n", "YAML syntax error"),
    ("name: x\nlayers:\n  - {name: a, type: b: c}  #!\n", "YAML syntax error"),
    ("name: x\nvars:\n\tcrop: 3  #!\n", "tabs"),
    ("", "empty"),
    ("# only a comment\n", "empty"),
    ("- a\n- b\n", "not a mapping"),
    ("just text\n", "not a mapping"),
    ("name: x\nname: y  #!\n", "duplicate key 'name'"),
    ("layers:\n  - {name: a, type: T, pad: 1, pad: 2}  #!\n", "duplicate key 'pad'"),
    ("a: &x [1, *x]  #!\n", "inside its own anchor"),
    ("base: &b {x: 1}\nc:\n  <<: *b  #!\n", "merge keys"),
    ("a: !!set {x}  #!\n", "not supported"),
    ("a: !!python/object:os.system ls  #!\n", "not supported"),
    ("? [a, b]  #!\n: 1\n", "plain text"),
    ("a: *nope  #!\n", "undefined alias"),
    ("a: 1\n---  #!\nb: 2\n", "single document"),
    ("a: " + "[" * 150 + "]" * 150 + "\n", "nesting deeper"),
    ("a: " + "9" * 5000 + "\n", "too long"),
    ("a: b\x00\n", "unacceptable character"),
])
def test_syntax_errors(text, what):
    err = raises(NetDefSyntaxError, text)
    assert what in str(err)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(NetDefError, match="no such netdef file .*nope.yaml") as info:
        load(tmp_path / "nope.yaml")
    assert info.value.hint
    with pytest.raises(NetDefError, match="is a directory"):
        load(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: x\nlayers: [\xff]\n")
    with pytest.raises(NetDefSyntaxError, match=r"bad.yaml:2:10: the file is not UTF-8"):
        load(bad)


def test_yaml_only_whatever_the_suffix(tmp_path):
    """parse reads YAML; picking the Caffe importer by suffix is the compiler's loader."""
    path = tmp_path / "train.prototxt"
    path.write_text("name: x\nlayers: []\n")
    assert load(path) == {"name": "x", "layers": []}
    with pytest.raises(NetDefSyntaxError, match=r"a\.prototxt:1:"):
        loads('layer { name: "x" }', "a.prototxt")

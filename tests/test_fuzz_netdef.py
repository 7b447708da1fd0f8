"""Fuzzing the netdef reader and expander: whatever the text, ``loads`` + ``expand`` +
``filter_phase`` either succeed or raise a NetDefError (one line, with a position when
the text has one) — never another exception — and finish quickly.

The default run is a few seconds; ``pytest -m slow tests/test_fuzz_netdef.py`` runs
many more examples.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeplab_compile.netdef.errors import NetDefError
from deeplab_compile.netdef.expand import expand, filter_phase
from deeplab_compile.netdef.parse import dump, loads

GOLDEN = Path(__file__).parent / "data" / "netdef" / "golden"
SEEDS = [(GOLDEN / f"{case}.yaml").read_text()
         for case in ("vars", "overrides", "include", "templates", "repeat", "phase")]
SEEDS.append("""name: small
vars: {n: 2, c: 21, lr: 0.01, s: x}
templates:
  t:
    params: {name: ~, bottom: data, k: "${n + 1}"}
    layers:
      - {name: "${name}", type: Convolution, bottom: "${bottom}", kernel_size: "${k}"}
      - repeat: "${n}"
        layers: [{name: "${name}_${i}", type: ReLU, bottom: "${name}", phase: train}]
layers:
  - use: t
    with: {name: a}
  - repeat: 3
    use: t
    with: {name: "b${i}", bottom: "b${i - 1}", k: "${i * 2 % 5}"}
    phase: train
  - {name: fc, type: InnerProduct, bottom: a, num_output: "${c}", param: {lr_mult: "${lr}"}}
""")

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SLOW = settings(max_examples=5000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TOKENS = ["name", "vars", "inputs", "outputs", "include", "templates", "layers", "use",
          "with", "repeat", "var", "start", "phase", "params", "bottom", "top", "type",
          "param", "train", "TEST", "~", "null", "true", "0", "1", "-1", "10000", "10001",
          "999999999999999999999", "${", "}", "${i}", "${i-1}", "${n / 0}", "${n % 0}",
          "${(((", "${-}", "$$", "$", "${x y}", "${lr * 2}", "${c}", ":", ": ", "- ", "-",
          "[", "]", "{", "}", ",", "&a", "*a", "!!set", "<<", "#", "'", '"', "\n", "\n  ",
          "\n    ", "\t", " ", "lib/blocks.yaml", "repeat.yaml", "t", "a", "b", "x"]


def run(text: str) -> None:
    """The property: only NetDefError, one line, quickly; results are fixed points."""
    start = time.monotonic()
    try:
        doc = loads(text, "fuzz.yaml")
        out = expand(doc, base_dir=GOLDEN)
        assert expand(out) == out
        for phase in ("train", "TEST"):
            kept = filter_phase(out, phase)
            assert filter_phase(kept, phase) == kept
        assert expand(loads(dump(out), "again.yaml")) == out
    except NetDefError as err:
        msg = str(err)
        assert msg and "\n" not in msg
    assert time.monotonic() - start < 20, "expansion took too long"


def mutate(text: str, data) -> str:
    lines = text.split("\n")
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace",
                                          "expr", "nest", "repeat", "truncate"]))
        i = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            lines = [""]
        line = lines[i]
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind in ("insert", "replace", "expr") and line:
            pos = data.draw(st.integers(0, len(line)))
            if kind == "expr":
                piece = "${" + data.draw(st.text(st.sampled_from(list("ijnc0123456789+-*/%() _$")),
                                                 max_size=12)) + data.draw(st.sampled_from(["}", ""]))
            else:
                piece = data.draw(st.sampled_from(TOKENS))
            end = pos + (data.draw(st.integers(0, 6)) if kind == "replace" else 0)
            lines[i] = line[:pos] + piece + line[end:]
        elif kind == "nest":
            depth = data.draw(st.integers(1, 400))
            lines.insert(i, "deep: " + "[" * depth + "1" + "]" * depth)
        elif kind == "repeat":
            n = data.draw(st.sampled_from(["0", "-3", "10001", "1e9", "99999999999999999999",
                                           "${n * 100000}", "10000", "'${c'", "2.5"]))
            lines.insert(i, f"  - repeat: {n}\n    layers:\n      - repeat: 10000\n"
                            f"        layers: []")
        elif kind == "truncate":
            lines = lines[:i]
    return "\n".join(lines)


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_random_token_soup(text):
    run(text)


@FAST
@given(st.text(max_size=200))
def test_random_text(text):
    run(text)


@FAST
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_netdefs(seed, data):
    run(mutate(seed, data))


# Structured documents: the language's keys with random values, written as YAML.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 12000), st.floats(allow_nan=False),
                     st.sampled_from(["a", "b", "t", "train", "test", "x${i}", "${n}", "${n - 1}",
                                      "${zz}", "$$", "${i * i}", "lib/blocks.yaml", ""]))
_keys = st.sampled_from(["name", "type", "bottom", "top", "use", "with", "repeat", "layers",
                         "params", "phase", "var", "start", "param", "n", "i", "k"])
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)


@settings(FAST, max_examples=60)
@given(st.fixed_dictionaries({}, optional={
    "name": _scalars, "vars": st.dictionaries(st.sampled_from(["n", "c", "i", "x"]), _values, max_size=4),
    "include": _values, "templates": st.dictionaries(st.sampled_from(["t", "u"]), _values, max_size=2),
    "layers": st.lists(_values, max_size=6), "inputs": _values, "outputs": _values}))
def test_structured_documents(doc):
    run(yaml.safe_dump(doc, sort_keys=False))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


_garbage = st.one_of(_scalars, st.sampled_from([
    [], {}, ["a", 1], {"use": "t"}, {"repeat": 10001, "layers": []}, {"name": "z", "type": "T"},
    "${n * 99999999999}", "${((n)", "${n/0}", "${i}", "x${s}y", "${lr}", 10 ** 30, -1, 0.5]))


def tree_mutate(doc, data):
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        kind = data.draw(st.sampled_from(["delete", "replace", "duplicate", "wrap"]))
        if kind == "delete":
            del parent[last]
        elif kind == "replace":
            parent[last] = copy.deepcopy(data.draw(_garbage))   # never mutate the strategy's constants
        elif kind == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        else:
            parent[last] = [parent[last]] if data.draw(st.booleans()) else {"x": parent[last]}
    return doc


@settings(FAST, max_examples=100)
@given(st.sampled_from(SEEDS), st.data())
def test_tree_mutated_netdefs(seed, data):
    doc = tree_mutate(_plain(loads(seed)), data)
    run(yaml.safe_dump(doc, sort_keys=False, width=10 ** 6))


@pytest.mark.slow
@SLOW
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_netdefs_slow(seed, data):
    run(mutate(seed, data))


@pytest.mark.slow
@SLOW
@given(st.sampled_from(SEEDS), st.data())
def test_tree_mutated_netdefs_slow(seed, data):
    run(yaml.safe_dump(tree_mutate(_plain(loads(seed)), data), sort_keys=False, width=10 ** 6))


@pytest.mark.slow
@SLOW
@given(st.text(max_size=400))
def test_random_text_slow(text):
    run(text)

"""The compiler's steps one at a time: the loader's suffix dispatch."""
from __future__ import annotations

import os

import pytest

from deeplab_compile import compiler
from deeplab_compile.caffe import prototxt
from deeplab_compile.compiler import load, loads
from deeplab_compile.netdef.errors import NetDefError, NetDefSyntaxError
from deeplab_compile.netdef.nodes import Map

from conftest import DATA


# --------------------------------------------------------------------------- load

def test_prototxt_goes_to_its_loader(monkeypatch, tmp_path):
    path = tmp_path / "train.prototxt"
    path.write_text('name: "x"\n')
    calls = []
    monkeypatch.setitem(compiler.LOADERS, ".prototxt",
                        lambda text, name: calls.append(name) or Map({"name": "x"}))
    assert load(path) == {"name": "x"} and calls == [str(path)]


def test_prototxt_without_importer_is_a_netdef_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if fromlist and "prototxt" in fromlist:
            raise ImportError("no module", name="deeplab_compile.caffe.prototxt")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(NetDefError, match="prototxt import is not available"):
        loads('name: "x"', "a.prototxt")


def test_load_reads_prototxt_and_yaml_by_suffix():
    path = os.path.join(DATA, "caffe", "largefov_v1.prototxt")
    with open(path) as f:
        assert load(path) == prototxt.loads(f.read(), path)
    assert loads("name: x\n", "net.yml") == {"name": "x"}
    assert loads("name: x\n", "net.txt") == {"name": "x"}        # any other suffix is YAML
    with pytest.raises(NetDefSyntaxError, match=r"net\.yaml:1:"):
        loads('layer { name: "x" }', "net.yaml")
    with pytest.raises(NetDefError, match="no such netdef file"):
        load(os.path.join(DATA, "caffe", "missing.prototxt"))

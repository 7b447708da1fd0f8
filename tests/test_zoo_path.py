"""The zoo travels with the package: where includes and bare netdef names are found
(beside the file, then DEEPLAB_NETDEF_PATH, then the installed zoo), a config folder
copied out of the tree, and netdef/ as package data."""
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from deeplab_compile.cli import compile as compile_cli
from deeplab_compile.compiler import build_net, load_netdef
from deeplab_compile.netdef.errors import IncludeError
from deeplab_compile.netdef.search import find_netdef, zoo_dir

from conftest import NETDEF, ROOT

LIB_MARK = "vars: {mark: %d}\n"
NET_USING_MARK = """\
name: marked
vars: {width: 4}
include: [lib/mark.yaml]
inputs: {data: [3, 9, 9]}
layers:
  - {name: conv, type: Convolution, bottom: data, num_output: "${mark}", kernel_size: 1}
"""


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _mark(net_path):
    return build_net(net_path).layer("conv").params["num_output"]


@pytest.fixture
def no_path(monkeypatch):
    monkeypatch.delenv("DEEPLAB_NETDEF_PATH", raising=False)


def test_zoo_dir_is_the_checkouts_netdef_folder():
    assert os.path.samefile(zoo_dir(), NETDEF)


def test_an_include_beside_the_file_comes_before_the_path(tmp_path, monkeypatch):
    _write(tmp_path / "net" / "n.yaml", NET_USING_MARK)
    _write(tmp_path / "net" / "lib" / "mark.yaml", LIB_MARK % 3)
    _write(tmp_path / "p1" / "lib" / "mark.yaml", LIB_MARK % 5)
    monkeypatch.setenv("DEEPLAB_NETDEF_PATH", str(tmp_path / "p1"))
    assert _mark(tmp_path / "net" / "n.yaml") == 3


def test_an_include_not_beside_the_file_is_found_along_the_path_in_order(tmp_path, monkeypatch):
    _write(tmp_path / "net" / "n.yaml", NET_USING_MARK)
    _write(tmp_path / "p1" / "lib" / "mark.yaml", LIB_MARK % 5)
    _write(tmp_path / "p2" / "lib" / "mark.yaml", LIB_MARK % 7)
    monkeypatch.setenv("DEEPLAB_NETDEF_PATH", os.pathsep.join([str(tmp_path / "empty"), str(tmp_path / "p2"),
                                                               str(tmp_path / "p1")]))
    assert _mark(tmp_path / "net" / "n.yaml") == 7


def test_the_path_comes_before_the_zoo(tmp_path, monkeypatch):
    # lib/vgg16.yaml exists in the zoo; the one on the path shadows it
    _write(tmp_path / "net" / "n.yaml", NET_USING_MARK.replace("lib/mark.yaml", "lib/vgg16.yaml"))
    _write(tmp_path / "p1" / "lib" / "vgg16.yaml", LIB_MARK % 9)
    monkeypatch.setenv("DEEPLAB_NETDEF_PATH", str(tmp_path / "p1"))
    assert _mark(tmp_path / "net" / "n.yaml") == 9


def test_an_include_found_nowhere_else_comes_from_the_zoo(tmp_path, no_path):
    _write(tmp_path / "n.yaml", "name: n\ninclude: [lib/vgg16.yaml]\ninputs: {data: [3, 17, 17]}\nlayers:\n"
                                "  - {use: conv_relu, with: {id: '1_1', bottom: data, num_output: 4}}\n")
    net = build_net(tmp_path / "n.yaml")
    assert net.layer("conv1_1").params["num_output"] == 4


def test_a_missing_include_names_every_place_searched(tmp_path, monkeypatch):
    _write(tmp_path / "net" / "n.yaml", NET_USING_MARK)
    monkeypatch.setenv("DEEPLAB_NETDEF_PATH", str(tmp_path / "p1"))
    with pytest.raises(IncludeError) as e:
        load_netdef(str(tmp_path / "net" / "n.yaml"))
    text = str(e.value)
    assert str(tmp_path / "net" / "lib" / "mark.yaml") in text
    assert str(tmp_path / "p1") in text and zoo_dir() in text and "DEEPLAB_NETDEF_PATH" in text


def test_a_bare_zoo_name_compiles_from_any_folder(tmp_path, no_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compile_cli.main(["deeplab_v3plus_mobilenetv2"]) == 0
    out = capsys.readouterr().out
    assert "2,271,109" in out                      # the zoo net's published count (README)
    # the loader the other tools share (deeplab-convert --netdef, deeplab-test --net) too
    doc = load_netdef("deeplab_v3_mobilenetv2", {"num_classes": 19})
    assert doc["name"] == "deeplab_v3_mobilenetv2" and doc["vars"]["num_classes"] == 19


def test_a_bare_name_is_looked_up_along_the_path_before_the_zoo(tmp_path, monkeypatch):
    _write(tmp_path / "p1" / "deeplab_largefov.yaml", NET_USING_MARK.replace("include: [lib/mark.yaml]\n", "")
           .replace('"${mark}"', "2"))
    monkeypatch.setenv("DEEPLAB_NETDEF_PATH", str(tmp_path / "p1"))
    monkeypatch.chdir(tmp_path)
    assert find_netdef("deeplab_largefov") == str(tmp_path / "p1" / "deeplab_largefov.yaml")
    assert find_netdef("deeplab_v3_resnet101.yaml") == os.path.join(zoo_dir(), "deeplab_v3_resnet101.yaml")
    assert find_netdef("no/such.yaml") == "no/such.yaml"       # a path stays a path


def test_an_unknown_bare_name_lists_the_zoo(tmp_path, no_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compile_cli.main(["deeplab_v4"]) == 2
    err = capsys.readouterr().err
    assert "deeplab_v4" in err and "deeplab_v3plus_xception65" in err and "Traceback" not in err


@pytest.mark.parametrize("config", ["voc12/config/deeplab_largefov", "voc12/config/deeplab_v3plus_xception65",
                                    "cityscapes/config/deeplab_v3plus_mobilenetv2"])
def test_a_config_folder_copied_elsewhere_still_compiles(tmp_path, no_path, config):
    dst = tmp_path / "my_experiment" / "config" / os.path.basename(config)
    shutil.copytree(os.path.join(ROOT, "experiments", config), dst)
    v = {"NUM_LABELS": 21, "DATA_ROOT": "/d", "LIST_DIR": "/l", "TRAIN_SET": "train_aug"}
    net = build_net(dst / "train.yaml", phase="train", vars=v)
    assert "loss" in [lay.name for lay in net.layers]


def _packages_on_disk():
    out = []
    for d, _, files in os.walk(os.path.join(ROOT, "deeplab_compile")):
        if "__init__.py" in files:
            out.append(os.path.relpath(d, ROOT).replace(os.sep, "."))
    return sorted(out)


def test_pyproject_lists_every_package_and_ships_the_zoo():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        st = tomllib.load(f)["tool"]["setuptools"]
    listed = set(st["packages"])
    assert set(_packages_on_disk()) <= listed, "a package is missing from pyproject's packages"
    assert st["package-dir"]["deeplab_compile.zoo.netdef"] == "netdef"
    assert {"deeplab_compile.zoo.netdef", "deeplab_compile.zoo.netdef.lib"} <= listed
    assert st["package-data"]["deeplab_compile.zoo.netdef"] == ["*.yaml"]


def test_a_built_package_carries_the_zoo_and_finds_it(tmp_path):
    """setuptools' build_py lays the zoo into deeplab_compile/zoo/netdef/; imported from
    there, with no source tree around, a bare zoo name and a lib include resolve to it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    ignore = shutil.ignore_patterns("*.so", "__pycache__")
    shutil.copytree(os.path.join(ROOT, "deeplab_compile"), src / "deeplab_compile", ignore=ignore)
    shutil.copytree(os.path.join(ROOT, "netdef"), src / "netdef")
    build = tmp_path / "build"
    env = dict(os.environ, DEEPLAB_NO_EXT="1")
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)], cwd=src,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    zoo = build / "deeplab_compile" / "zoo" / "netdef"
    assert sorted(os.listdir(zoo / "lib")) == sorted(os.listdir(os.path.join(NETDEF, "lib")))
    assert {f for f in os.listdir(zoo) if f.endswith(".yaml")} == \
        {f for f in os.listdir(NETDEF) if f.endswith(".yaml")}
    shutil.rmtree(src)                               # no checkout left to fall back on
    away = tmp_path / "elsewhere"
    away.mkdir()
    code = ("from deeplab_compile.netdef.search import zoo_dir, find_netdef; "
            "from deeplab_compile.compiler import load_netdef; print(zoo_dir()); "
            "d = load_netdef(find_netdef('deeplab_largefov')); print(len(d['layers']))")
    env = {k: v for k, v in os.environ.items() if k != "DEEPLAB_NETDEF_PATH"}
    env["PYTHONPATH"] = str(build)
    r = subprocess.run([sys.executable, "-c", code], cwd=away, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    found, layers = r.stdout.split()[-2:]
    assert os.path.samefile(found, zoo) and int(layers) > 20

"""A DeepLab user's own config folder in the experiment tree: ``config/<NET_ID>/`` with
DeepLab's ``train.prototxt``, ``test.prototxt``, ``solver.prototxt`` and
``solver2.prototxt``, used as they are when the folder has no YAML config.

What DeepLab's ``exper/run_pascal.sh`` did, done the same way:

* it ran Caffe from ``exper/`` with ``EXP=voc12``, so the files name their paths
  relative to the folder above ``${EXP}`` (``${EXP}/list/${TEST_SET}.txt``,
  ``${EXP}/model/${NET_ID}/train``) and use ``${EXP}`` in layer names (``fc8_${EXP}``).
  Here ``${EXP}`` is the experiment folder's name and relative paths are read from its
  parent folder;
* it filled DeepLab's variables in with ``sed`` (every ``${NAME}`` of the set, comments
  included; any other ``${...}`` is left as it is) into copies beside the originals:
  ``train_${TRAIN_SET}.prototxt`` and ``solver_${TRAIN_SET}.prototxt`` (stage 2:
  ``solver2_${TRAIN_SET}.prototxt``), ``test_${TEST_SET}.prototxt``.  The solver names
  its net by that copy's name, so the copies are written the same way (atomically, and
  only when their text changes);
* the variables (:func:`variables`): ``EXP``, ``NET_ID``, ``NUM_LABELS``, ``DATA_ROOT``,
  ``TRAIN_SET``, ``TEST_SET``, ``FEATURE_DIR`` (``features/<NET_ID>``, stage 2
  ``features2/<NET_ID>``), and ``LIST_DIR``, ``CONFIG_DIR``, ``MODEL_DIR``, ``LOG_DIR``,
  plus the experiment's optional ``-D`` values (``MAX_ITER`` ...).  The folders are
  absolute paths.

What the steps then take from the files, so resuming and the synthetic set work:

* train: the solver copy, its ``net``, ``snapshot_prefix`` and ``weights`` read from the
  folder above ``${EXP}``; the data layer's list and root too (on the synthetic set,
  the synthetic set's list of the stage's training set and its root);
* test: the test copy, fed the list the step tests (all ids, or those still missing);
  every ``MatWrite`` layer names its files by the tested images' ids (DeepLab's
  ``${TEST_SET}_id.txt`` lists the same ids in the same order for a whole list), and
  one of them must write where the CRF and evaluation read:
  ``${FEATURE_DIR}/${TEST_SET}/fc8/``.
"""
from __future__ import annotations

import os
import re
from typing import Any

from ..errors import DeepLabError, Loc
from .settings import Settings

#: The files that make a config folder DeepLab's (any one of them, and no YAML config).
CAFFE_FILES = ("solver.prototxt", "train.prototxt", "test.prototxt")
YAML_FILES = ("solver.yaml", "test.yaml")
DATA_TYPES = ("ImageSegData", "ImageData", "WindowData")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class CaffeConfigError(DeepLabError):
    """A DeepLab config folder the experiment cannot use as it is."""


def is_caffe(config_dir: str) -> bool:
    """True for a folder of DeepLab's prototxts and no YAML config."""
    if any(os.path.isfile(os.path.join(config_dir, n)) for n in YAML_FILES):
        return False
    return any(os.path.isfile(os.path.join(config_dir, n)) for n in CAFFE_FILES)


def exper_dir(s: Settings) -> str:
    """The folder DeepLab's paths are relative to: the one holding ``${EXP}``."""
    return os.path.dirname(s.exp)


def variables(s: Settings, stage: int, *, train_set: str | None = None, test_set: str | None = None) -> dict:
    """DeepLab's variable set for a stage, as run_pascal.sh gave it to sed."""
    values: dict[str, Any] = {
        "EXP": os.path.basename(s.exp), "NET_ID": s.net_id, "NUM_LABELS": s.num_labels,
        "DATA_ROOT": s.data_root, "TRAIN_SET": train_set or (s.train_set if stage == 1 else s.train_set2),
        "TEST_SET": test_set or (s.test_set if stage == 1 else s.test_set2),
        "FEATURE_DIR": s.feature_dir if stage == 1 else s.feature2_dir,
        "LIST_DIR": s.list_dir, "CONFIG_DIR": s.config_dir, "MODEL_DIR": s.model_dir, "LOG_DIR": s.log_dir,
    }
    values.update(s.defines)
    return values


def sed(text: str, values: dict) -> str:
    """``${NAME}`` replaced by its value for every name of ``values``, everywhere in the
    text (as DeepLab's ``sub.sed``); other ``${...}`` stay."""
    return _VAR.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


def write_copy(src: str, dst: str, values: dict) -> str:
    """The substituted copy of ``src`` at ``dst`` (rewritten only when its text changes)."""
    from ..io.atomic import atomic_write
    from ..netdef.parse import read_text
    if not os.path.isfile(src):
        raise CaffeConfigError(f"{src}: no such file", loc=Loc(src),
                               hint="a DeepLab config folder holds train.prototxt, test.prototxt, "
                                    "solver.prototxt (and solver2.prototxt for stage 2)")
    text = sed(read_text(src), values)
    try:
        with open(dst, encoding="utf-8") as f:
            if f.read() == text:
                return dst
    except OSError:
        pass
    with atomic_write(dst, "w") as f:
        f.write(text)
    return dst


def _at(base: str, path: str) -> str:
    if not path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def _layers(doc) -> list:
    from ..validation import as_list
    return [lay for lay in as_list(doc.get("layers")) if isinstance(lay, dict)]


def solver_of(s: Settings, stage: int):
    """(solver copy, its -D values (none: the copy is filled in), the checked solver) of a
    training stage, with the solver's paths and its net's data layer read as DeepLab's."""
    from ..compiler import load
    from ..training.solver import load_solver
    name = "solver" if stage == 1 else "solver2"
    train_set = s.train_set if stage == 1 else s.train_set2
    values = variables(s, stage, train_set=train_set)
    cfg = s.config_dir
    write_copy(os.path.join(cfg, "train.prototxt"), os.path.join(cfg, f"train_{train_set}.prototxt"), values)
    solver = write_copy(os.path.join(cfg, name + ".prototxt"), os.path.join(cfg, f"{name}_{train_set}.prototxt"),
                        values)
    sv = load_solver(solver)
    base = exper_dir(s)
    net = _at(base, sv.net)
    if not os.path.isfile(net) and os.path.isfile(os.path.join(cfg, os.path.basename(sv.net))):
        net = os.path.join(cfg, os.path.basename(sv.net))       # a solver naming its net by file name
    sv.net = net
    sv.snapshot_prefix = _at(base, sv.snapshot_prefix) or os.path.join(s.model_dir, "train" if stage == 1
                                                                         else "train2")
    sv.weights = _at(base, sv.weights)
    data = dict(sv.data or {})
    if s.synthetic:
        data.update(source=os.path.join(s.list_dir, train_set + ".txt"), root_folder=s.data_root)
    elif os.path.isfile(net):
        layer = next((lay for lay in _layers(load(net)) if lay.get("type") in DATA_TYPES
                      and str(lay.get("phase", "train")).lower() == "train"), None)
        if layer is not None:
            for key in ("source", "root_folder"):
                if isinstance(layer.get(key), str) and key not in data:
                    data[key] = _at(base, layer[key])
    sv.data = data
    return solver, {}, sv


def test_net(s: Settings, stage: int, test_set: str, feats: str):
    """(test copy, the document to test) of a stage's test set: the copy read, its
    MatWrite layers naming files by the tested ids, their relative prefixes read from
    the folder above ``${EXP}``."""
    from ..compiler import load
    cfg = s.config_dir
    copy = write_copy(os.path.join(cfg, "test.prototxt"), os.path.join(cfg, f"test_{test_set}.prototxt"),
                      variables(s, stage, test_set=test_set))
    doc = load(copy)
    base = exper_dir(s)
    writers = [lay for lay in _layers(doc) if lay.get("type") == "MatWrite"
               and str(lay.get("phase", "test")).lower() == "test"]
    want = os.path.normpath(feats)
    found = False
    for lay in writers:
        prefix = lay.get("prefix")
        if isinstance(prefix, str):
            lay["prefix"] = prefix = prefix if os.path.isabs(prefix) else os.path.join(base, prefix)
            found = found or (prefix.endswith(("/", os.sep)) and os.path.normpath(prefix) == want)
        lay["source"] = ""                   # ids from the tested list, in its order
    if not found:
        shown = ", ".join(f"'{lay.get('name')}' ({lay.get('prefix')})" for lay in writers) or "none"
        raise CaffeConfigError(f"no MatWrite layer of the test net writes to {feats}/ (MatWrite layers: {shown})",
                               loc=Loc(copy), hint="set the fc8 MatWrite layer's prefix to "
                                                   "\"${FEATURE_DIR}/${TEST_SET}/fc8/\", as DeepLab's test.prototxt")
    return copy, doc

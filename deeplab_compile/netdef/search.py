"""Where netdef files are found: the model zoo and ``DEEPLAB_NETDEF_PATH``.

An ``include:`` path is looked up, in order,

1. relative to the directory of the file that includes it;
2. in each folder of ``DEEPLAB_NETDEF_PATH`` (separated by ``os.pathsep``, as ``PATH``);
3. in the zoo: the netdefs installed with the package (``deeplab_compile/zoo/netdef/``,
   package data), or ``netdef/`` beside the package in a source checkout.

So ``include: [lib/resnet.yaml]`` works in a netdef anywhere, and a config folder copied
out of the tree still finds the zoo's templates.

A netdef named on the command line is a path; a bare name that is no file
(``deeplab_v3plus_xception65``, with or without ``.yaml``) is looked up along
``DEEPLAB_NETDEF_PATH`` and then in the zoo.
"""
from __future__ import annotations

import os

from ..errors import did_you_mean

ENV = "DEEPLAB_NETDEF_PATH"
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # deeplab_compile/


def zoo_dir() -> str:
    """The zoo's folder: the installed package data, else ``netdef/`` of the checkout."""
    installed = os.path.join(_PACKAGE, "zoo", "netdef")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(_PACKAGE), "netdef")


def path_dirs() -> list[str]:
    """The folders of ``DEEPLAB_NETDEF_PATH`` (empty entries skipped)."""
    return [d for d in os.environ.get(ENV, "").split(os.pathsep) if d.strip()]


def search_dirs(base_dir: str | None) -> list[str]:
    """Where an include of a file in ``base_dir`` is looked up, in order."""
    dirs = [base_dir] if base_dir is not None else []
    return dirs + path_dirs() + [zoo_dir()]


def find_include(path: str, base_dir: str | None) -> tuple[str | None, list[str]]:
    """(the file ``path`` names, or None; the folders searched).  An absolute path is
    taken as it is."""
    if os.path.isabs(path):
        return (path if os.path.isfile(path) else None), []
    dirs = search_dirs(base_dir)
    for d in dirs:
        full = os.path.normpath(os.path.join(d, path))
        if os.path.isfile(full):
            return full, dirs
    return None, dirs


def find_netdef(name: str | os.PathLike) -> str:
    """A netdef path as given when it is a file, else a zoo name found along
    ``DEEPLAB_NETDEF_PATH`` and the zoo; otherwise ``name`` unchanged (the reader then
    reports the missing file)."""
    text = os.fspath(name)
    if os.path.exists(text) or os.path.dirname(text) or not text:
        return text
    stem = text if text.endswith((".yaml", ".yml", ".prototxt")) else text + ".yaml"
    for d in path_dirs() + [zoo_dir()]:
        full = os.path.join(d, stem)
        if os.path.isfile(full):
            return full
    return text


def zoo_names() -> list[str]:
    """The netdefs of the zoo, by name (``deeplab_largefov``, ...)."""
    d = zoo_dir()
    if not os.path.isdir(d):
        return []
    return sorted(os.path.splitext(f)[0] for f in os.listdir(d) if f.endswith(".yaml"))


def missing_netdef_hint(path: str) -> str:
    """The nearest netdef file beside ``path`` (by name, or by stem with another suffix),
    else the nearest zoo name; then the rule."""
    zoo = zoo_names()
    folder, name = os.path.split(path)
    here = sorted(f for f in (os.listdir(folder or ".") if os.path.isdir(folder or ".") else [])
                  if f.endswith((".yaml", ".yml", ".prototxt")))
    by_stem = {os.path.splitext(f)[0]: f for f in here}
    guess = did_you_mean(name, here) or did_you_mean(os.path.splitext(name)[0], by_stem)
    if guess:
        found = guess.split("'")[1]
        guess = f"did you mean '{os.path.join(folder, by_stem.get(found, found))}'?"
    else:
        guess = did_you_mean(os.path.splitext(name)[0], zoo)
    rule = "give the path of a .yaml or .prototxt netdef, or a zoo name: " + ", ".join(zoo)
    return f"{guess} {rule}" if guess else rule

"""What a step's outputs were made from: a small JSON record beside them.

Each step writes, beside its outputs, the inputs that decide them: ``DATA_ROOT``, the
SHA-256 of the list files' contents, of the config files, of the model (or of the
record of the step it reads), and its own settings.  A step whose record differs from
what it would now be made from redoes its outputs (test, CRF, evaluation, lists) or,
for a trained model, stops with one line (:class:`StaleOutput`): retraining would
throw away a model, so the user chooses.

The records: ``<MODEL_DIR>/<prefix>.made_from.json`` (training), ``made_from.json`` in
a feature or CRF folder, ``res/<NET_ID>/<set>/<tag>.made_from.json`` (evaluation),
``<LIST_DIR>/made_from.json`` (lists made from the dataset).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ..errors import DeepLabError
from ..io.atomic import atomic_write

RECORD = "made_from.json"


class StaleOutput(DeepLabError):
    """Outputs made from other inputs than the step's now, which the step will not redo."""


def file_digest(path: str | None) -> str | None:
    """SHA-256 of a file's contents, or None when there is no such file."""
    if not path or not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def included_files(path: str | None) -> list[str]:
    """The files a YAML netdef includes, depth first, each once (found as the expander
    finds them: beside the including file, then along ``DEEPLAB_NETDEF_PATH``, then in
    the zoo).  A file that cannot be read or parsed adds nothing here: compiling it
    reports the error."""
    from ..errors import DeepLabError as _Error
    from ..netdef import parse, search

    out: list[str] = []
    seen: set[str] = set()

    def walk(name: str) -> None:
        if not name.lower().endswith((".yaml", ".yml")):
            return
        try:
            doc = parse.load(name)
        except (_Error, OSError):
            return
        inc = doc.get("include") if isinstance(doc, dict) else None
        for sub in [inc] if isinstance(inc, str) else inc if isinstance(inc, list) else []:
            if not isinstance(sub, str):
                continue
            found, _ = search.find_include(sub, os.path.dirname(name))
            if found is None or os.path.realpath(found) in seen:
                continue
            seen.add(os.path.realpath(found))
            out.append(found)
            walk(found)

    if path and os.path.isfile(path):
        walk(path)
    return out


def includes_digest(path: str | None) -> str | None:
    """SHA-256 over the contents of the files a netdef includes (None when it includes
    none), so a changed library makes a step's outputs stale like a changed netdef."""
    files = included_files(path)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update((file_digest(f) or "-").encode())
    return h.hexdigest()


def read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def write(path: str, record: dict[str, Any]) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    return path


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]                    # a digest: its head names it well enough
    if isinstance(value, str):
        return value
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(old: dict | None, new: dict) -> list[str]:
    """How ``new`` differs from the recorded ``old``, as ``key: was X, now Y`` (``old``
    None: no record)."""
    if old is None:
        return ["no record of what they were made from"]
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key} was {_show(old.get(key))}, now {_show(new.get(key))}")
    return out


def predates(old: dict | None, new: dict, key: str) -> bool:
    """Whether ``old`` is ``new`` as recorded before records had ``key``."""
    return (old is not None and key not in old and key in new
            and old == json.loads(json.dumps({k: v for k, v in new.items() if k != key})))


def matches(path: str, new: dict) -> bool:
    return read(path) == json.loads(json.dumps(new))

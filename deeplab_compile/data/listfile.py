"""DeepLab's list files: one ``image label`` pair per line, paths relative to
``root_folder`` (``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``).

With ``label_type: image`` the second field is an integer class; with ``none`` it is
optional.  Blank lines and lines starting with ``#`` are skipped.  Like ImageSegData, a
path is ``root_folder + field`` (plain concatenation, so DeepLab's leading ``/`` works
with a root that has no trailing slash); a relative ``root_folder`` is taken relative to
the list file's folder when it does not exist from the current directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import Loc
from .errors import DataError


@dataclass(frozen=True)
class Entry:
    image: str              # full path
    label: str | int | None  # full path (pixel), class (image) or None
    line: int               # 1-based line in the list file
    id: str                 # image name without folder and extension (names .mat/.png outputs)

    def where(self, source: str) -> str:
        return f"{source}:{self.line}"


def join(root: str, rel: str) -> str:
    if not root:
        return rel
    if rel.startswith("/") and not root.endswith("/"):
        return root + rel
    return os.path.join(root, rel.lstrip("/") if root.endswith("/") else rel)


def resolve_root(root_folder: str, source: str) -> str:
    if not root_folder or os.path.isabs(root_folder) or os.path.isdir(root_folder):
        return root_folder
    alt = os.path.join(os.path.dirname(os.path.abspath(source)), root_folder)
    return alt if os.path.isdir(alt) else root_folder


def image_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def read_list(source: str, root_folder: str = "", label_type: str = "pixel", *,
              check_files: bool = True) -> list[Entry]:
    """Read a list file.  Missing files are reported all at once, each with its line."""
    try:
        with open(source, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"list file '{source}' does not exist", hint="check 'source' (the list of image label lines)")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read list file '{source}': {e}")
    root = resolve_root(root_folder, source)
    out: list[Entry] = []
    for n, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        loc = Loc(source, n, 1)
        if label_type == "pixel" and len(parts) != 2:
            raise DataError(f"expected 'image label', got {len(parts)} field(s): {text!r}", loc=loc,
                            hint="write one image path and one label path per line")
        if label_type == "image" and len(parts) != 2:
            raise DataError(f"expected 'image class', got {len(parts)} field(s): {text!r}", loc=loc)
        if label_type == "none" and len(parts) not in (1, 2):
            raise DataError(f"expected 'image' (and optionally a label), got {len(parts)} fields", loc=loc)
        img = join(root, parts[0])
        label: str | int | None = None
        if label_type == "pixel":
            label = join(root, parts[1])
        elif label_type == "image":
            try:
                label = int(parts[1])
            except ValueError:
                raise DataError(f"class label {parts[1]!r} is not an integer", loc=loc)
        out.append(Entry(img, label, n, image_id(parts[0])))
    if not out:
        raise DataError(f"list file '{source}' has no entries", hint="add 'image label' lines")
    if check_files:
        missing = []
        for e in out:
            for what, p in (("image", e.image), ("label", e.label)):
                if isinstance(p, str) and not os.path.isfile(p):
                    missing.append((e, what, p))
        if missing:
            e, what, p = missing[0]
            more = f" (and {len(missing) - 1} more missing file(s))" if len(missing) > 1 else ""
            raise DataError(f"{what} '{p}' does not exist{more}", loc=Loc(source, e.line, 1),
                            hint=f"check root_folder ('{root}') and the list")
    return out


def read_ids(source: str, strip: int = 0) -> list[str]:
    """MatWrite's ``source``: the first field of each line, ``strip`` characters cut off
    its end; a path keeps only its base name without extension."""
    try:
        with open(source, encoding="utf-8") as f:
            lines = [ln.split()[0] for ln in f.read().splitlines() if ln.strip() and not ln.startswith("#")]
    except FileNotFoundError:
        raise DataError(f"id list '{source}' does not exist")
    ids = [ln[:-strip] if strip else ln for ln in lines]
    return [image_id(i) if ("/" in i or "." in os.path.basename(i)) else i for i in ids]

"""Shared plumbing for the console scripts: one-line user errors, exit code 2."""
from __future__ import annotations

import functools
import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Callable

from ..errors import DeepLabError

EXIT_USER_ERROR = 2


def entry_point(fn: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)``: a :class:`DeepLabError` prints as one line on stderr
    (``prog: error: ...``) and the process exits with status 2; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None) -> int:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else fn.__module__
        try:
            rc = fn(argv)
        except DeepLabError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 0
        return int(rc or 0)

    return main


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file beside ``path``; rename it over ``path`` only when the
    block finishes without an exception, so nothing is ever left half-written."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` for writers that want a file name
    (``torch.save``, ``scipy.io.savemat``, ``Image.save``); renamed on success."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".tmp" + ext, dir=d)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

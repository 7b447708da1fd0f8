"""Shared plumbing for the console scripts: one-line user errors, exit code 2."""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from typing import Callable

from .. import settings
from ..errors import DeepLabError
from ..io.atomic import atomic_path, atomic_write  # noqa: F401  (re-exported for the commands)

EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse with the commands' one-line errors: ``prog: error: ...`` and exit status 2,
    without the usage block (``-h`` shows it); a mistyped choice names the one it is near,
    and so does a mistyped flag, which is reported first (argparse would report a
    required flag it hides as missing instead)."""

    def parse_known_args(self, args=None, namespace=None):
        from ..errors import did_you_mean
        argv = sys.argv[1:] if args is None else list(args)
        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        for token in argv:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if name.startswith("--") and not any(f.startswith(name) for f in flags):  # argparse takes prefixes
                hint = did_you_mean(name, flags)
                self.exit(EXIT_USER_ERROR, f"{self.prog}: error: unrecognized argument {name}"
                                           f"{'; ' + hint if hint else ''} (-h for the usage)\n")
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        from ..netdef.errors import near_miss
        m = re.match(r"argument (\S+): invalid choice: '?([^']*?)'? \(choose from (.*)\)$", message)
        hint = ""
        if m:
            guess = near_miss(m.group(2), [c.strip().strip("'") for c in m.group(3).split(",")])
            hint = f"; did you mean '{guess}'?" if guess else ""
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}{hint} (-h for the usage)\n")


def entry_point(fn: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)``: a :class:`DeepLabError` prints as one line on stderr
    (``prog: error: ...``) and the process exits with status 2; Ctrl-C exits 130.
    The kernel settings in the environment (:mod:`deeplab_compile.settings`) are
    checked first, so a bad one fails before any work (``--help`` still works)."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None) -> int:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else fn.__module__
        try:
            args = sys.argv[1:] if argv is None else argv
            if not {"-h", "--help"} & set(args):
                settings.check_all()
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


class _ParamLimit(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from ..sizes import ENV_VAR, parse_gib
        value = parse_gib(values, option_string)
        os.environ[ENV_VAR] = repr(value)      # read by every build, torchrun's workers too
        setattr(namespace, self.dest, value)


def add_param_limit(parser: argparse.ArgumentParser) -> None:
    """``--max-param-gib N``: the most GiB of parameters a net may allocate when built
    (default 4, or ``$DEEPLAB_MAX_PARAM_GIB``); checked from the shape rules before
    anything is allocated (:mod:`deeplab_compile.sizes`).  The flag sets the variable for
    this process and the processes it starts."""
    parser.add_argument("--max-param-gib", action=_ParamLimit, metavar="GIB",
                        help="the most GiB of parameters building the net may allocate (default 4, "
                             "or $DEEPLAB_MAX_PARAM_GIB); a larger net is refused before allocating")


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    """``--precision fp32|bf16|fp16`` and ``--channels-last`` for the inference commands
    (the solver's ``precision`` / ``channels_last`` for training)."""
    from ..training.precision import PRECISIONS
    parser.add_argument("--precision", default="fp32", type=str.lower, choices=PRECISIONS,
                        help="fp32 (default), or bf16/fp16 autocast on the device; outputs are float32")
    parser.add_argument("--channels-last", action="store_true",
                        help="the net and its inputs in torch.channels_last memory layout")


class Where:
    """The ``owner`` of a check that reports through ``owner.error`` (such as
    :func:`deeplab_compile.layers.data.resize_range`) for a value from outside a netdef: a
    one-line error prefixed with where the value came from."""

    def __init__(self, where: str):
        self.where = where

    def error(self, message: str, *, hint: str | None = None, **_) -> DeepLabError:
        return DeepLabError(f"{self.where}: {message}", hint=hint)


def parse_resize_to_range(text: str) -> dict[str, int | None]:
    """``--resize-to-range 513,513,16`` -> ``{"min": 513, "max": 513, "factor": 16}`` (max and
    factor None when left out), checked as the data layer's ``resize_to_range`` is; anything
    else is a one-line error."""
    from ..layers.data import resize_range
    parts = text.split(",")
    if not 1 <= len(parts) <= 3 or not all(v.strip().isdigit() and int(v) > 0 for v in parts):
        raise DeepLabError(f"--resize-to-range {text!r}: give MIN[,MAX[,FACTOR]] as positive integers, "
                           "e.g. 513,513,16")
    return resize_range(dict(zip(("min", "max", "factor"), (int(v) for v in parts))),
                        Where(f"--resize-to-range {text!r}"))


def parse_scales(text: str) -> list[float]:
    """``--scales 0.5,0.75,1`` -> ``[0.5, 0.75, 1.0]``; anything else is a one-line error."""
    try:
        scales = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        scales = []
    if not scales or any(not s > 0 for s in scales):
        raise DeepLabError(f"--scales '{text}' is not a list of positive numbers",
                           hint="separate them by commas, e.g. --scales 0.5,0.75,1")
    return scales

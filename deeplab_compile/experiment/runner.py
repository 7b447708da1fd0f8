"""How a step runs: its work is a function called in this process (one import of torch
for the whole experiment), its output goes to ``log/<NET_ID>/<step>.log`` and, indented,
to the console; a failure becomes :class:`StepFailed` with the log's last lines."""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
import traceback
from typing import Callable

from ..errors import DeepLabError


class StepFailed(Exception):
    """A step that failed; ``shown``: its ``detail`` is already on the console (the step's
    output is echoed there), so the driver does not print it again."""

    def __init__(self, step: str, log: str, detail: str = "", shown: bool = False):
        super().__init__(step)
        self.step, self.log, self.detail, self.shown = step, log, detail, shown


def say(text: str) -> None:
    print(text, flush=True)


class Tee:
    """A text stream writing to the step's log and, indented, to the console."""

    def __init__(self, log, console):
        self.log, self.console, self.tail, self._line = log, console, [], ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        self._line += text
        *done, self._line = self._line.split("\n")
        for ln in done:
            self.tail = (self.tail + [ln])[-8:]
            if self.console is not None:
                self.console.write("    " + ln + "\n")
                self.console.flush()
        return len(text)

    def write_log(self, text: str) -> int:
        """To the log only (what a child process prints that the console need not show)."""
        self.log.write(text)
        self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def isatty(self) -> bool:
        return False


class Runner:
    def __init__(self, log_dir: str, quiet: bool = False):
        self.log_dir, self.quiet = log_dir, quiet
        os.makedirs(log_dir, exist_ok=True)

    def log_path(self, step: str) -> str:
        return os.path.join(self.log_dir, step + ".log")

    def run(self, step: str, cmd: list[str], work: Callable[[], int | None]) -> None:
        """Call ``work()`` with its output in the step's log.  ``cmd`` is the command line
        that does the same work by hand; it heads the log and the console line.  A
        :class:`DeepLabError` is the tool's one-line error (``<tool>: error: ...``)."""
        log = self.log_path(step)
        shown = " ".join(shlex.quote(c) for c in cmd)
        say(f"[{step}] {shown}")
        t0 = time.time()
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ {shown}\n")
            f.flush()
            tee = Tee(f, None if self.quiet else sys.stdout)
            rc = _call(cmd[0], work, tee)
        if rc != 0:
            raise StepFailed(step, log, "\n".join("    " + t for t in tee.tail), shown=not self.quiet)
        say(f"[{step}] done in {time.time() - t0:.0f} s")


def _call(tool: str, work: Callable[[], int | None], tee: Tee) -> int:
    import torch
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
            try:
                return int(work() or 0)
            except DeepLabError as err:
                print(f"{tool}: error: {err}", file=sys.stderr)
                return 2
            except Exception:
                traceback.print_exc()
                return 1
    finally:
        torch.set_num_threads(threads)       # the CRF sets its own

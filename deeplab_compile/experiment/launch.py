"""The training step in several processes: ``torchrun --standalone --nproc_per_node N -m
deeplab_compile.cli.train ...`` run as a child (``python -m torch.distributed.run``, the
same program), its output in the step's log and, through the runner, on the console.

Process 0 writes the training log and prints the last line; an error that every
process meets is printed by process 0 alone (:mod:`deeplab_compile.cli.train`).  Here
torchrun's own report of a failed process (its logger lines, its ChildFailedError
traceback and table) goes to the log only, and an error line seen before is not shown
again.  Each process gets ``OMP_NUM_THREADS`` = the cores / N unless it is set.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import deeplab_compile

TRAIN_MODULE = "deeplab_compile.cli.train"


def shown_command(procs: int, args: list[str]) -> list[str]:
    """The command line a user types for the same work."""
    return ["torchrun", "--standalone", "--nproc_per_node", str(procs), "-m", TRAIN_MODULE, *args]


def _env(procs: int) -> dict[str, str]:
    env = dict(os.environ)
    # the processes import this very package, wherever the experiment was started from
    root = os.path.dirname(os.path.dirname(os.path.abspath(deeplab_compile.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // procs)))
    return env


_LOGGER = re.compile(r"[DIWEF]\d{4} \d\d:\d\d:\d\d")        # torch.distributed.elastic's log lines
_TORCHRUN_FRAME = ("torch/distributed/run.py", "torch/distributed/launcher/", "torch/distributed/elastic/")


class OutputFilter:
    """Lines of torchrun's output: to ``show`` (the step's log and console) or to
    ``log_only``."""

    def __init__(self, show, log_only):
        self.show, self.log_only = show, log_only
        self.seen: set[str] = set()
        self.block: list[str] | None = None      # a traceback being read
        self.report = False                      # torchrun's final report: the rest is its

    def line(self, ln: str) -> None:
        if self.report or _LOGGER.match(ln):
            self.log_only(ln)
        elif self.block is not None:
            self.block.append(ln)
            if any(f in ln for f in _TORCHRUN_FRAME):
                self.report = True
                for b in self.block:
                    self.log_only(b)
                self.block = None
            elif not ln.startswith((" ", "\t")):  # the exception line ends a process's traceback
                for b in self.block:
                    self.show(b)
                self.block = None
        elif ln.startswith("Traceback (most recent call last):"):
            self.block = [ln]
        elif ": error: " in ln and ln in self.seen:
            self.log_only(ln)
        else:
            if ": error: " in ln:
                self.seen.add(ln)
            self.show(ln)

    def close(self) -> None:
        for b in self.block or []:
            self.show(b)
        self.block = None


def run(procs: int, args: list[str]) -> int:
    """Run deeplab-train in ``procs`` processes; returns torchrun's exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", TRAIN_MODULE, *args]
    out = sys.stdout
    filt = OutputFilter(out.write, getattr(out, "write_log", out.write))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=_env(procs))
    try:
        for ln in proc.stdout:
            filt.line(ln)
        filt.close()
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reached torchrun and its processes too; a signal to this
        # process alone is passed on.  The processes snapshot the last iteration and stop.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=120)
            for ln in (rest or "").splitlines(keepends=True):
                filt.line(ln)
            filt.close()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise

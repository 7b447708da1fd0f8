"""The experiment driver behind ``experiments/<dataset>/run_experiment.sh``.

DeepLab's ``run_pascal.sh`` as steps that check their own outputs.  The shell script
sets DeepLab's variables and calls ``python -m deeplab_compile.experiment``; everything
is read from the environment:

==================  ==============================================================
``EXP``             the experiment folder (``experiments/voc12``); the shipped configs
                    and ``list/make_lists.py`` are read from ``EXPERIMENT_HOME`` (the
                    script's folder) when ``EXP`` has none
``NET_ID``          ``config/<NET_ID>/{solver,solver2,train,test,crf}.yaml``
``NUM_LABELS``      classes (21 for VOC)
``DATA_ROOT``       the dataset; empty (VOC only): the synthetic set, made once in
                    ``${CACHE_DIR}`` (``${EXP}/cache``)
``DEV_ID``          GPU id, or ``cpu``
``TRAIN_SET_SUFFIX`` ``_aug``: stage 1 trains on ``train${SUFFIX}``, stage 2 on
                    ``trainval${SUFFIX}`` (as DeepLab)
``RUN_TRAIN`` ...   ``RUN_TRAIN``, ``RUN_TEST``, ``RUN_CRF``, ``RUN_EVAL`` (default 1),
                    ``RUN_TRAIN2``, ``RUN_TEST2`` (default 0): 1 runs the step
==================  ==============================================================

and the folders, each overridable: ``CONFIG_DIR``, ``LIST_DIR`` (``${EXP}/list``),
``MODEL_DIR``, ``LOG_DIR``, ``FEATURE_DIR``, ``FEATURE2_DIR``, ``RES_DIR``
(``${EXP}/<folder>/<NET_ID>``).  ``TEST_SET`` (val) and ``TEST_SET2`` (test) name the
lists tested; ``MAX_ITER``, ``MAX_ITER2``, ``SEED``, ``TEST_CROP`` are passed to the
configs with ``-D`` when set; ``NUM_IMAGES``, ``IMAGE_MIN``, ``IMAGE_MAX`` size the
synthetic set; ``LABEL_MAP`` and ``PALETTE`` are the dataset's label mapping
(``cityscapes``, ``ade20k``) and colours; ``CRF_JOBS`` the images the CRF runs at once.

Each step skips itself when its outputs are complete, and otherwise does only what is
missing:

* train: ``<MODEL_DIR>/train_iter_<max_iter>.pt`` exists (``max_iter`` read from the
  solver with the same ``-D`` values); else it resumes from the snapshot with the largest
  iteration number in its name, never from the newest file;
* test: every id of the list has a readable, whole feature file newer than the model;
  else only the missing ids are tested;
* crf: every feature has a CRF PNG newer than it;
* eval: the JSON result is newer than every prediction it reads.

A step that fails stops the run with its name and its log file (exit status 1).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import settings

FEATURE_SUFFIX = "_blob_0.mat"
CRF_KEYS = ("bi_w", "bi_xy_std", "bi_rgb_std", "pos_w", "pos_xy_std")


class StepFailed(Exception):
    def __init__(self, step: str, log: str, detail: str = ""):
        super().__init__(step)
        self.step, self.log, self.detail = step, log, detail


# --------------------------------------------------------------------------- settings

def _env(name: str, default: str = "") -> str:
    v = os.environ.get(name, "")
    return v if v != "" else default


def _flag(name: str, default: bool) -> bool:
    v = os.environ.get(name, "")
    if v == "":
        return default
    return v.strip().lower() not in ("0", "false", "no", "off")


@dataclass
class Settings:
    exp: str
    net_id: str
    num_labels: int
    data_root: str
    synthetic: bool
    dev_id: str
    train_set: str
    train_set2: str
    test_set: str
    test_set2: str
    config_dir: str
    list_dir: str
    model_dir: str
    log_dir: str
    feature_dir: str
    feature2_dir: str
    res_dir: str
    cache_dir: str
    label_map: str
    palette: str
    crf_jobs: int
    run: dict = field(default_factory=dict)
    defines: dict = field(default_factory=dict)       # optional -D values from the environment
    synthetic_params: dict = field(default_factory=dict)
    quiet: bool = False
    home: str = ""

    @classmethod
    def from_env(cls) -> "Settings":
        exp = os.path.abspath(_env("EXP", os.getcwd()))
        data_root = _env("DATA_ROOT")
        synthetic = data_root == ""
        net_id = _env("NET_ID", "deeplab_largefov_tiny" if synthetic else "deeplab_largefov")
        suffix = os.environ.get("TRAIN_SET_SUFFIX", "_aug")
        cache = os.path.abspath(_env("CACHE_DIR", os.path.join(exp, "cache")))
        params = {"num_images": int(_env("NUM_IMAGES", "200")), "min_size": int(_env("IMAGE_MIN", "96")),
                  "max_size": int(_env("IMAGE_MAX", "128")), "seed": int(_env("SEED", "0"))}
        if synthetic:
            data_root = os.path.join(cache, "synthetic_voc12_n{num_images}_{min_size}-{max_size}_s{seed}"
                                     .format(**params))
        d = lambda var, folder: os.path.abspath(_env(var, os.path.join(exp, folder, net_id)))  # noqa: E731
        home = os.path.abspath(_env("EXPERIMENT_HOME", exp))     # the script's folder: shipped configs
        config = os.path.join(exp, "config", net_id)
        if not os.path.isdir(config):
            config = os.path.join(home, "config", net_id)
        list_dir = _env("LIST_DIR", os.path.join(data_root, "list") if synthetic else os.path.join(exp, "list"))
        defines = {k: os.environ[k] for k in ("MAX_ITER", "MAX_ITER2", "SEED", "TEST_CROP")
                   if os.environ.get(k, "") != ""}
        run = {"train": _flag("RUN_TRAIN", True), "test": _flag("RUN_TEST", True),
               "train2": _flag("RUN_TRAIN2", False), "test2": _flag("RUN_TEST2", False),
               "crf": _flag("RUN_CRF", True), "eval": _flag("RUN_EVAL", True)}
        return cls(exp=exp, net_id=net_id, num_labels=int(_env("NUM_LABELS", "21")),
                   data_root=os.path.abspath(data_root), synthetic=synthetic, dev_id=_env("DEV_ID", "0"),
                   train_set="train" + suffix, train_set2="trainval" + suffix,
                   test_set=_env("TEST_SET", "val"), test_set2=_env("TEST_SET2", "val" if synthetic else "test"),
                   config_dir=os.path.abspath(_env("CONFIG_DIR", config)), home=home, list_dir=os.path.abspath(list_dir),
                   model_dir=d("MODEL_DIR", "model"), log_dir=d("LOG_DIR", "log"),
                   feature_dir=d("FEATURE_DIR", "features"), feature2_dir=d("FEATURE2_DIR", "features2"),
                   res_dir=d("RES_DIR", "res"), cache_dir=cache, label_map=_env("LABEL_MAP", "none"),
                   palette=_env("PALETTE", "voc"), crf_jobs=int(_env("CRF_JOBS", str(os.cpu_count() or 1))),
                   run=run, defines=defines, synthetic_params=params, quiet=_flag("QUIET", False))


# --------------------------------------------------------------------------- helpers

def say(text: str) -> None:
    print(text, flush=True)


def declared_vars(path: str) -> set[str]:
    """Names a config can take with -D: its ``vars`` keys and, for a solver, the
    ``${NAME}`` it reads."""
    import yaml
    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = yaml.safe_load(text) or {}
    names = set((doc.get("vars") or {}).keys())
    if "net" in doc:                                  # a solver: its ${...} are read too
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    return names


def define_args(path: str | None, values: dict) -> list[str]:
    """``-D NAME=value`` for the values the config declares (all of them without one)."""
    names = declared_vars(path) if path else set(values)
    out = []
    for k, v in values.items():
        if k in names:
            out += ["-D", f"{k}={v}"]
    return out


def list_entries(path: str) -> list[tuple[str, str, str | None]]:
    """(id, image field, label field or None) of each line of a DeepLab list."""
    out = []
    with open(path, encoding="utf-8") as f:
        for ln in f:
            t = ln.split()
            if not t or t[0].startswith("#"):
                continue
            out.append((os.path.splitext(os.path.basename(t[0]))[0], t[0], t[1] if len(t) > 1 else None))
    return out


def feature_ok(path: str) -> bool:
    """A whole MatWrite file: its header reads and the file holds the array it declares."""
    import scipy.io
    try:
        info = dict((n, s) for n, s, _ in scipy.io.whosmat(path))
    except Exception:
        return False
    shape = info.get("data")
    if not shape:
        return False
    return os.path.getsize(path) >= 128 + 4 * int(np.prod(shape))


def mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def snapshots(prefix: str) -> dict[int, str]:
    """Iteration number -> snapshot path, from the names ``<prefix>_iter_<N>.pt``."""
    folder, base = os.path.split(prefix)
    pat = re.compile(re.escape(base) + r"_iter_(\d+)\.pt$")
    out = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = pat.match(name)
            if m:
                out[int(m.group(1))] = os.path.join(folder, name)
    return out


class Runner:
    def __init__(self, s: Settings):
        self.s = s
        os.makedirs(s.log_dir, exist_ok=True)

    def log_path(self, step: str) -> str:
        return os.path.join(self.s.log_dir, step + ".log")

    def run(self, step: str, cmd: list[str]) -> None:
        """Run one command, its output to ``log/<NET_ID>/<step>.log`` (and the console).
        ``python -m deeplab_compile.<module>`` commands run in this process (one import of
        torch for the whole experiment); anything else runs as a child process."""
        log = self.log_path(step)
        say(f"[{step}] " + " ".join(shlex.quote(c) for c in cmd))
        t0 = time.time()
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(shlex.quote(c) for c in cmd)}\n")
            f.flush()
            tee = _Tee(f, None if self.s.quiet else sys.stdout)
            if cmd[:2] == [sys.executable, "-m"] and cmd[2].startswith("deeplab_compile."):
                rc = self._in_process(cmd[2], cmd[3:], tee)
            else:
                rc = self._child(cmd, tee)
        if rc != 0:
            raise StepFailed(step, log, "\n".join("    " + t for t in tee.tail))
        say(f"[{step}] done in {time.time() - t0:.0f} s")

    @staticmethod
    def _in_process(module: str, argv: list[str], tee: "_Tee") -> int:
        import contextlib
        import importlib
        import traceback
        import torch
        threads = torch.get_num_threads()
        old_argv = sys.argv
        sys.argv = [module.rsplit(".", 1)[-1] + ".py"] + argv
        try:
            with contextlib.redirect_stdout(tee), contextlib.redirect_stderr(tee):
                try:
                    return int(importlib.import_module(module).main(argv) or 0)
                except SystemExit as e:          # argparse errors
                    return e.code if isinstance(e.code, int) else 1
                except Exception:
                    traceback.print_exc()
                    return 1
        finally:
            sys.argv = old_argv
            torch.set_num_threads(threads)       # deeplab-crf sets its own

    @staticmethod
    def _child(cmd: list[str], tee: "_Tee") -> int:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"), bufsize=1)
        try:
            for line in p.stdout:
                tee.write(line)
            return p.wait()
        except KeyboardInterrupt:
            p.wait()
            raise

    def py(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]


class _Tee:
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

    def flush(self) -> None:
        self.log.flush()

    def isatty(self) -> bool:
        return False


# --------------------------------------------------------------------------- steps

def step_data(s: Settings, r: Runner) -> None:
    if s.synthetic:
        p = s.synthetic_params
        marker = os.path.join(s.data_root, "synthetic.json")
        if os.path.isfile(marker):
            say(f"[data] synthetic set ready: {s.data_root}")
            return
        r.run("data", r.py("deeplab_compile.data.synthetic", s.data_root, "--num-images", str(p["num_images"]),
                           "--min-size", str(p["min_size"]), "--max-size", str(p["max_size"]),
                           "--seed", str(p["seed"])))
        return
    if not os.path.isdir(s.data_root):
        raise StepFailed("data", "-", f"    DATA_ROOT {s.data_root} is not a folder")
    need = [x for x in {s.train_set, s.test_set} if not os.path.isfile(os.path.join(s.list_dir, x + ".txt"))]
    if not need:
        return
    maker = os.path.join(s.home, "list", "make_lists.py")
    if not os.path.isfile(maker):
        raise StepFailed("lists", "-", f"    missing {', '.join(n + '.txt' for n in need)} in {s.list_dir}")
    r.run("lists", [sys.executable, maker, "--data-root", s.data_root, "--out", s.list_dir])


def _typed(values: dict) -> dict:
    from .cli.compile import parse_defines
    return parse_defines([f"{k}={v}" for k, v in values.items()])


def _init_weights(s: Settings) -> str | None:
    for name in ("init.pt", "init.caffemodel"):
        p = os.path.join(s.model_dir, name)
        if os.path.isfile(p):
            return p
    return None


def solver_of(s: Settings, stage: int):
    """(solver path, its -D values, the checked solver) of a training stage."""
    from .solver import load_solver
    path = os.path.join(s.config_dir, "solver.yaml" if stage == 1 else "solver2.yaml")
    values = {"NUM_LABELS": s.num_labels, "DATA_ROOT": s.data_root, "LIST_DIR": s.list_dir,
              "TRAIN_SET": s.train_set if stage == 1 else s.train_set2, "CONFIG_DIR": s.config_dir,
              "MODEL_DIR": s.model_dir, "LOG_DIR": s.log_dir, "EXP": s.exp, **s.defines}
    typed = _typed(values)
    names = declared_vars(path)
    sv = load_solver(path, {k: v for k, v in typed.items() if k in names})
    if os.path.isfile(sv.net):                      # the net's own variables go through -D too
        names |= declared_vars(sv.net)
        sv = load_solver(path, {k: v for k, v in typed.items() if k in names})
    return path, {k: v for k, v in values.items() if k in names}, sv


def final_snapshot(sv) -> str:
    """The snapshot a finished run leaves: chosen by the solver's max_iter, by name."""
    return f"{sv.snapshot_prefix}_iter_{sv.max_iter}.pt"


def step_train(s: Settings, r: Runner, stage: int) -> str:
    """Train (or resume, or skip); returns the final snapshot's path."""
    name = "train" if stage == 1 else "train2"
    try:
        solver, values, sv = solver_of(s, stage)
        init = _init_weights(s) if stage == 1 else final_snapshot(solver_of(s, 1)[2])
    except Exception as e:
        raise StepFailed(name, os.path.join(s.config_dir, "solver.yaml" if stage == 1 else "solver2.yaml"),
                         f"    {e}") from None
    final = final_snapshot(sv)
    if os.path.isfile(final):
        say(f"[{name}] complete: {final}")
        return final
    if not s.run[name]:
        raise StepFailed(name, "-", f"    {final} does not exist and RUN_{name.upper()}=0")
    os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
    cmd = r.py("deeplab_compile.cli.train", "--solver", solver, *define_args(None, values),
               "--gpu", s.dev_id, "--no-progress", "--log-dir", os.path.join(s.log_dir, name))
    done = {n: p for n, p in snapshots(sv.snapshot_prefix).items() if n < sv.max_iter}
    if done:
        last = max(done)
        say(f"[{name}] resuming from {done[last]} (iteration {last} of {sv.max_iter})")
        cmd += ["--resume", done[last]]
    elif init and os.path.isfile(init):
        cmd += ["--weights", init]
    elif stage == 2:
        raise StepFailed(name, "-", f"    stage 2 starts from {init}, which does not exist (run stage 1)")
    else:
        say(f"[{name}] no {s.model_dir}/init.pt or init.caffemodel: training from the netdef's fillers")
    r.run(name, cmd)
    if not os.path.isfile(final):
        raise StepFailed(name, r.log_path(name), f"    training ended without {final}")
    return final


def step_test(s: Settings, r: Runner, stage: int, model: str) -> tuple[str, str]:
    """MatWrite features of every id of the test list; returns (list, feature folder)."""
    name = "test" if stage == 1 else "test2"
    test_set = s.test_set if stage == 1 else s.test_set2
    lst = os.path.join(s.list_dir, test_set + ".txt")
    feats = os.path.join(s.feature_dir if stage == 1 else s.feature2_dir, test_set, "fc8")
    if not os.path.isfile(lst):
        raise StepFailed(name, "-", f"    no list {lst}")
    entries = list_entries(lst)
    model_time = mtime(model)
    todo = []
    for e in entries:
        p = os.path.join(feats, e[0] + FEATURE_SUFFIX)
        if not (mtime(p) >= model_time and feature_ok(p)):
            todo.append(e)
    if not todo:
        say(f"[{name}] complete: {len(entries)} feature files in {feats}")
        return lst, feats
    if not s.run[name]:
        raise StepFailed(name, "-", f"    {len(todo)} of {len(entries)} feature files missing in {feats} "
                                    f"and RUN_{name.upper()}=0")
    os.makedirs(feats, exist_ok=True)
    use = lst
    if len(todo) < len(entries):
        use = os.path.join(s.log_dir, f"{name}_todo_{test_set}.txt")
        with open(use, "w", encoding="utf-8") as f:
            f.write("".join(e[1] + (" " + e[2] if e[2] else "") + "\n" for e in todo))
        say(f"[{name}] {len(entries) - len(todo)} of {len(entries)} feature files are complete; "
            f"testing the other {len(todo)}")
    net = os.path.join(s.config_dir, "test.yaml")
    values = {"NUM_LABELS": s.num_labels, "DATA_ROOT": s.data_root, "TEST_LIST": use, "FEATURE_DIR": feats,
              "LIST_DIR": s.list_dir, "TEST_SET": test_set, "EXP": s.exp, **s.defines}
    r.run(name, r.py("deeplab_compile.cli.test", "--net", net, "--weights", model, *define_args(net, values),
                     "--gpu", s.dev_id, "--no-progress"))
    missing = [e[0] for e in entries if not feature_ok(os.path.join(feats, e[0] + FEATURE_SUFFIX))]
    if missing:
        raise StepFailed(name, r.log_path(name), f"    no features for {len(missing)} ids (first: {missing[0]})")
    return lst, feats


def _folder_of(s: Settings, entries, column: int, kind: str, lst: str) -> str:
    """The folder under DATA_ROOT holding every entry's file as ``<id>.<ext>``; when the
    list spreads them over several folders (Cityscapes), a folder of links named by id."""
    dirs = {os.path.dirname(e[column]) for e in entries}
    names_match = all(os.path.splitext(os.path.basename(e[column]))[0] == e[0] for e in entries)
    from .data.listfile import join
    if len(dirs) == 1 and names_match:
        d = dirs.pop()
        return join(s.data_root, d) if d else s.data_root
    farm = os.path.join(s.cache_dir, "by_id", os.path.splitext(os.path.basename(lst))[0], kind)
    os.makedirs(farm, exist_ok=True)
    for e in entries:
        src = join(s.data_root, e[column])
        dst = os.path.join(farm, e[0] + os.path.splitext(src)[1])
        if os.path.realpath(dst) != os.path.realpath(src):
            if os.path.lexists(dst):
                os.remove(dst)
            os.symlink(src, dst)
    return farm


def crf_settings(s: Settings) -> tuple[dict, int]:
    import yaml
    path = os.path.join(s.config_dir, "crf.yaml")
    cfg = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    return cfg, int(cfg.get("iterations", 10))


def step_crf(s: Settings, r: Runner, stage: int, lst: str, feats: str) -> str:
    from .crf import resolve
    name = "crf" if stage == 1 else "crf2"
    cfg, iters = crf_settings(s)
    keys = CRF_KEYS + ("normalization",)
    params = resolve(cfg.get("preset", "deeplab_largefov"), **{k: cfg[k] for k in keys if k in cfg})
    out = os.path.join(feats, params.dirname())
    entries = list_entries(lst)
    stale = []
    for e in entries:
        png = os.path.join(out, e[0] + ".png")
        if mtime(png) < mtime(os.path.join(feats, e[0] + FEATURE_SUFFIX)):
            stale.append(png)
    if not stale:
        say(f"[{name}] complete: {len(entries)} CRF results in {out}")
        return out
    for p in stale:
        if os.path.exists(p):
            os.remove(p)
    images = _folder_of(s, entries, 1, "images", lst)
    cmd = r.py("deeplab_compile.cli.crf", "--features", feats, "--images", images, "--list", lst, "--out", out,
               "--preset", cfg.get("preset", "deeplab_largefov"), "--iterations", str(iters),
               "--palette", s.palette, "--jobs", str(max(1, s.crf_jobs)), "--quiet")
    for k in keys:
        if k in cfg:
            cmd += ["--" + k.replace("_", "-"), str(cfg[k])]
    r.run(name, cmd)
    return out


def step_eval(s: Settings, r: Runner, stage: int, lst: str, pred: str, tag: str) -> dict | None:
    name = ("eval" if stage == 1 else "eval2") + "_" + tag
    entries = list_entries(lst)
    if any(e[2] is None for e in entries):
        say(f"[{name}] {lst} has no labels: nothing to evaluate")
        return None
    test_set = os.path.splitext(os.path.basename(lst))[0]
    out = os.path.join(s.res_dir, test_set, tag + ".json")
    newest = 0.0
    for e in entries:
        newest = max(newest, mtime(os.path.join(pred, e[0] + ".png")),
                     mtime(os.path.join(pred, e[0] + FEATURE_SUFFIX)))
    if mtime(out) >= newest and mtime(out) > 0:
        say(f"[{name}] complete: {out}")
    else:
        gt = _folder_of(s, entries, 2, "labels", lst)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        r.run(name, r.py("deeplab_compile.cli.evaluate", "--pred", pred, "--gt", gt, "--list", lst,
                         "--num-classes", str(s.num_labels), "--label-map", s.label_map, "-o", out,
                         "--no-progress"))
    with open(out, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- report

def table(s: Settings, test_set: str, before: dict, after: dict | None) -> str:
    rows = [("before CRF (fc8)", before)] + ([("after CRF", after)] if after else [])
    lines = [f"{s.net_id} on {test_set} ({before['images']} images, {s.num_labels} classes)",
             f"{'':<18}{'mIOU':>9}{'pixel acc.':>13}"]
    for label, res in rows:
        lines.append(f"{label:<18}{100 * res['miou']:>8.2f}%{100 * res['pixel_accuracy']:>12.2f}%")
    if after:
        lines.append(f"{'CRF gain':<18}{100 * (after['miou'] - before['miou']):>+8.2f} "
                     f"{100 * (after['pixel_accuracy'] - before['pixel_accuracy']):>+11.2f}")
    return "\n".join(lines)


def picture(s: Settings, lst: str, feats: str, crf_dir: str, path: str, count: int = 4) -> str:
    """image | ground truth | before CRF | after CRF, for the first ``count`` ids."""
    from PIL import Image
    from .data.labels import map_labels
    from .data.listfile import join
    from .io.mat import read_scores
    from .io.palette import colorize, read_label_png
    rows, widths = [], []
    for e in list_entries(lst)[:count]:
        img = np.asarray(Image.open(join(s.data_root, e[1])).convert("RGB"))
        h, w = img.shape[:2]
        gt = read_label_png(join(s.data_root, e[2])) if e[2] else np.full((h, w), 255, np.uint8)
        if s.label_map != "none":
            gt = map_labels(gt, s.label_map)
        before = read_scores(os.path.join(feats, e[0] + FEATURE_SUFFIX), h, w).argmax(0)
        after = read_label_png(os.path.join(crf_dir, e[0] + ".png"))
        tiles = [img] + [colorize(np.asarray(x).astype(np.uint8), s.palette)[..., :3] for x in (gt, before, after)]
        gap = np.full((h, 4, 3), 255, np.uint8)
        row = np.concatenate(sum([[t, gap] for t in tiles], [])[:-1], axis=1)
        rows.append(row)
        widths = widths or [w]
    if not rows:
        return ""
    width = max(r.shape[1] for r in rows)
    padded = []
    for r in rows:
        r = np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255)
        padded.append(r)
    head = Image.new("RGB", (width, 14), (255, 255, 255))
    from PIL import ImageDraw
    draw, x = ImageDraw.Draw(head), 0
    for title in ("image", "ground truth", "before CRF", "after CRF"):
        draw.text((x + 2, 1), title, fill=(0, 0, 0))
        x += widths[0] + 4
    padded.insert(0, np.asarray(head))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from .io.atomic import atomic_path
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(padded, axis=0)).save(tmp, format="PNG")
    return path


# --------------------------------------------------------------------------- main

def stage(s: Settings, r: Runner, n: int, model: str) -> str | None:
    """Test, CRF and evaluation of one stage; returns the table (or None)."""
    if not (s.run["test" if n == 1 else "test2"] or s.run["crf"] or s.run["eval"]):
        return None
    lst, feats = step_test(s, r, n, model)
    crf_dir = step_crf(s, r, n, lst, feats) if s.run["crf"] else None
    if not s.run["eval"]:
        return None
    before = step_eval(s, r, n, lst, feats, "fc8")
    if before is None:
        return None
    after = step_eval(s, r, n, lst, crf_dir, "crf") if crf_dir else None
    test_set = os.path.splitext(os.path.basename(lst))[0]
    text = table(s, test_set, before, after)
    base = os.path.join(s.res_dir, test_set)
    with open(os.path.join(base, "summary.txt"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    if crf_dir:
        picture(s, lst, feats, crf_dir, os.path.join(base, "before_after_crf.png"))
    return text


def main(argv: list[str] | None = None) -> int:
    s = Settings.from_env()
    r = Runner(s)
    t0 = time.time()
    say(f"experiment {s.exp}: NET_ID={s.net_id} NUM_LABELS={s.num_labels} DATA_ROOT={s.data_root}"
        + (" (synthetic)" if s.synthetic else "") + f" DEV_ID={s.dev_id}")
    if not os.path.isdir(s.config_dir):
        parent = os.path.dirname(s.config_dir)
        known = sorted(d for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))) \
            if os.path.isdir(parent) else []
        from .netdef.errors import did_you_mean
        hint = did_you_mean(s.net_id, known)
        print(f"run_experiment: error: no config folder {s.config_dir} (NET_ID={s.net_id}); "
              + (hint + " " if hint else "") + "configs here: " + (", ".join(known) or "none"), file=sys.stderr)
        return 2
    try:
        settings.check_all()            # a bad kernel setting fails now, not at the CRF step
    except settings.SettingError as err:
        print(f"run_experiment: error: {err}", file=sys.stderr)
        return 2
    tables = []
    try:
        step_data(s, r)
        if s.run["train"] or s.run["test"] or s.run["crf"] or s.run["eval"]:
            model = step_train(s, r, 1)
            t = stage(s, r, 1, model)
            if t:
                tables.append(t)
        if s.run["train2"] or s.run["test2"]:
            model2 = step_train(s, r, 2)
            if s.run["test2"]:
                t = stage(s, r, 2, model2)
                if t:
                    tables.append(t)
    except StepFailed as e:
        print(f"run_experiment: step '{e.step}' failed; log: {e.log}", file=sys.stderr)
        if e.detail:
            print(e.detail, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run_experiment: interrupted; run it again to resume", file=sys.stderr)
        return 130
    say("")
    for t in tables:
        say(t)
        say("")
    shown = os.path.relpath(s.res_dir) if s.res_dir.startswith(os.getcwd() + os.sep) else s.res_dir
    say(f"results in {shown}; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

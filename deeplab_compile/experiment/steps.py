"""The steps of an experiment: data, train, test, CRF, evaluation.  Each checks its own
outputs first and does only what is missing; its work calls the library functions that
``deeplab-train``, ``deeplab-test``, ``deeplab-crf`` and ``deeplab-eval`` call, and its
log starts with that command line."""
from __future__ import annotations

import json
import os
import re

import numpy as np

from ..crf import resolve
from ..crf.folder import crf_folder
from ..data.datasets import make_lists
from ..data.listfile import join
from ..data.synthetic import NUM_CLASSES as SYNTHETIC_CLASSES, generate
from ..evaluate import evaluate, save_json
from ..io.mat import FEATURE_SUFFIX
# Training and testing (the ties to the training and test code are these three lines).
from ..training.loop import train
from ..training.solver import load_solver
from ..test import run_test
from . import caffe_config, launch
from . import provenance as prov
from .runner import Runner, StepFailed, say
from .settings import Settings, crf_settings, declared_vars, declared_values, define_args, eval_options, typed

CRF_KEYS = ("bi_w", "bi_xy_std", "bi_rgb_std", "pos_w", "pos_xy_std")


# --------------------------------------------------------------------------- files

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


def folder_of(s: Settings, entries, column: int, kind: str, lst: str) -> str:
    """The folder under DATA_ROOT holding every entry's file as ``<id>.<ext>``; when the
    list spreads them over several folders (Cityscapes), a folder of links named by id."""
    dirs = {os.path.dirname(e[column]) for e in entries}
    names_match = all(os.path.splitext(os.path.basename(e[column]))[0] == e[0] for e in entries)
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


# --------------------------------------------------------------------------- data

# folders the dataset's list maker reads besides its image and label folders
LIST_SOURCES = {"voc12": ("ImageSets/Segmentation",)}


def stage_sets(s: Settings) -> list[str]:
    """The lists the steps that run read: stage 1's, and stage 2's when it runs."""
    sets = [s.train_set, s.test_set]
    if s.run["train2"] or s.run["test2"]:
        sets += [s.train_set2] + ([s.test_set2] if s.run["test2"] else [])
    return list(dict.fromkeys(sets))


def check_layout(s: Settings) -> None:
    """Every folder under DATA_ROOT that the steps will read: those the lists name (the
    lists already in LIST_DIR), else those the dataset's list maker reads.  One
    :class:`DataError` names all that are missing."""
    from ..data.errors import DataError
    if s.synthetic:
        return
    if not os.path.isdir(s.data_root):
        raise DataError(f"DATA_ROOT {s.data_root} is not a folder",
                        hint=s.dataset.data_root_hint or "set DATA_ROOT to the dataset folder")
    need: dict[str, list[str]] = {}
    to_make = False
    for name in stage_sets(s):
        lst = os.path.join(s.list_dir, name + ".txt")
        if not os.path.isfile(lst):
            to_make = True
            continue
        for e in list_entries(lst):
            for path in e[1:]:
                if path:
                    folder = os.path.dirname(path).strip("/")
                    need.setdefault(folder, [])
                    if name + ".txt" not in need[folder]:
                        need[folder].append(name + ".txt")
    if to_make:
        for folder in (s.dataset.image_dir, s.dataset.label_dir, *LIST_SOURCES.get(s.dataset.name, ())):
            need.setdefault(folder, []).append("the lists to make")
    missing = sorted(f for f in need if f and not os.path.isdir(os.path.join(s.data_root, f)))
    # a missing folder hides its subfolders: name the top one only
    top = [f for f in missing if not any(f.startswith(m + "/") for m in missing if m != f)]
    if top:
        raise DataError(f"DATA_ROOT {s.data_root} lacks " + ", ".join(
            f"{f}/ (read by {', '.join(need[f])})" for f in top),
            hint=s.dataset.data_root_hint or "point DATA_ROOT at the dataset folder that holds them")


def step_data(s: Settings, r: Runner) -> None:
    if s.synthetic:
        p = s.synthetic_params
        if os.path.isfile(os.path.join(s.data_root, "synthetic.json")):
            say(f"[data] synthetic set ready: {s.data_root}")
            return

        def work():
            generate(s.data_root, **p)
            print(f"{s.data_root}: {p['num_images']} images, {SYNTHETIC_CLASSES} classes "
                  "(list/train.txt, list/val.txt)")
        r.run("data", ["python", "-m", "deeplab_compile.cli.synthetic", s.data_root, "--num-images",
                       str(p["num_images"]), "--min-size", str(p["min_size"]), "--max-size", str(p["max_size"]),
                       "--seed", str(p["seed"])], work)
        return
    if not os.path.isdir(s.data_root):
        raise StepFailed("data", "-", f"    DATA_ROOT {s.data_root} is not a folder")
    need = [x for x in {s.train_set, s.test_set} if not os.path.isfile(os.path.join(s.list_dir, x + ".txt"))]
    record = os.path.join(s.list_dir, prov.RECORD)
    now = {"data_root": s.data_root, "dataset": s.dataset.name, "options": _list_options(s)}
    old = prov.read(record)
    if not need and (old is None or old == now):     # lists written by hand have no record: kept
        return
    if not need:
        say(f"[lists] {s.list_dir} was made from other data ({'; '.join(prov.differences(old, now))}): "
            "making the lists again")

    def work():
        make_lists(s.dataset.name, s.data_root, s.list_dir, **_list_options(s))
        prov.write(record, now)
    r.run("lists", ["python", "-m", "deeplab_compile.data.make_lists", "--dataset", s.dataset.name,
                    "--data-root", s.data_root, "--out", s.list_dir], work)


def _list_options(s: Settings) -> dict:
    return {"sbd": os.environ.get("SBD_ROOT", "")} if s.dataset.name == "voc12" else {}


# --------------------------------------------------------------------------- train

def solver_of(s: Settings, stage: int):
    """(solver path, its -D values, the checked solver) of a training stage."""
    if caffe_config.is_caffe(s.config_dir):         # DeepLab's own prototxts
        return caffe_config.solver_of(s, stage)
    path = os.path.join(s.config_dir, "solver.yaml" if stage == 1 else "solver2.yaml")
    values = {"NUM_LABELS": s.num_labels, "DATA_ROOT": s.data_root, "LIST_DIR": s.list_dir,
              "TRAIN_SET": s.train_set if stage == 1 else s.train_set2, "CONFIG_DIR": s.config_dir,
              "MODEL_DIR": s.model_dir, "LOG_DIR": s.log_dir, "EXP": s.exp, "LABEL_MAP": s.label_map,
              **s.defines}
    t = typed(values)
    names = declared_vars(path)
    sv = load_solver(path, {k: v for k, v in t.items() if k in names})
    if os.path.isfile(sv.net):                      # the net's own variables go through -D too
        names |= declared_vars(sv.net)
        sv = load_solver(path, {k: v for k, v in t.items() if k in names})
    return path, {k: v for k, v in values.items() if k in names}, sv


def final_snapshot(sv) -> str:
    """The snapshot a finished run leaves: chosen by the solver's max_iter, by name."""
    return f"{sv.snapshot_prefix}_iter_{sv.max_iter}.pt"


def _init_weights(s: Settings) -> str | None:
    for name in ("init.pt", "init.caffemodel"):
        p = os.path.join(s.model_dir, name)
        if os.path.isfile(p):
            return p
    return None


def step_train(s: Settings, r: Runner, stage: int) -> str:
    """Train (or resume, or skip); returns the final snapshot's path."""
    name = "train" if stage == 1 else "train2"
    try:
        solver, values, sv = solver_of(s, stage)
        init = _init_weights(s) if stage == 1 else final_snapshot(solver_of(s, 1)[2])
    except Exception as e:
        raise StepFailed(name, os.path.join(s.config_dir, ("solver" if stage == 1 else "solver2")
                                            + (".prototxt" if caffe_config.is_caffe(s.config_dir) else ".yaml")),
                         f"    {e}") from None
    final = final_snapshot(sv)
    record = sv.snapshot_prefix + "." + prov.RECORD
    now = {"data_root": s.data_root,
           "list": prov.file_digest(os.path.join(s.list_dir, (s.train_set if stage == 1 else s.train_set2) + ".txt")),
           "solver": prov.file_digest(solver), "net": prov.file_digest(sv.net if os.path.isfile(sv.net) else None),
           "init": prov.file_digest(init)}
    includes = prov.includes_digest(sv.net if os.path.isfile(sv.net) else None)
    if includes:
        now["includes"] = includes
    made = snapshots(sv.snapshot_prefix)
    if made:
        old = prov.read(record)
        if prov.predates(old, now, "includes"):
            old = None                     # a record from before includes were digested
        if old is None:                    # snapshots from before records were kept: adopt them
            prov.write(record, now)
        elif not prov.matches(record, now):
            shown = final if os.path.isfile(final) else made[max(made)]
            raise prov.StaleOutput(f"{shown} was made from other inputs than this run's: "
                                   + "; ".join(prov.differences(old, now)),
                                   hint=f"set MODEL_DIR to a new folder (or move {os.path.dirname(final)} away) "
                                        "to train on these inputs")
    if os.path.isfile(final):
        say(f"[{name}] complete: {final}")
        return final
    if not s.run[name]:
        raise StepFailed(name, "-", f"    {final} does not exist and RUN_{name.upper()}=0")
    procs = s.devices.procs if s.devices else 1
    if procs > 1:
        check_batch_split(s, sv)
    os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
    log_dir = os.path.join(s.log_dir, name)
    if procs > 1 and caffe_config.is_caffe(s.config_dir):
        # the processes load the solver themselves: as this step reads DeepLab's
        solver = solver_as_read(sv, os.path.join(s.log_dir, name + "_solver.yaml"))
    cmd = ["deeplab-train", "--solver", solver, *define_args(values), "--gpu", s.dev_id, "--no-progress",
           "--log-dir", log_dir]
    start = {}
    done = {n: p for n, p in snapshots(sv.snapshot_prefix).items() if n < sv.max_iter}
    if done:
        last = max(done)
        say(f"[{name}] resuming from {done[last]} (iteration {last} of {sv.max_iter})")
        start = {"resume": done[last]}
    elif init and os.path.isfile(init):
        start = {"weights": init}
    elif stage == 2:
        raise StepFailed(name, "-", f"    stage 2 starts from {init}, which does not exist (run stage 1)")
    else:
        say(f"[{name}] no {s.model_dir}/init.pt or init.caffemodel: training from the netdef's fillers")
    for k, v in start.items():
        cmd += ["--" + k, v]
    if not made:
        prov.write(record, now)

    if procs > 1:                                   # torchrun: one process per device
        args = distributed_args(s, cmd[1:])
        cmd = launch.shown_command(procs, args)

    def work():
        if procs > 1:
            return launch.run(procs, args)
        result = train(sv, gpu=s.dev_id, log_dir=log_dir, progress=False, **start)
        if result.snapshot:
            print(f"iteration {result.iter}, loss {result.loss:.6g}; snapshot {result.snapshot}")
    r.run(name, cmd, work)
    if not os.path.isfile(final):
        raise StepFailed(name, r.log_path(name), f"    training ended without {final}")
    return final


def distributed_args(s: Settings, args: list[str]) -> list[str]:
    """deeplab-train's arguments in several processes: the config's batch is the batch of
    all of them (the papers'), BatchNorm that trains is synchronized, and each process
    takes the GPU of its rank (no --gpu) or the CPU."""
    out = []
    it = iter(args)
    for a in it:
        if a == "--gpu":
            v = next(it)
            if v == "cpu":
                out += [a, v]
        else:
            out.append(a)
    return out + ["--global-batch", "--sync-bn"]


def solver_as_read(sv, path: str) -> str:
    """Write the checked solver ``sv`` (a DeepLab solver.prototxt with its paths and data
    layer read as :func:`caffe_config.solver_of` reads them) as a solver YAML file."""
    import yaml
    from ..io.atomic import atomic_write
    fields = {k: v for k, v in sv.to_dict().items() if v is not None}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write("# the solver of this training step as the experiment read it; written for torchrun's processes\n")
        yaml.safe_dump(fields, f, sort_keys=False)
    return path


def check_batch_split(s: Settings, sv) -> None:
    """The config's batch divides among the training processes: else one line naming
    the config and the fix, before any process starts."""
    from ..training.net import divisors, split_batch, train_ir
    devs = s.devices
    _, spec = train_ir(sv)
    takes = (not caffe_config.is_caffe(s.config_dir) and os.path.isfile(sv.net)
             and "BATCH_SIZE" in declared_vars(sv.net))
    setting = devs.named_by if devs.named_by != "DEV_ID" else "the GPUs of DEV_ID"
    hint = (f"run {divisors(int(spec.batch_size), int(sv.iter_size))} ({setting}), or "
            + (f"set BATCH_SIZE to a multiple of {devs.procs}" if takes
               else f"make the data layer's batch_size a multiple of {devs.procs}"))
    split_batch(sv, spec, devs.procs, hint=hint)


# --------------------------------------------------------------------------- test

def step_test(s: Settings, r: Runner, stage: int, model: str) -> tuple[str, str]:
    """MatWrite features of every id of the test list; returns (list, feature folder)."""
    name = "test" if stage == 1 else "test2"
    test_set = s.test_set if stage == 1 else s.test_set2
    lst = os.path.join(s.list_dir, test_set + ".txt")
    feats = os.path.join(s.feature_dir if stage == 1 else s.feature2_dir, test_set, "fc8")
    if not os.path.isfile(lst):
        raise StepFailed(name, "-", f"    no list {lst}")
    entries = list_entries(lst)
    net = os.path.join(s.config_dir, "test.prototxt" if caffe_config.is_caffe(s.config_dir) else "test.yaml")
    record = os.path.join(feats, prov.RECORD)
    now = {"data_root": s.data_root, "list": prov.file_digest(lst), "net": prov.file_digest(net),
           "model": prov.file_digest(model), "defines": {k: str(v) for k, v in s.defines.items()}}
    if (includes := prov.includes_digest(net)):
        now["includes"] = includes
    if not prov.matches(record, now):
        old = [e for e in entries if os.path.exists(os.path.join(feats, e[0] + FEATURE_SUFFIX))]
        if old:
            say(f"[{name}] the features in {feats} were made from other inputs "
                f"({'; '.join(prov.differences(prov.read(record), now))}): testing again")
            if not s.run[name]:
                raise StepFailed(name, "-", f"    the features in {feats} are stale and RUN_{name.upper()}=0")
        for e in old:
            os.remove(os.path.join(feats, e[0] + FEATURE_SUFFIX))
        prov.write(record, now)
    model_time = mtime(model)
    todo = [e for e in entries
            if not (mtime(p := os.path.join(feats, e[0] + FEATURE_SUFFIX)) >= model_time and feature_ok(p))]
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
    doc, data_args, data_kw, extra = None, [], {}, []
    if caffe_config.is_caffe(s.config_dir):         # DeepLab's own test.prototxt, filled in
        try:
            net, doc = caffe_config.test_net(s, stage, test_set, feats)
        except Exception as e:
            raise StepFailed(name, os.path.join(s.config_dir, "test.prototxt"), f"    {e}") from None
        values = {}
        data_args, data_kw = ["--list", use, "--root", s.data_root], {"list_path": use, "root": s.data_root}
    else:
        values = declared_values(net, {"NUM_LABELS": s.num_labels, "DATA_ROOT": s.data_root, "TEST_LIST": use,
                                       "FEATURE_DIR": feats, "LIST_DIR": s.list_dir, "TEST_SET": test_set,
                                       "EXP": s.exp, **s.defines})
        data_kw = eval_options(net, values)         # v3/v3+: TF DeepLab's eval scales and flip
        if data_kw["scales"] != [1.0] or data_kw["flip"]:
            extra += ["--scales", ",".join(f"{v:g}" for v in data_kw["scales"])] + (["--flip"] if data_kw["flip"] else [])
        if "data" in data_kw:
            extra += ["--preprocess", data_kw["data"]["preprocess"]]
        extra += (["--precision", data_kw["precision"]] if "precision" in data_kw else []) + (
            ["--channels-last"] if data_kw.get("channels_last") else [])

    def work():
        res = run_test(doc if doc is not None else net, model, vars=typed(values), gpu=s.dev_id, progress=False,
                       **data_kw)
        print(f"{res.images} images tested ({res.blob}); {len(res.files)} files written")
    r.run(name, ["deeplab-test", "--net", net, "--weights", model, *data_args, *define_args(values), "--gpu",
                 s.dev_id, "--no-progress", *extra], work)
    missing = [e[0] for e in entries if not feature_ok(os.path.join(feats, e[0] + FEATURE_SUFFIX))]
    if missing:
        raise StepFailed(name, r.log_path(name), f"    no features for {len(missing)} ids (first: {missing[0]})")
    return lst, feats


# --------------------------------------------------------------------------- CRF and evaluation

def step_crf(s: Settings, r: Runner, stage: int, lst: str, feats: str) -> str:
    name = "crf" if stage == 1 else "crf2"
    cfg, iters = crf_settings(s)
    preset = cfg.get("preset", "deeplab_largefov")
    norm = {"normalization": cfg["normalization"]} if "normalization" in cfg else {}
    out = os.path.join(feats, resolve(preset, **{k: cfg[k] for k in CRF_KEYS if k in cfg}, **norm).dirname())
    params = resolve(preset, **{k: float(cfg[k]) for k in CRF_KEYS if k in cfg}, **norm)  # as --bi-w etc. read them
    entries = list_entries(lst)
    record = os.path.join(out, prov.RECORD)
    now = {"data_root": s.data_root, "list": prov.file_digest(lst),
           "features": prov.file_digest(os.path.join(feats, prov.RECORD)),
           "crf": {"preset": preset, "iterations": iters, **{k: str(v) for k, v in cfg.items()}}}
    if not prov.matches(record, now):
        for e in entries:
            png = os.path.join(out, e[0] + ".png")
            if os.path.exists(png):
                os.remove(png)
        prov.write(record, now)
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
    images = folder_of(s, entries, 1, "images", lst)
    jobs = max(1, s.crf_jobs)
    cmd = ["deeplab-crf", "--features", feats, "--images", images, "--list", lst, "--out", out,
           "--preset", preset, "--iterations", str(iters), "--palette", s.palette, "--jobs", str(jobs), "--quiet"]
    for k in CRF_KEYS + ("normalization",):
        if k in cfg:
            cmd += ["--" + k.replace("_", "-"), str(cfg[k])]

    def work():
        from ..crf.folder import set_threads
        set_threads(jobs)
        return crf_folder(feats, images, [e[0] for e in entries], params, out=out, iterations=iters,
                          palette=s.palette, jobs=jobs, quiet=True)
    r.run(name, cmd, work)
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
    record = out[:-len(".json")] + "." + prov.RECORD
    now = {"data_root": s.data_root, "list": prov.file_digest(lst),
           "predictions": prov.file_digest(os.path.join(pred, prov.RECORD)),
           "num_labels": s.num_labels, "label_map": s.label_map}
    if mtime(out) >= newest and mtime(out) > 0 and prov.matches(record, now):
        say(f"[{name}] complete: {out}")
    else:
        gt = folder_of(s, entries, 2, "labels", lst)
        os.makedirs(os.path.dirname(out), exist_ok=True)

        def work():
            res = evaluate(pred, gt, lst, s.num_labels, label_map=s.label_map)
            print(res.table())
            save_json(res, out)
            prov.write(record, now)
            print(f"{res.images} images; results in {out}")
        r.run(name, ["deeplab-eval", "--pred", pred, "--gt", gt, "--list", lst, "--num-classes",
                     str(s.num_labels), "--label-map", s.label_map, "-o", out, "--no-progress"], work)
    with open(out, encoding="utf-8") as f:
        return json.load(f)

"""The order of an experiment's steps: data, stage 1 (train, test, CRF, evaluation),
stage 2; the tables at the end; one-line errors and the exit status (2: a bad setting,
1: a failed step, 130: interrupted)."""
from __future__ import annotations

import os
import sys
import time

from .. import settings as kernel_settings
from ..errors import DeepLabError
from ..netdef.errors import did_you_mean
from .report import picture, table, write_summary
from .devices import Devices, check_visible
from .runner import Runner, StepFailed, say
from .settings import Settings
from .steps import check_layout, step_crf, step_data, step_eval, step_test, step_train


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
    write_summary(os.path.join(base, "summary.txt"), text)
    if crf_dir:
        picture(s, lst, feats, crf_dir, os.path.join(base, "before_after_crf.png"))
    return text


def use_devices(devs: Devices) -> None:
    """Several GPUs: make the listed ones visible (the training processes and the
    one-process steps number them from 0), and check that torch sees them all."""
    if devs.visible is None:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = devs.visible
    import torch
    check_visible(devs, torch.cuda.device_count())


def _error(text: str) -> int:
    print(f"run_experiment: error: {text}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        s = Settings.from_env()
    except DeepLabError as err:
        return _error(str(err))
    except ValueError as err:               # a number variable that is not a number
        return _error(str(err))
    r = Runner(s.log_dir, s.quiet)
    t0 = time.time()
    say(f"experiment {s.exp}: NET_ID={s.net_id} NUM_LABELS={s.num_labels} DATA_ROOT={s.data_root}"
        + (" (synthetic)" if s.synthetic else "") + f" {s.devices.describe()}")
    if not os.path.isdir(s.config_dir):
        parent = os.path.dirname(s.config_dir)
        known = sorted(d for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))) \
            if os.path.isdir(parent) else []
        hint = did_you_mean(s.net_id, known)
        return _error(f"no config folder {s.config_dir} (NET_ID={s.net_id}); "
                      + (hint + " " if hint else "") + "configs here: " + (", ".join(known) or "none"))
    try:
        kernel_settings.check_all()          # a bad kernel setting fails now, not at the CRF step
    except kernel_settings.SettingError as err:
        return _error(str(err))
    try:
        use_devices(s.devices)               # several GPUs: CUDA_VISIBLE_DEVICES, before torch looks
        check_layout(s)                      # every folder the steps read, before the first step
    except DeepLabError as err:
        return _error(str(err))
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
        if e.detail and not e.shown:
            print(e.detail, file=sys.stderr)
        return 1
    except DeepLabError as err:              # outputs made from other inputs (provenance.StaleOutput)
        return _error(str(err))
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

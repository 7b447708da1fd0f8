"""The experiment's settings: DeepLab's variables read from the environment, with the
defaults of the dataset's entry in :mod:`deeplab_compile.data.datasets`, and the configs
they select (which ``-D`` values each config takes, the solver of a stage, the CRF)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..data.datasets import Dataset, get_dataset
from .devices import Devices, from_env as devices_from_env


def _env(name: str, default: str = "") -> str:
    v = os.environ.get(name, "")
    return v if v != "" else default


ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(name: str, default: bool) -> bool:
    """A switch: 1/true/yes/on or 0/false/no/off (any case); anything else is an error."""
    v = os.environ.get(name, "").strip().lower()
    if v == "":
        return default
    if v in ON or v in OFF:
        return v in ON
    from ..data.errors import DataError
    raise DataError(f"{name}={os.environ[name]!r} is not a switch", hint="set it to 1 or 0")


#: environment variables passed with -D to the configs that declare them
DEFINES = ("MAX_ITER", "MAX_ITER2", "SEED", "TEST_CROP", "TRAIN_CROP", "BATCH_SIZE", "TRAIN_OUTPUT_STRIDE",
           "OUTPUT_STRIDE", "EVAL_SCALES", "EVAL_FLIP", "ITER_SIZE", "PRECISION", "CHANNELS_LAST",
           "RESIZE_MIN", "RESIZE_MAX", "RESIZE_FACTOR")


def _layout(name: str) -> str:
    """``CHANNELS_LAST`` as the solver reads it: ``auto``, or a switch written true/false."""
    v = os.environ.get(name, "").strip().lower()
    if v == "auto":
        return v
    if v in ON or v in OFF:
        return "true" if v in ON else "false"
    from ..data.errors import DataError
    raise DataError(f"{name}={os.environ[name]!r} is not a switch or auto", hint="set it to 1, 0 or auto")


def precision_defines(defines: dict, dev_id: str) -> dict:
    """``PRECISION`` and ``CHANNELS_LAST`` as the configs read them: ``CHANNELS_LAST``
    ``auto`` or a switch written true/false; on ``DEV_ID=cpu`` without ``PRECISION``, fp32
    (the configs' bf16 default is meant for GPUs; ``benchmarks/train.py --precision``
    measures bf16 against fp32 on a given CPU)."""
    out = dict(defines)
    if "CHANNELS_LAST" in out:
        out["CHANNELS_LAST"] = _layout("CHANNELS_LAST")
    if dev_id == "cpu":
        out.setdefault("PRECISION", "fp32")
    return out


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
    dataset: Dataset
    run: dict = field(default_factory=dict)
    defines: dict = field(default_factory=dict)       # optional -D values from the environment
    synthetic_params: dict = field(default_factory=dict)
    quiet: bool = False
    home: str = ""
    devices: Devices | None = None                    # DEV_ID, NUM_GPUS, NUM_PROCS (.devices)

    @classmethod
    def from_env(cls) -> "Settings":
        """Raises :class:`~deeplab_compile.data.errors.DataError` for an unknown
        ``DATASET``, or a missing ``DATA_ROOT`` where no synthetic set stands in."""
        ds = get_dataset(_env("DATASET", "voc12"))
        home = os.path.abspath(_env("EXPERIMENT_HOME", os.getcwd()))   # the script's folder: shipped configs
        exp = os.path.abspath(_env("EXP", home))
        data_root = _env("DATA_ROOT")
        synthetic = data_root == ""
        if synthetic and ds.data_root_hint:
            from ..data.errors import DataError
            raise DataError(f"DATA_ROOT is not set; set it to {ds.data_root_hint}")
        net_id = _env("NET_ID", "deeplab_largefov_tiny" if synthetic else ds.net_id)
        suffix = os.environ.get("TRAIN_SET_SUFFIX", ds.train_suffix)
        cache = os.path.abspath(_env("CACHE_DIR", os.path.join(exp, "cache")))
        params = {"num_images": int(_env("NUM_IMAGES", "200")), "min_size": int(_env("IMAGE_MIN", "96")),
                  "max_size": int(_env("IMAGE_MAX", "128")), "seed": int(_env("SEED", "0"))}
        if synthetic:
            data_root = os.path.join(cache, "synthetic_voc12_n{num_images}_{min_size}-{max_size}_s{seed}"
                                     .format(**params))
        d = lambda var, folder: os.path.abspath(_env(var, os.path.join(exp, folder, net_id)))  # noqa: E731
        list_dir = _env("LIST_DIR", os.path.join(data_root, "list") if synthetic else os.path.join(exp, "list"))
        defines = {k: os.environ[k] for k in DEFINES if os.environ.get(k, "") != ""}
        run = {"train": _flag("RUN_TRAIN", True), "test": _flag("RUN_TEST", True),
               "train2": _flag("RUN_TRAIN2", False), "test2": _flag("RUN_TEST2", False),
               "crf": _flag("RUN_CRF", True), "eval": _flag("RUN_EVAL", True)}
        devs = devices_from_env(synthetic=synthetic)
        defines = precision_defines(defines, devs.dev_id)
        return cls(exp=exp, net_id=net_id, num_labels=int(_env("NUM_LABELS", str(ds.num_labels))),
                   data_root=os.path.abspath(data_root), synthetic=synthetic,
                   dev_id=devs.dev_id, devices=devs,
                   train_set="train" + suffix, train_set2="trainval" + suffix,
                   test_set=_env("TEST_SET", "val"), test_set2=_env("TEST_SET2", "val" if synthetic else "test"),
                   config_dir=os.path.abspath(_env("CONFIG_DIR", config_folder(exp, home, net_id))), home=home,
                   list_dir=os.path.abspath(list_dir), model_dir=d("MODEL_DIR", "model"), log_dir=d("LOG_DIR", "log"),
                   feature_dir=d("FEATURE_DIR", "features"), feature2_dir=d("FEATURE2_DIR", "features2"),
                   res_dir=d("RES_DIR", "res"), cache_dir=cache, label_map=_env("LABEL_MAP", ds.label_map),
                   palette=_env("PALETTE", ds.palette), crf_jobs=int(_env("CRF_JOBS", str(os.cpu_count() or 1))),
                   dataset=ds, run=run, defines=defines, synthetic_params=params, quiet=_flag("QUIET", False))


def config_folder(exp: str, home: str, net_id: str) -> str:
    """``config/<NET_ID>`` of the experiment folder, else of the script's folder, else
    the configs the datasets share (``experiments/common/config``).  When none has
    ``NET_ID``, the first of them that exists (its configs are listed in the error)."""
    roots = [os.path.join(exp, "config"), os.path.join(home, "config"),
             os.path.join(os.path.dirname(home), "common", "config")]
    for root in roots:
        if os.path.isdir(os.path.join(root, net_id)):
            return os.path.join(root, net_id)
    return os.path.join(next((r for r in roots if os.path.isdir(r)), roots[1]), net_id)


def typed(values: dict) -> dict:
    """Environment strings read as netdef scalars, as ``-D name=value`` reads them."""
    from ..netdef.parse import parse_scalar
    out = {}
    for k, v in values.items():
        text = str(v).strip()
        parsed = parse_scalar(text)
        out[k] = text if parsed is None else parsed
    return out


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


def declared_values(path: str | None, values: dict) -> dict:
    """The values the config declares (all of them without one)."""
    names = declared_vars(path) if path else set(values)
    return {k: v for k, v in values.items() if k in names}


def define_args(values: dict) -> list[str]:
    """``-D NAME=value`` for each value: the command line a step equals."""
    out = []
    for k, v in values.items():
        out += ["-D", f"{k}={v}"]
    return out


def crf_settings(s: Settings) -> tuple[dict, int]:
    import yaml
    path = os.path.join(s.config_dir, "crf.yaml")
    cfg = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    return cfg, int(cfg.get("iterations", 10))


def eval_options(path: str, values: dict) -> dict:
    """How a test config is run: its ``EVAL_SCALES`` (comma-separated, default 1),
    ``EVAL_FLIP`` (default off), ``PREPROCESS`` (``caffe`` or ``tf``, default the data
    layer's), ``PRECISION`` (default fp32) and ``CHANNELS_LAST`` (on: ``--channels-last``;
    off, ``auto`` or unset: no flag, since on a CPU the test net is lowered to channels-last
    oneDNN calls either way, :mod:`deeplab_compile.lower`), each from the config's ``vars``
    unless ``values`` (the -D values) set it."""
    import yaml
    with open(path, encoding="utf-8") as f:
        own = (yaml.safe_load(f) or {}).get("vars") or {}
    pick = lambda name, default: values.get(name, own.get(name, default))  # noqa: E731
    scales = [float(v) for v in str(pick("EVAL_SCALES", "1")).split(",") if v.strip()]
    flip = str(pick("EVAL_FLIP", False)).strip().lower() in ("1", "true", "yes", "on")
    out = {"scales": scales or [1.0], "flip": flip}
    if pick("PREPROCESS", None):
        out["data"] = {"preprocess": str(pick("PREPROCESS", None))}
    if str(pick("PRECISION", "fp32")).strip().lower() != "fp32":
        out["precision"] = str(pick("PRECISION", "fp32")).strip().lower()
    if str(pick("CHANNELS_LAST", False)).strip().lower() in ON:
        out["channels_last"] = True
    return out

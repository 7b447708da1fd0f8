"""The solver file: Caffe's ``SolverParameter`` as YAML, its schema and its loading.

A solver file (``net`` and ``weights`` relative to the working directory, as in Caffe, else
to the file; the ``data:`` section's ``source`` and ``root_folder`` relative to the file)::

    net: ../../netdef/deeplab_largefov.yaml     # the netdef (train and test phases)
    vars: {num_classes: 21, crop: 321}          # passed to the netdef
    weights: model/init.pt                      # initial weights (.pt / .caffemodel); --weights wins
    data:                                       # the data layer: ImageSegData's keys (data/spec.py)
      source: list/train_aug.txt
      root_folder: /data/VOC2012
      batch_size: 10
      crop_size: 321
      mirror: true
      mean_value: [104.008, 116.669, 122.675]
    base_lr: 0.001
    lr_policy: step        # fixed | step | multistep | poly | exp | inv | sigmoid
    gamma: 0.1
    stepsize: 2000
    max_iter: 6000
    momentum: 0.9
    weight_decay: 0.0005
    iter_size: 1           # gradient accumulation (Caffe divides the summed gradient by it)
    display: 10
    average_loss: 20
    snapshot: 2000
    snapshot_prefix: model/train
    random_seed: 1
    precision: bf16        # fp32 (default) | bf16 | fp16: autocast on the run's device (fp16 adds a grad scaler)
    channels_last: auto    # auto (default): the net and the input batches in torch.channels_last
                           # on a CPU, NCHW on CUDA | true | false

What the fields drive lives beside this module: the rates in :mod:`.lr_policy` (warm-up
included), the update in :mod:`.optim`, hard-pixel mining (``top_k_percent_pixels``,
``hard_example_mining_step``) in :mod:`.mining`, ``sync_bn`` in :mod:`.distributed`,
``precision`` and ``channels_last`` in :mod:`.precision`.

:func:`load_solver` reads a YAML file, or a Caffe ``solver.prototxt`` mapped onto these
fields by :mod:`deeplab_compile.caffe.solver`; :func:`convert_caffe` checks such a mapping
for ``deeplab-convert``, so a converted file is one this loader accepts.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import DeepLabError, Loc
from ..schema import P
from ..netdef.errors import did_you_mean, near_miss
from ..netdef.parse import Map, load, loc_of
from .lr_policy import POLICIES, learning_rate
from .precision import CHANNELS_LAST, PRECISIONS


class SolverError(DeepLabError):
    """A solver file that cannot be used: unknown or mistyped field, missing value."""


# name -> schema.  ``P`` is the layer parameter schema; its errors go through _Section.
SCHEMA: dict[str, P] = {
    "net": P("str", doc="netdef path"),
    "vars": P("dict", {}, doc="netdef variables"),
    "weights": P("str", "", doc="initial weights (.pt state dict, snapshot or .caffemodel)"),
    "data": P("dict", {}, doc="data layer keys (ImageSegData), override the netdef's"),
    "type": P("enum", "sgd", choices=("sgd",)),
    "base_lr": P("float", min=0.0),
    "lr_policy": P("enum", "fixed", choices=POLICIES),
    "gamma": P("float", None),
    "power": P("float", None),
    "stepsize": P("int", None, min=1),
    "stepvalue": P("ints", [], min=0),
    "max_iter": P("int", min=0),
    "momentum": P("float", 0.0, min=0.0),
    "weight_decay": P("float", 0.0, min=0.0),
    "regularization_type": P("enum", "l2", choices=("l1", "l2")),
    "clip_gradients": P("float", -1.0),
    "iter_size": P("int", 1, min=1),
    "display": P("int", 0, min=0),
    "average_loss": P("int", 1, min=1),
    "snapshot": P("int", 0, min=0),
    "snapshot_prefix": P("str", ""),
    "snapshot_after_train": P("bool", True),
    "random_seed": P("int", -1),
    "solver_mode": P("enum", "gpu", choices=("cpu", "gpu"), doc="accepted; --gpu picks the device"),
    "device_id": P("int", 0, min=0),
    "log_dir": P("str", "", doc="text log, TensorBoard events, loss plot (default: log/ beside the snapshots)"),
    "test_interval": P("int", 0, min=0, doc="evaluate on test_data every N iterations (0: never)"),
    "test_iter": P("int", 0, min=0, doc="batches per evaluation (0: the whole list)"),
    "test_data": P("dict", {}, doc="data keys for the periodic evaluation"),
    "sync_bn": P("bool", False, doc="SyncBatchNorm across processes under torchrun"),
    "warmup_iter": P("int", 0, min=0),
    "warmup_lr": P("float", 0.0, min=0.0),
    "warmup_method": P("enum", "constant", choices=("constant", "linear")),
    "top_k_percent_pixels": P("float", 1.0, min=0.0, max=1.0),
    "hard_example_mining_step": P("int", 0, min=0),
    "precision": P("enum", "fp32", choices=PRECISIONS,
                   doc="fp32, or bf16/fp16 autocast on the run's device (fp16 with a grad scaler)"),
    "channels_last": P("any", "auto", doc="auto (channels_last on a CPU, NCHW on CUDA), true or false: "
                       "the net and the input batches in torch.channels_last"),
}


class _Section:
    """Adapts the schema's ``layer.error(...)`` calls to solver errors at file:line."""

    def __init__(self, node: Any, path: str):
        self.node, self.path = node, path

    def loc(self, key: str | None = None) -> Loc | None:
        return loc_of(self.node, key) or Loc(self.path)

    def error(self, message: str, *, key: str | None = None, hint: str | None = None, cls=None):
        msg = message.replace("parameter '", "field '", 1) if message.startswith("parameter '") else message
        return SolverError(msg, loc=self.loc(key), hint=hint)


@dataclass
class Solver:
    """A checked solver file.  ``path`` is where it was read from; ``locs`` the position
    of each field, for later errors (a bad net path, bad data keys)."""

    path: str
    net: str
    base_lr: float
    max_iter: int
    vars: dict = field(default_factory=dict)
    weights: str = ""
    data: Any = field(default_factory=dict)
    type: str = "sgd"
    lr_policy: str = "fixed"
    gamma: float | None = None
    power: float | None = None
    stepsize: int | None = None
    stepvalue: list = field(default_factory=list)
    momentum: float = 0.0
    weight_decay: float = 0.0
    regularization_type: str = "l2"
    clip_gradients: float = -1.0
    iter_size: int = 1
    display: int = 0
    average_loss: int = 1
    snapshot: int = 0
    snapshot_prefix: str = ""
    snapshot_after_train: bool = True
    random_seed: int = -1
    solver_mode: str = "gpu"
    device_id: int = 0
    log_dir: str = ""
    test_interval: int = 0
    test_iter: int = 0
    test_data: Any = field(default_factory=dict)
    sync_bn: bool = False
    warmup_iter: int = 0
    warmup_lr: float = 0.0
    warmup_method: str = "constant"
    top_k_percent_pixels: float = 1.0
    hard_example_mining_step: int = 0
    precision: str = "fp32"
    channels_last: bool | str = "auto"      # "auto", True or False (precision.resolve_channels_last)
    locs: dict = field(default_factory=dict, repr=False)
    defines: dict = field(default_factory=dict, repr=False)     # -D overrides
    used_vars: set = field(default_factory=set, repr=False)     # names ${...} in the solver read

    def net_vars(self, declared: Mapping[str, Any], *, sed: bool = False) -> dict:
        """The variables for the netdef: ``vars`` and ``-D`` values whose names the netdef
        declares.  A name that neither the netdef declares nor a ``${...}`` of the solver
        reads is an error (a typo would otherwise pass silently).  With ``sed`` (a Caffe
        prototxt net, which takes DeepLab's one variable set as sed does) such a name is
        ignored with a note, unless it is a near miss of a name the net uses."""
        out = {}
        unused = []
        for name, value in self.vars.items():
            if name in declared:
                out[name] = value
            elif sed and name not in self.used_vars and near_miss(str(name), list(declared)) is None:
                unused.append(str(name))
            elif name not in self.used_vars:
                where = "-D" if name in self.defines else "vars"
                raise SolverError(f"variable '{name}' ({where}) is not a variable of the netdef and not "
                                  "used by the solver", loc=self.locs.get("vars") if where == "vars" else None,
                                  hint=did_you_mean(str(name), list(declared))
                                  or "netdef variables: " + (", ".join(declared) or "none"))
        if unused:
            print(f"note: {self.net} uses no " + ", ".join("${%s}" % n for n in unused)
                  + "; -D ignored for it (as sed would)", file=sys.stderr)
        return out

    def lr(self, it: int) -> float:
        return learning_rate(self, it)

    def error(self, message: str, key: str | None = None, hint: str | None = None) -> SolverError:
        return SolverError(message, loc=self.locs.get(key) or Loc(self.path), hint=hint)

    def to_dict(self) -> dict:
        """The fields as plain Python values (no source positions)."""
        return {k: _plain(getattr(self, k)) for k in SCHEMA}


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(value: Any, env: Mapping[str, Any], sec: _Section, key: str, used: set | None = None) -> Any:
    """``${NAME}`` in solver strings, from ``-D`` overrides, the solver's ``vars``, then the
    environment (``${EXP}`` set by an experiment script)."""
    if isinstance(value, str):
        if used is not None:
            used.update(m.group(1) for m in _VAR.finditer(value))

        def rep(m):
            if m.group(1) not in env:
                raise sec.error(f"undefined variable '{m.group(1)}' in field '{key}'", key=key,
                                hint=did_you_mean(m.group(1), list(env)) or "define it in 'vars' or with -D")
            return str(env[m.group(1)])
        whole = _VAR.fullmatch(value)
        if whole and whole.group(1) in env:
            return env[whole.group(1)]
        return _VAR.sub(rep, value)
    if isinstance(value, Map):
        out = Map({k: _substitute(v, env, _Section(value, sec.path), k, used) for k, v in value.items()},
                  loc=value.loc, key_locs=value.key_locs)
        return out
    if isinstance(value, list):
        return [_substitute(v, env, sec, key, used) for v in value]
    return value


def _check_defined(doc: Mapping, env: Mapping[str, Any], sec: _Section) -> None:
    """Every ``${NAME}`` the fields read is defined and not a required ``~``: one error
    names all that are not, at the first place one is read."""
    missing: list[str] = []
    first: tuple[Any, Any, str] | None = None

    def walk(value, container, key, field):
        nonlocal first
        if isinstance(value, str):
            for name in _VAR.findall(value):
                if env.get(name) is None and name not in missing:
                    missing.append(name)
                    first = first or (container, key, field)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, value, k, field)
        elif isinstance(value, list):
            for v in value:
                walk(v, container, key, field)

    for key in doc:
        if key != "vars":
            walk(doc[key], doc, key, key)
    if not missing:
        return
    container, key, field = first
    what = (f"undefined variable '{missing[0]}' in field '{field}'" if len(missing) == 1 else
            "undefined variables " + ", ".join(f"'{n}'" for n in missing) + f" (the first in field '{field}')")
    hint = did_you_mean(missing[0], [k for k in env if env[k] is not None]) if len(missing) == 1 else None
    raise SolverError(what,
                      loc=loc_of(container, key) if isinstance(container, Map) else loc_of(doc, field),
                      hint=hint or "give " + ("it" if len(missing) == 1 else "them") + " with "
                      + " ".join(f"-D {n}=VALUE" for n in missing) + ", or define in 'vars'")


def parse_solver(doc: Mapping, path: str, overrides: Mapping[str, Any] | None = None) -> Solver:
    """Check a parsed solver document (from :func:`deeplab_compile.netdef.parse.loads`)."""
    sec = _Section(doc, path)
    if not isinstance(doc, Mapping):
        raise SolverError("a solver file must be a mapping of fields", loc=Loc(path))
    values: dict[str, Any] = {}
    for key in doc:
        if key not in SCHEMA:
            hint = did_you_mean(str(key), SCHEMA)
            raise sec.error(f"unknown solver field '{key}'", key=key,
                            hint=hint or "known fields: " + ", ".join(sorted(SCHEMA)))
    raw_vars = doc.get("vars") or {}
    if not isinstance(raw_vars, Mapping):
        raise sec.error("field 'vars' must be a mapping", key="vars", hint="write 'vars: {num_classes: 21}'")
    net_env = {**dict(raw_vars), **dict(overrides or {})}
    env = {**os.environ, **net_env}
    _check_defined(doc, env, sec)
    used: set = set()
    for key, p in SCHEMA.items():
        if key in doc:
            v = doc[key]
            if key != "vars":
                v = _substitute(v, env, sec, key, used)
            if p.kind == "dict" and v is None:
                v = {}
            coerced = _channels_last(v, sec) if key == "channels_last" else p.coerce(key, v, sec)
            values[key] = v if p.kind == "dict" else coerced
        elif p.required:
            raise sec.error(f"missing required field '{key}'", hint=f"add '{key}: ...'")
        else:
            values[key] = list(p.default) if isinstance(p.default, list) else (
                dict(p.default) if isinstance(p.default, dict) else p.default)
    values["vars"] = net_env
    s = Solver(path=path, locs={k: loc_of(doc, k) for k in doc}, defines=dict(overrides or {}), used_vars=used,
               **values)
    _check(s, sec)
    return s


def _channels_last(value: Any, sec: _Section) -> bool | str:
    """``channels_last``: ``auto``, or true/false (YAML booleans, or those words as strings,
    as ``-D CHANNELS_LAST=true`` gives them); "auto" or a bool."""
    text = ("true" if value else "false") if isinstance(value, bool) else (
        value.strip().lower() if isinstance(value, str) else None)
    if text not in CHANNELS_LAST:
        raise sec.error(f"field 'channels_last' must be one of {', '.join(CHANNELS_LAST)}, got {value!r}",
                        key="channels_last", hint="write 'channels_last: auto' (channels_last on a CPU, NCHW "
                        "on CUDA), 'channels_last: true' or 'channels_last: false'")
    return "auto" if text == "auto" else text == "true"


def _check(s: Solver, sec: _Section) -> None:
    need = {"step": ("gamma", "stepsize"), "multistep": ("gamma", "stepvalue"), "exp": ("gamma",),
            "inv": ("gamma", "power"), "poly": ("power",), "sigmoid": ("gamma", "stepsize")}
    for k in need.get(s.lr_policy, ()):
        if getattr(s, k) in (None, []):
            raise sec.error(f"lr_policy '{s.lr_policy}' needs '{k}'", key="lr_policy",
                            hint=f"add '{k}: ...' (see Caffe's SGDSolver::GetLearningRate)")
    if s.lr_policy == "multistep" and any(b <= a for a, b in zip(s.stepvalue, s.stepvalue[1:])):
        raise sec.error("'stepvalue' must increase strictly", key="stepvalue")
    if s.lr_policy == "poly" and s.max_iter == 0:
        raise sec.error("lr_policy 'poly' needs max_iter > 0", key="max_iter")
    if s.hard_example_mining_step and s.top_k_percent_pixels == 1.0:
        raise sec.error("hard_example_mining_step without top_k_percent_pixels < 1",
                        key="hard_example_mining_step", hint="set top_k_percent_pixels, e.g. 0.25")
    if s.top_k_percent_pixels <= 0:
        raise sec.error("top_k_percent_pixels must be in (0, 1]", key="top_k_percent_pixels")
    for key in ("data", "test_data"):
        if getattr(s, key):
            from ..data.spec import check_section
            check_section(getattr(s, key), key)


def load_solver(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Solver:
    """Read and check a solver file: YAML, or a Caffe ``solver.prototxt`` (read with
    :func:`deeplab_compile.caffe.solver.convert`, its ``${VAR}`` placeholders filled like
    a YAML solver's).  ``overrides`` set ``vars`` (``-D name=value``)."""
    path = os.fspath(path)
    try:
        doc = _load_caffe(path) if path.lower().endswith(".prototxt") else load(path)
    except DeepLabError as e:
        raise SolverError(str(e)) from None
    s = parse_solver(doc, path, overrides)
    return s


def _load_caffe(path: str) -> Map:
    from ..caffe.solver import convert
    from ..netdef.parse import read_text
    fields, _notes, locs = convert(read_text(path), path)
    return Map(fields, loc=Loc(path, 1, 1), key_locs=locs)


def resolve_path(s: Solver, rel: str, *, must_exist: bool = True) -> str:
    """A path from the solver: as given (Caffe: the working directory), else beside the
    solver file."""
    if not rel or os.path.isabs(rel) or os.path.exists(rel) or not must_exist:
        return rel
    alt = os.path.join(os.path.dirname(os.path.abspath(s.path)), rel)
    return alt if os.path.exists(alt) else rel


def convert_caffe(text: str, filename: str) -> tuple[dict, list[str]]:
    """A Caffe ``solver.prototxt`` as solver fields: :func:`deeplab_compile.caffe.solver.convert`
    maps the SolverParameter, and the fields are checked here as a solver file would be,
    errors pointing at the prototxt line of the field.  ``${VAR}`` placeholders stand
    for themselves while checking.  Returns ``(fields, notes)`` for
    :func:`deeplab_compile.caffe.solver.to_yaml`."""
    from ..caffe.solver import convert
    fields, notes, locs = convert(text, filename)
    doc = Map(fields, loc=Loc(filename, 1, 1), key_locs=locs)
    names = set()
    for v in fields.values():
        if isinstance(v, str):
            names.update(_VAR.findall(v))
    parse_solver(doc, filename, overrides={n: "${" + n + "}" for n in names})
    return fields, notes

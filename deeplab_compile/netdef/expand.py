"""Expansion: a parsed netdef in, a flat list of layers out (pure: NetDef -> NetDef).

``expand(doc)`` follows ``include``, resolves ``vars``, calls templates, unrolls
``repeat`` and substitutes every ``${...}``.  ``filter_phase(doc, phase)`` then keeps
the layers of one phase.  Both are idempotent: running either twice changes nothing.

The language
============

Top-level keys: ``name``, ``vars``, ``inputs``, ``outputs``, ``include``, ``templates``,
``layers``.  Any other key is an error.  ``name`` defaults to the file name without its
suffix.  The expanded document has exactly ``name``, ``vars`` (the final values),
``inputs`` and ``outputs`` (when given) and ``layers``.

**Variables.**  ``vars: {num_classes: 21, crop: 321, half: "${crop / 2}"}``.  A value is
an integer, a float, a boolean or text, or a table (a mapping of names or integers to
such values, read with ``${table[key]}``); text may use ``${...}`` to refer to other
variables, in any order (a cycle is an error that names the variables).  Names are
identifiers (``[A-Za-z_][A-Za-z0-9_]*``).  ``overrides`` (``-D name=value`` on the command
line) replace values; overriding a variable the netdef does not define is an error.
A variable whose value is ``~`` (null) is *required*: it has no default and must be
given as an override; using it without one is an error that names it (a prototxt's
``${DATA_ROOT}`` placeholders are declared this way).  A required variable that is never
used may stay unset; it comes out as ``~`` in the expanded ``vars``.

**Expressions.**  ``${expr}`` holds variable names, integers, ``+ - * / // %``, unary
minus and parentheses; nothing is ever ``eval``-ed.  ``/`` and ``//`` are both floor
division on integers (``${crop / 2}`` with crop 321 is 160), as in Caffe's size
formulas; ``%`` is the matching remainder.  Arithmetic on anything but an integer is
an error.  A value that is exactly one ``${...}`` takes the expression's value and type:
an integer, or for a bare name the variable's own value (``lr: ${base_lr}`` stays a
float).  Inside longer text the value is written as text: ``name: "res4b${i}"``.
Substitution reaches into nested lists and mappings (``weight_filler: {std: ${s}}``);
keys are never substituted.  ``$$`` is a literal ``$``; a ``$`` followed by anything
other than ``{`` or ``$`` stays as it is.

**Includes.**  ``include: lib/vgg16.yaml`` or a list of paths, looked up relative to the
directory of the file that includes them (``base_dir`` for text given to ``loads``),
then in each folder of ``DEEPLAB_NETDEF_PATH``, then in the installed zoo
(:mod:`.search`).  An included
file may define only ``vars``, ``templates`` and ``include``.  Its variables are
defaults: the including file's own variables and the overrides win, and among
included files the first definition (in include order, depth first) wins.  A file
included twice (by two libraries) is read once; a template defined in two different
files is an error; an include cycle is an error that lists the chain.

**Templates.**  ::

    templates:
      conv_relu:
        params: {name: ~, bottom: ~, num_output: 64, kernel: 3}   # ~ = required
        layers:
          - {name: "${name}", type: Convolution, bottom: "${bottom}",
             num_output: "${num_output}", kernel_size: "${kernel}", pad: "${kernel / 2}"}
          - {name: "${name}_relu", type: ReLU, bottom: "${name}", top: "${name}"}

Called with ``- use: conv_relu`` and ``with: {name: conv1, bottom: data}``.  Arguments
are evaluated where the call is written; missing required or unknown arguments are
errors.  Defaults are evaluated at the call, in declaration order, and may use the
netdef's variables and the parameters bound before them.  A template body sees the
netdef's variables and its own parameters (parameters shadow variables) but not the
caller's loop variables: templates are lexically scoped.  A body may call templates
and use ``repeat``; calls nest at most :data:`MAX_TEMPLATE_DEPTH` deep.  An optional
``phase:`` on the call applies to every layer it produces; a produced layer with the
other phase is an error.

**Repeat.**  ``- repeat: N`` with either ``use:`` + ``with:`` or an inline ``layers:``
list.  The index ``${i}`` (``var: j`` renames it) runs from ``start`` (default 1) to
``start + N - 1``; ``N`` and ``start`` may be expressions, ``N`` must be an integer from
1 to :data:`MAX_REPEAT`.

**Limits.**  An expansion takes at most :data:`MAX_STEPS` steps (layers, template calls
and repeat iterations) and makes at most :data:`MAX_LAYERS` layers; substitution
produces at most :data:`MAX_VALUES` values (mappings, lists and scalars, every copy of a
template argument or of a whole-value ``${...}`` counted) and :data:`MAX_CHARS`
characters of text (each text at most ``expr.MAX_TEXT``).  So aliases, arguments and
text that multiply stop with a located error, long before time or memory run out.

**Layers.**  Each entry is a mapping with ``name`` and ``type`` (text after
substitution), or a ``use:`` / ``repeat:`` entry.  ``bottom`` and ``top`` are text or a
list of text; ``bottom`` defaults to ``[]`` and ``top`` to ``[name]`` (an explicit
``top: []`` stays empty).  ``phase`` is ``train`` or ``test`` in any case and comes out
lower case.  ``param`` is a mapping or a list of mappings and comes out as a list.
Every other key is a layer parameter; it passes through unchecked (the compiler checks
it against the layer type).  The output layer's keys come in the order ``name``,
``type``, ``bottom``, ``top``, ``phase``, ``param``, then the rest as written.

**Positions.**  Every error is a :class:`NetDefError` subclass located at the offending
node (a key's position when one key's value is wrong, inside the text for a bad
``${...}``).  Layers made from templates keep the template body's positions, and
errors inside a template name the call.

**Idempotence.**  The expanded document is marked (``Map.expanded``); expanding it again
copies its text literally, so a ``$`` produced by ``$$`` is never read again as
``${...}``.  ``parse.dump`` writes an expanded document back as text with ``$``
escaped, so reading and expanding that text gives the same document.
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
from typing import Any

from .errors import (IncludeError, Loc, NetDefError, NetDefSyntaxError, ParameterError,
                     TemplateError, VariableError, did_you_mean, near_miss)
from .expr import IDENT_RE, Scope, substitute_text
from .nodes import Map, Seq, loc_of, value_pos
from .parse import load
from . import search
from .search import find_include

__all__ = ["expand", "filter_phase", "note_call_site", "TOP_KEYS", "MAX_TEMPLATE_DEPTH", "MAX_REPEAT",
           "MAX_STEPS", "MAX_LAYERS", "MAX_VALUES", "MAX_CHARS"]

TOP_KEYS = ("name", "vars", "inputs", "outputs", "preprocess", "include", "templates", "layers")
INCLUDE_KEYS = ("vars", "templates", "include")
TEMPLATE_KEYS = ("params", "layers")
CALL_KEYS = ("use", "with", "phase")
REPEAT_KEYS = ("repeat", "use", "with", "layers", "var", "start", "phase")
PHASES = ("train", "test")

MAX_TEMPLATE_DEPTH = 50
MAX_REPEAT = 10_000
MAX_STEPS = 100_000
MAX_LAYERS = 5_000       # layers of the expanded net (DeepLab's largest, ResNet-101 MSC: about 1,400)
MAX_VALUES = 150_000     # values substitution may produce (the zoo's largest net: about 30,000)
MAX_CHARS = 2 ** 22      # characters of text substitution may make in all (the zoo's: under 200,000)
_MAX_VAR_DEPTH = 200


# ---------------------------------------------------------------- small helpers

def _keys_hint(word: str, choices, what: str) -> str:
    return did_you_mean(word, choices) or f"{what}: {', '.join(choices)}"


def _check_keys(node: dict, allowed, where: str, cls=NetDefSyntaxError, extra_hint=None) -> None:
    for key in node:
        if key not in allowed:
            hint = (extra_hint(key) if extra_hint else None) or _keys_hint(
                str(key), allowed, "allowed keys are")
            raise cls(f"unknown key '{key}' in {where}", loc=loc_of(node, key), hint=hint)


def _copy(value: Any) -> Any:
    """A deep copy that keeps positions (Map/Seq come out as new Map/Seq)."""
    if isinstance(value, dict):
        out = Map(loc=getattr(value, "loc", None), key_locs=getattr(value, "key_locs", None),
                  value_locs=getattr(value, "value_locs", None))
        for k, v in value.items():
            out[k] = _copy(v)
        return out
    if isinstance(value, list):
        return Seq([_copy(v) for v in value], loc=getattr(value, "loc", None),
                   item_locs=getattr(value, "item_locs", None),
                   value_locs=getattr(value, "value_locs", None))
    return value


def _size(value: Any, limit: int) -> int:
    """The values in ``value`` (itself, and every item of its lists and mappings); stops
    counting past ``limit``."""
    n, stack = 0, [value]
    while stack and n <= limit:
        v = stack.pop()
        n += 1
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n


def _is_int(value: Any) -> bool:
    return type(value) is int


def _str_list(value: Any) -> list[str] | None:
    """``"a"`` -> ``["a"]``, a list of non-empty text -> itself, else None."""
    if isinstance(value, str):
        return [value] if value else None
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    return None


def _blob_seq(names: list[str], body: Map, key: str) -> Seq:
    value = body.get(key)
    if isinstance(value, list):
        return Seq(names, loc=getattr(value, "loc", None),
                   item_locs=getattr(value, "item_locs", None))
    where = loc_of(body, key)
    return Seq(names, loc=where, item_locs=[where] * len(names) if where else None)


def _phase(value: Any) -> str | None:
    if isinstance(value, str) and value.lower() in PHASES:
        return value.lower()
    return None


class _Vars(dict):
    """The netdef's raw variable definitions, resolved on first use."""

    def __init__(self, literal: bool):
        super().__init__()
        self.literal = literal
        self.where: dict[str, tuple[Map | None, str]] = {}   # name -> (container, key)
        self.done: dict[str, Any] = {}
        self.stack: list[str] = []
        self.on_text = None          # called with the length of each text made by substitution

    def define(self, name: str, value: Any, container: Any, key: str) -> None:
        self[name] = value
        self.where[name] = (container, key)

    def resolve(self, name: str) -> Any:
        if name in self.done:
            return self.done[name]
        container, key = self.where[name]
        if name in self.stack:
            cycle = self.stack[self.stack.index(name):] + [name]
            raise VariableError("variables depend on each other in a cycle: "
                                + " -> ".join(cycle), loc=loc_of(container, key),
                                hint="give one of them a plain value")
        if len(self.stack) >= _MAX_VAR_DEPTH:
            raise VariableError(f"variable definitions nest deeper than {_MAX_VAR_DEPTH}",
                                loc=loc_of(container, key), hint="simplify the variables")
        raw = self[name]
        if raw is None:
            # every required variable still unset, not only this one: one run names them all
            missing = [name] + [n for n in self if n != name and self[n] is None]
            if len(missing) == 1:
                raise VariableError(f"variable '{name}' is required but not given", loc=loc_of(container, key),
                                    hint=f"give it on the command line: -D {name}=VALUE")
            raise VariableError("variables " + ", ".join(f"'{n}'" for n in missing) + " are required but not given",
                                loc=loc_of(container, key),
                                hint="give them on the command line: " + " ".join(f"-D {n}=VALUE" for n in missing))
        self.stack.append(name)
        try:
            if isinstance(raw, str) and not self.literal:
                base, exact = value_pos(container, key) if container is not None else (None, None)
                value = substitute_text(raw, Scope(self), base, exact)
                if isinstance(value, str) and "$" in raw and self.on_text is not None:
                    self.on_text(len(value), base)
                if not isinstance(value, (bool, int, float, str)):
                    raise VariableError(f"variable '{name}' must be a number, boolean or text",
                                        loc=loc_of(container, key),
                                        hint="variables hold single values")
            else:
                value = raw
        finally:
            self.stack.pop()
        self.done[name] = value
        return value


class _Template:
    def __init__(self, name: str, body: Map, container: Map):
        self.name = name
        self.body = body
        self.loc = loc_of(container, name)
        params = body.get("params")
        self.params: dict = params if params is not None else Map()
        self.layers = body["layers"]


# ---------------------------------------------------------------- the expander

class _Expander:
    def __init__(self, literal: bool):
        self.literal = literal
        self.vars = _Vars(literal)
        self.vars.on_text = self.count_text
        self.chars = 0
        self.templates: dict[str, _Template] = {}
        self.loaded: set[str] = set()
        self.root_dir = os.getcwd()
        self.steps = 0
        self.values = 0
        self.out: list[Map] = []
        self.calls: dict[int, list] = {}     # index in out -> the template calls that made it, innermost first
        self.globals = Scope(self.vars)

    # -- substitution

    def count(self, n: int, loc: Loc | None) -> None:
        """Add ``n`` produced values; past :data:`MAX_VALUES` a located TemplateError."""
        self.values += n
        if self.values > MAX_VALUES:
            raise TemplateError(f"the expansion is too large (more than {MAX_VALUES:,} values "
                                "produced by substitution)", loc=loc,
                                hint="check for large lists or aliases passed to templates, "
                                     "repeated or inserted with ${...} many times")

    def count_text(self, n: int, loc: Loc | None) -> None:
        """Add ``n`` characters of text made by substitution; past :data:`MAX_CHARS` in
        all, a located VariableError."""
        self.chars += n
        if self.chars > MAX_CHARS:
            raise VariableError(f"substitution made more than {MAX_CHARS:,} characters of text in all",
                                loc=loc, hint="check for long text variables used in many places "
                                              "or in a repeat")

    def copy(self, value: Any, loc: Loc | None) -> Any:
        """:func:`_copy` of a whole-value ``${...}`` result, its values counted first."""
        if isinstance(value, (dict, list)):
            self.count(_size(value, MAX_VALUES - self.values + 1), loc)
            return _copy(value)
        return value

    def subst(self, value: Any, scope: Scope, container: Any = None, key: Any = None) -> Any:
        """``value`` (found at ``container[key]``) with every ``${...}`` replaced."""
        self.values += 1
        if self.values > MAX_VALUES:
            self.count(0, loc_of(container, key) if container is not None else loc_of(value))
        if isinstance(value, str):
            if self.literal or "$" not in value:
                return value
            base, exact = value_pos(container, key) if container is not None else (None, None)
            out = substitute_text(value, scope, base, exact, copy=lambda v: self.copy(v, base))
            if isinstance(out, str):
                self.count_text(len(out), base)
            return out
        if isinstance(value, dict):
            out = Map(loc=getattr(value, "loc", None), key_locs=getattr(value, "key_locs", None),
                      value_locs=getattr(value, "value_locs", None))
            for k, v in value.items():
                out[k] = self.subst(v, scope, value, k)
            return out
        if isinstance(value, list):
            return Seq([self.subst(v, scope, value, i) for i, v in enumerate(value)],
                       loc=getattr(value, "loc", None), item_locs=getattr(value, "item_locs", None),
                       value_locs=getattr(value, "value_locs", None))
        return value

    def step(self, loc: Loc | None) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateError(f"the expansion is too large (more than {MAX_STEPS} layers, "
                                "template calls and repeat steps)", loc=loc,
                                hint="check the repeat counts and template recursion")

    # -- includes, vars, templates

    def collect(self, doc: Map, base_dir: str, chain: list[str]) -> None:
        variables = doc.get("vars")
        if variables is not None:
            if not isinstance(variables, dict):
                raise VariableError("'vars' must be a mapping of name: value",
                                    loc=loc_of(doc, "vars"), hint="write vars: {name: value}")
            for name, value in variables.items():
                if not IDENT_RE.match(name):
                    raise VariableError(f"'{name}' is not a valid variable name",
                                        loc=loc_of(variables, name),
                                        hint="use letters, digits and '_', not starting with a digit")
                if isinstance(value, dict):      # a lookup table: ${table[key]}
                    bad = [k for k, v in value.items() if not isinstance(k, (int, str)) or isinstance(k, bool)
                           or not isinstance(v, (bool, int, float, str))]
                    if bad:
                        raise VariableError(f"variable '{name}': entry '{bad[0]}' is not a number, boolean "
                                            "or text under a name or integer", loc=loc_of(value, bad[0]),
                                            hint="a table variable maps names to single values")
                    subst = [k for k, v in value.items() if isinstance(v, str) and "${" in v]
                    if subst:                    # entries are literal: nothing substitutes inside a table
                        raise VariableError(f"variable '{name}': entry '{subst[0]}' holds '${{...}}'; a table "
                                            "entry is a literal value", loc=loc_of(value, subst[0]),
                                            hint="write the value itself, and compute from it in another variable, "
                                                 "e.g. y: \"${table[key] * 2}\"")
                elif value is not None and not isinstance(value, (bool, int, float, str)):
                    raise VariableError(f"variable '{name}' is a list", loc=loc_of(variables, name),
                                        hint="a variable holds a number, a boolean or text, a table "
                                             "of them, or ~ when it must be given with -D")
                if name not in self.vars:
                    self.vars.define(name, value, variables, name)
        templates = doc.get("templates")
        if templates is not None:
            if not isinstance(templates, dict):
                raise TemplateError("'templates' must be a mapping of name: {params, layers}",
                                    loc=loc_of(doc, "templates"),
                                    hint="write templates: {tname: {params: {...}, layers: [...]}}")
            for name, body in templates.items():
                self.define_template(name, body, templates)
        include = doc.get("include")
        if include is None:
            return
        if isinstance(include, str):
            paths, positions = [include], [(doc, "include")]
        elif isinstance(include, list) and include:
            paths, positions = include, [(include, i) for i in range(len(include))]
        else:
            raise IncludeError("'include' must be a path or a list of paths",
                               loc=loc_of(doc, "include"), hint="write include: [lib/file.yaml]")
        for path, (container, key) in zip(paths, positions):
            where = loc_of(container, key)
            if not isinstance(path, str) or not path:
                raise IncludeError("an include must be a file path", loc=where,
                                   hint="write include: [lib/file.yaml]")
            if "${" in path:
                raise IncludeError(f"include path '{path}' uses ${{...}}", loc=where,
                                   hint="include paths are literal; variables are read after includes")
            found, searched = find_include(path, base_dir)
            full = found or os.path.normpath(os.path.join(base_dir, path))
            key_path = os.path.realpath(full)
            if key_path in chain:
                shown = [p if p.startswith("<") else os.path.relpath(p, self.root_dir)
                         for p in chain]
                start = chain.index(key_path)
                raise IncludeError("include cycle: " + " -> ".join(shown[start:] + [path]),
                                   loc=where, hint="remove one of these includes")
            if key_path in self.loaded:
                continue
            if full.lower().endswith(".prototxt"):
                raise IncludeError(f"cannot include the prototxt '{full}'", loc=where,
                                   hint="only YAML files with vars and templates can be included")
            if found is None:
                others = [d for d in searched if d != base_dir]
                raise IncludeError(f"included file '{full}' does not exist", loc=where,
                                   hint=f"paths are relative to {base_dir or '.'}"
                                        + (", then looked up in " + ", ".join(others) if others else "")
                                        + f" (the folders of {search.ENV}, then the zoo)")
            try:
                sub = load(full)
            except NetDefError as err:
                if err.loc is None or not err.loc.line:
                    raise IncludeError(f"cannot read included file '{full}': {err.message}",
                                       loc=where, hint=err.hint) from None
                raise
            for k in sub:
                if k not in INCLUDE_KEYS:
                    hint = did_you_mean(str(k), INCLUDE_KEYS) if k not in TOP_KEYS else None
                    raise IncludeError(f"an included file may only define vars, templates and "
                                       f"include, not '{k}'", loc=loc_of(sub, k),
                                       hint=hint or "move it into the including netdef")
            self.loaded.add(key_path)
            self.collect(sub, os.path.dirname(full), chain + [key_path])

    def define_template(self, name: str, body: Any, container: Map) -> None:
        where = loc_of(container, name)
        if not IDENT_RE.match(name):
            raise TemplateError(f"'{name}' is not a valid template name", loc=where,
                                hint="use letters, digits and '_'")
        if name in self.templates:
            first = self.templates[name].loc
            raise TemplateError(f"template '{name}' is defined twice", loc=where,
                                hint=f"it is already defined at {first}; rename one of them")
        if not isinstance(body, dict):
            raise TemplateError(f"template '{name}' must be a mapping with 'params' and 'layers'",
                                loc=where, hint="write {params: {...}, layers: [...]}")
        _check_keys(body, TEMPLATE_KEYS, f"template '{name}'", TemplateError)
        if "layers" not in body or not isinstance(body["layers"], list):
            raise TemplateError(f"template '{name}' needs a 'layers' list",
                                loc=loc_of(body, "layers") if "layers" in body else where,
                                hint="write layers: [...]")
        params = body.get("params")
        if params is not None:
            if not isinstance(params, dict):
                raise TemplateError(f"'params' of template '{name}' must be a mapping",
                                    loc=loc_of(body, "params"),
                                    hint="write params: {p: ~, q: default}")
            for p in params:
                if not IDENT_RE.match(p):
                    raise TemplateError(f"'{p}' is not a valid parameter name", loc=loc_of(params, p),
                                        hint="use letters, digits and '_'")
        self.templates[name] = _Template(name, body, container)

    # -- layers

    def layers(self, entries: Any, scope: Scope, phase: tuple[str, Loc | None, str] | None,
               depth: int, container: Any = None, key: Any = None) -> None:
        if not isinstance(entries, list):
            raise NetDefSyntaxError("'layers' must be a list", loc=loc_of(container, key),
                                    hint="write layers: [- {name: ..., type: ...}, ...]")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise NetDefSyntaxError("a layer entry must be a mapping", loc=loc_of(entries, i),
                                        hint="write {name: ..., type: ..., bottom: ...}")
            if "repeat" in entry:
                self.repeat(entry, scope, phase, depth)
            elif "use" in entry:
                self.call(entry, scope, phase, depth)
            else:
                self.layer(entry, scope, phase)

    def call_phase(self, entry: dict, scope: Scope, outer):
        if "phase" not in entry:
            return outer
        value = self.subst(entry["phase"], scope, entry, "phase")
        phase = _phase(value)
        where = loc_of(entry, "phase")
        if phase is None:
            raise TemplateError(f"phase must be train or test, not {value!r}", loc=where,
                                hint="write phase: train or phase: test")
        if outer is not None and outer[0] != phase:
            raise TemplateError(f"phase {phase} conflicts with phase {outer[0]} set at {outer[1]}",
                                loc=where, hint="remove one of the phases")
        what = "repeat" if "repeat" in entry else "template call"
        return (phase, where, what)

    def call(self, entry: dict, scope: Scope, phase, depth: int) -> None:
        _check_keys(entry, CALL_KEYS, "a template call", TemplateError, extra_hint=lambda k: (
            "template arguments go under 'with:'" if k in ("name", "bottom", "top", "type") else
            "a 'repeat:' entry takes 'var', 'start' and 'layers'" if k in REPEAT_KEYS else None))
        self.invoke(entry, scope, phase, depth)

    def invoke(self, entry: dict, scope: Scope, phase, depth: int) -> None:
        use_loc = loc_of(entry, "use")
        self.step(use_loc)
        tname = self.subst(entry["use"], scope, entry, "use")
        if not isinstance(tname, str) or tname not in self.templates:
            if not isinstance(tname, str):
                raise TemplateError("'use' must name a template", loc=use_loc,
                                    hint="write use: <template name>")
            known = sorted(self.templates)
            hint = did_you_mean(tname, known) or (
                f"known templates: {', '.join(known)}" if known else
                "no templates are defined; define them under 'templates:' or include a library")
            raise TemplateError(f"unknown template '{tname}'", loc=use_loc, hint=hint)
        tmpl = self.templates[tname]
        if depth >= MAX_TEMPLATE_DEPTH:
            raise TemplateError(f"template calls nest deeper than {MAX_TEMPLATE_DEPTH} levels "
                                f"(at '{tname}')", loc=use_loc,
                                hint="a template probably uses itself")
        phase = self.call_phase(entry, scope, phase)
        args = entry.get("with")
        if args is None:
            args = Map()
        if not isinstance(args, dict):
            raise TemplateError("'with' must be a mapping of argument: value",
                                loc=loc_of(entry, "with"), hint="write with: {name: ..., bottom: ...}")
        params = tmpl.params
        bound = Map()
        for name, value in args.items():
            if name not in params:
                names = list(params)
                hint = did_you_mean(str(name), names) or (
                    f"its parameters are: {', '.join(names)}" if names else "it takes no parameters")
                raise TemplateError(f"template '{tname}' has no parameter '{name}'",
                                    loc=loc_of(args, name), hint=hint)
            bound[name] = self.subst(value, scope, args, name)
            bound.key_locs[name] = loc_of(args, name)
        missing = [p for p, default in params.items() if default is None and p not in bound]
        if missing:
            raise TemplateError(f"template '{tname}' needs argument '{missing[0]}'", loc=use_loc,
                                hint="add " + ", ".join(missing) + " under 'with:'")
        inner = self.globals.child(bound)
        for p, default in params.items():
            if p not in bound:
                bound[p] = self.subst(default, inner, params, p)
        start = len(self.out)
        try:
            self.layers(tmpl.layers, inner, phase, depth + 1, tmpl.body, "layers")
            for i in range(start, len(self.out)):
                self.calls.setdefault(i, []).append((tname, use_loc))
        except NetDefError as err:
            chain = getattr(err, "template_chain", None)
            if chain is None:
                chain = err.template_chain = []
            chain.append((tname, use_loc))
            raise

    def repeat(self, entry: dict, scope: Scope, phase, depth: int) -> None:
        _check_keys(entry, REPEAT_KEYS, "a repeat", TemplateError)
        where = loc_of(entry, "repeat")
        count = self.subst(entry["repeat"], scope, entry, "repeat")
        if not _is_int(count) or not 1 <= count <= MAX_REPEAT:
            raise TemplateError(f"repeat count must be an integer from 1 to {MAX_REPEAT}, "
                                f"not {count!r}"[:200], loc=where,
                                hint="write repeat: N with a positive N")
        start = self.subst(entry.get("start", 1), scope, entry, "start")
        if not _is_int(start) or abs(start) >= 2 ** 62:
            raise TemplateError(f"repeat start must be an integer, not {start!r}"[:200],
                                loc=loc_of(entry, "start"), hint="write start: 0 or start: 1")
        var = entry.get("var", "i")
        if not isinstance(var, str) or not IDENT_RE.match(var):
            raise TemplateError(f"repeat variable must be a name, not {var!r}"[:200],
                                loc=loc_of(entry, "var"), hint="write var: j")
        has_use, has_layers = "use" in entry, "layers" in entry
        if has_use == has_layers:
            raise TemplateError("a repeat needs either 'use:' (a template) or 'layers:' (inline)"
                                + (", not both" if has_use else ""), loc=where,
                                hint="write repeat: N with use: t and with: {...}, or with layers: [...]")
        if "with" in entry and not has_use:
            raise TemplateError("'with' needs 'use' in a repeat", loc=loc_of(entry, "with"),
                                hint="inline layers use ${" + var + "} directly")
        phase = self.call_phase(entry, scope, phase)
        for k in range(start, start + count):
            self.step(where)
            inner = scope.child({var: k})
            if has_use:
                self.invoke(entry, inner, phase, depth)
            else:
                self.layers(entry["layers"], inner, phase, depth, entry, "layers")

    def layer(self, entry: dict, scope: Scope, phase) -> None:
        self.step(loc_of(entry))
        if len(self.out) >= MAX_LAYERS:
            raise TemplateError(f"the net has more than {MAX_LAYERS:,} layers", loc=loc_of(entry),
                                hint="check the repeat counts and template recursion")
        for bad, hint in (("with", "'with' belongs to a template call; add 'use: <template>'"),
                          ("layers", "inline layers belong to a repeat; add 'repeat: N'")):
            if bad in entry:
                raise NetDefSyntaxError(f"unexpected key '{bad}' in a layer", loc=loc_of(entry, bad),
                                        hint=hint)
        body = self.subst(entry, scope)
        for key in ("name", "type"):
            if key not in body:
                raise NetDefSyntaxError(f"a layer entry needs '{key}'", loc=loc_of(entry),
                                        hint="write {name: ..., type: ...}, or 'use:'/'repeat:'")
            if not isinstance(body[key], str) or not body[key]:
                raise NetDefSyntaxError(f"layer {key} must be text, not {body[key]!r}"[:200],
                                        loc=loc_of(entry, key), hint=f"write {key}: <text>")
        name, ltype = body["name"], body["type"]
        out = Map(loc=loc_of(entry))
        out["name"], out["type"] = name, ltype

        def err(key, what, hint, cls=ParameterError):
            return cls(what, loc=loc_of(entry, key), layer=name, type=ltype, hint=hint)

        bottom = _str_list(body.get("bottom", []))
        if bottom is None:
            raise err("bottom", f"bottom must be a blob name or a list of names, not "
                      f"{body['bottom']!r}"[:200], "write bottom: data or bottom: [a, b]")
        out["bottom"] = _blob_seq(bottom, body, "bottom")
        top = _str_list(body.get("top", [name]))
        if top is None and body.get("top") == []:
            top = []
        if top is None:
            raise err("top", f"top must be a blob name or a list of names, not {body['top']!r}"[:200],
                      "write top: name or top: [a, b]")
        out["top"] = _blob_seq(top, body, "top")
        if "phase" in body:
            value = _phase(body["phase"])
            if value is None:
                raise err("phase", f"phase must be train or test, not {body['phase']!r}"[:200],
                          "write phase: train or phase: test")
            if phase is not None and phase[0] != value:
                raise err("phase", f"phase {value} conflicts with phase {phase[0]} of the "
                          f"{phase[2]} at {phase[1]}", "remove one of the phases", TemplateError)
            out["phase"] = value
        elif phase is not None:
            out["phase"] = phase[0]
        if "param" in body:
            param = body["param"]
            if isinstance(param, dict):
                param = Seq([param], loc=param.loc)
            if not isinstance(param, list) or not all(isinstance(p, dict) for p in param):
                raise err("param", "param must be a mapping or a list of mappings",
                          "write param: [{lr_mult: 1, decay_mult: 1}, {lr_mult: 2, decay_mult: 0}]")
            out["param"] = param
        for key, value in body.items():
            if key not in out:
                out[key] = value
        for key in out:
            if key in body.key_locs:
                out.key_locs[key] = body.key_locs[key]
            if key in body.value_locs:
                out.value_locs[key] = body.value_locs[key]
        self.out.append(out)


# ---------------------------------------------------------------- public API

def _default_name(doc: dict) -> str:
    loc = getattr(doc, "loc", None)
    if loc is not None and loc.file and not loc.file.startswith("<"):
        return os.path.splitext(os.path.basename(loc.file))[0] or "net"
    return "net"


def _template_note(err: NetDefError) -> None:
    chain = getattr(err, "template_chain", None)
    if not chain or getattr(err, "template_noted", False):
        return
    err.template_noted = True
    inner_name, inner_loc = chain[0]
    note = f" (in template '{inner_name}' used at {inner_loc}"
    if len(chain) > 1:
        outer_name, outer_loc = chain[-1]
        note += f", reached from '{outer_name}' at {outer_loc}"
    err.message += note + ")"


def expand(doc: dict, *, overrides: dict | None = None, base_dir: str | os.PathLike | None = None) -> Map:
    """Expand ``doc`` (from :func:`parse.load`/:func:`parse.loads`) into a flat netdef.

    ``overrides`` replaces variables (``{"num_classes": 59}``); ``base_dir`` is where
    the document's includes are looked up (default: its file's directory, or the current
    directory for text).  Returns a new :class:`Map`; ``doc`` is not changed."""
    with _no_cycle_collector():
        return _checked_expand(doc, overrides, base_dir)


@contextlib.contextmanager
def _no_cycle_collector():
    """Expansion builds trees without cycles, which reference counting frees; the cycle
    collector would only walk them again and again (3x the time of a large one)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _checked_expand(doc: dict, overrides: dict | None, base_dir) -> Map:
    try:
        return _expand(doc, overrides, base_dir)
    except NetDefError as err:
        _template_note(err)
        raise
    except RecursionError:
        raise NetDefSyntaxError("the netdef nests too deeply to expand", loc=loc_of(doc),
                                hint="flatten nested lists, mappings or template calls") from None


def _expand(doc: dict, overrides: dict | None, base_dir) -> Map:
    if not isinstance(doc, dict):
        raise NetDefSyntaxError("a netdef must be a mapping", loc=loc_of(doc),
                                hint="start with 'name:', 'vars:', 'layers:' keys")
    _check_keys(doc, TOP_KEYS, "the netdef", extra_hint=lambda k: (
        "layer parameters go inside a layer entry" if k in ("type", "bottom", "top") else None))
    ex = _Expander(literal=bool(getattr(doc, "expanded", False)))
    loc = loc_of(doc)
    real_file = loc is not None and loc.file and not loc.file.startswith("<")
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(loc.file)) if real_file else os.getcwd()
    base_dir = os.fspath(base_dir)
    chain = [os.path.realpath(loc.file)] if real_file else ["<main>"]
    ex.root_dir = base_dir
    ex.collect(doc, base_dir, chain)

    unused = []
    for name, value in (overrides or {}).items():
        where = Loc(f"-D {name}")
        if name not in ex.vars and getattr(doc, "sed_vars", False):
            # a Caffe prototxt takes DeepLab's one variable set, as sed does: a name the
            # file does not use is ignored, a near miss of one it uses is a typo
            typo = near_miss(str(name), list(ex.vars))
            if typo is None:
                unused.append(str(name))
                continue
            raise VariableError(f"the prototxt has no variable '{name}'", loc=where,
                                hint=f"did you mean '{typo}'?")
        if name not in ex.vars:
            hint = did_you_mean(str(name), list(ex.vars)) or (
                f"its variables are: {', '.join(ex.vars)}" if ex.vars else "it defines no variables")
            raise VariableError(f"the netdef has no variable '{name}' to override", loc=where,
                                hint=hint)
        if not isinstance(value, (bool, int, float, str)):
            raise VariableError(f"the value for '{name}' must be a number, boolean or text, "
                                f"not {value!r}"[:200], loc=where, hint=f"write -D {name}=VALUE")
        ex.vars.define(name, value, None, name)
    if unused:
        print(f"note: {loc.file if loc is not None else 'the prototxt'} uses no "
              + ", ".join("${%s}" % n for n in unused) + "; -D ignored for it (as sed would)",
              file=sys.stderr)

    out = Map(loc=loc)
    name = ex.subst(doc["name"], ex.globals, doc, "name") if "name" in doc else _default_name(doc)
    if not isinstance(name, str) or not name:
        raise NetDefSyntaxError(f"'name' must be text, not {name!r}"[:200], loc=loc_of(doc, "name"),
                                hint="write name: my_net")
    out["name"] = name
    if "name" in doc:
        out.key_locs["name"] = loc_of(doc, "name")

    resolved = Map(loc=loc_of(doc, "vars") if "vars" in doc else loc)
    for vname in ex.vars:
        resolved[vname] = None if ex.vars[vname] is None else ex.vars.resolve(vname)
        container, key = ex.vars.where[vname]
        if container is not None:
            resolved.key_locs[vname] = loc_of(container, key)
            resolved.value_locs[vname] = value_pos(container, key)
    out["vars"] = resolved
    if "vars" in doc:
        out.key_locs["vars"] = loc_of(doc, "vars")

    if "inputs" in doc:
        out["inputs"] = _inputs(ex, doc)
        out.key_locs["inputs"] = loc_of(doc, "inputs")
    if "outputs" in doc:
        outputs = _str_list(ex.subst(doc["outputs"], ex.globals, doc, "outputs"))
        if outputs is None and doc["outputs"] == []:
            outputs = []
        if outputs is None:
            raise NetDefSyntaxError("'outputs' must be a blob name or a list of names",
                                    loc=loc_of(doc, "outputs"), hint="write outputs: [fc8]")
        out["outputs"] = Seq(outputs, loc=getattr(doc["outputs"], "loc", None))
        out.key_locs["outputs"] = loc_of(doc, "outputs")

    if "preprocess" in doc:       # the input normalisation the net expects (data/preprocess.py)
        out["preprocess"] = ex.subst(doc["preprocess"], ex.globals, doc, "preprocess")
        out.key_locs["preprocess"] = loc_of(doc, "preprocess")

    if "layers" not in doc:
        raise NetDefSyntaxError("the netdef has no 'layers'", loc=loc,
                                hint="add layers: [...] (only included files may omit it)")
    ex.layers(doc["layers"], ex.globals, None, 0, doc, "layers")
    out["layers"] = Seq(ex.out, loc=getattr(doc["layers"], "loc", None),
                        item_locs=[layer.loc for layer in ex.out])
    out.key_locs["layers"] = loc_of(doc, "layers")
    # layer name -> the template calls that made it, so a later error names its call site
    out.template_calls = {str(ex.out[i].get("name")): chain for i, chain in ex.calls.items()}
    out.expanded = True
    return out


def note_call_site(err: Exception, doc: Any) -> None:
    """Add the template call that made the layer an error names (``err.layer``) to the
    error's message, as expansion errors inside a template have it."""
    calls = getattr(doc, "template_calls", None) or {}
    chain = calls.get(getattr(err, "layer", None) or "")
    if chain and isinstance(err, NetDefError) and not getattr(err, "template_chain", None):
        err.template_chain = list(chain)
        _template_note(err)


def _inputs(ex: _Expander, doc: dict) -> Map:
    inputs = doc["inputs"]
    if not isinstance(inputs, dict):
        raise NetDefSyntaxError("'inputs' must be a mapping of blob: [C, H, W]",
                                loc=loc_of(doc, "inputs"), hint="write inputs: {data: [3, 321, 321]}")
    out = Map(loc=loc_of(inputs), key_locs=getattr(inputs, "key_locs", None))
    for blob, shape in inputs.items():
        value = ex.subst(shape, ex.globals, inputs, blob)
        if not (isinstance(value, list) and value and all(_is_int(v) and v > 0 for v in value)):
            raise NetDefSyntaxError(f"input '{blob}' must have a shape of positive integers, "
                                    f"not {value!r}"[:200], loc=loc_of(inputs, blob),
                                    hint="write [C, H, W], e.g. [3, 321, 321]; the batch is implied")
        out[blob] = value
    return out


def filter_phase(doc: dict, phase: str) -> Map:
    """Keep the layers of ``phase`` (``"train"`` or ``"test"``, any case) and those with
    no phase.  Returns a new :class:`Map`; ``doc`` (an expanded netdef) is not changed."""
    want = _phase(phase)
    if want is None:
        raise NetDefError(f"unknown phase {phase!r}", hint="use train or test")
    if not isinstance(doc, dict) or not isinstance(doc.get("layers", []), list):
        raise NetDefSyntaxError("filter_phase needs an expanded netdef", loc=loc_of(doc),
                                hint="run expand() first")
    with _no_cycle_collector():
        out = _copy(doc)
    out.expanded = bool(getattr(doc, "expanded", False))
    layers = out.get("layers", Seq())
    kept = Seq(loc=getattr(layers, "loc", None))
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise NetDefSyntaxError("a layer entry must be a mapping", loc=loc_of(layers, i),
                                    hint="run expand() first")
        if "phase" in layer:
            value = _phase(layer["phase"])
            if value is None:
                raise ParameterError(f"phase must be train or test, not {layer['phase']!r}"[:200],
                                     loc=loc_of(layer, "phase"), layer=str(layer.get("name")),
                                     type=layer.get("type") if isinstance(layer.get("type"), str) else None,
                                     hint="write phase: train or phase: test")
            if value != want:
                continue
        kept.append(layer)
        kept.item_locs.append(loc_of(layers, i))
    if "layers" in out:
        out["layers"] = kept
    return out

"""Every expansion error: its class, a one-line ``file:line:col:`` message at the
offending line (marked ``#!`` in the text below), and a hint."""
from __future__ import annotations

import pytest

from deeplab_compile.netdef.errors import (IncludeError, NetDefError, NetDefSyntaxError,
                                           ParameterError, TemplateError, VariableError)
from deeplab_compile.netdef.expand import MAX_STEPS, expand, filter_phase
from deeplab_compile.netdef.parse import load, loads

HEAD = """name: t
vars: {num_classes: 21, crop: 321, lr: 0.001, mode: max, flag: true}
templates:
  conv:
    params: {name: ~, bottom: ~, k: 3}
    layers:
      - {name: "${name}", type: Convolution, bottom: "${bottom}", kernel_size: "${k}"}
layers:
"""


def check(cls, text, *, filename="net.yaml", overrides=None, base_dir=None, col=None, doc=None):
    with pytest.raises(cls) as info:
        expand(doc if doc is not None else loads(text, filename), overrides=overrides,
               base_dir=base_dir)
    err = info.value
    msg = str(err)
    assert "\n" not in msg
    marked = [i + 1 for i, line in enumerate(text.splitlines()) if line.rstrip().endswith("#!")]
    assert len(marked) == 1, "mark the offending line with #!"
    assert msg.startswith(f"{filename}:{marked[0]}:"), msg
    if col is not None:
        line = text.splitlines()[marked[0] - 1]
        want = line.index(col) + 1 if isinstance(col, str) else col
        assert err.loc.col == want, (msg, want)
    assert err.hint and msg.endswith("; " + err.hint), msg
    return err


# ---------------------------------------------------------------- top level and vars

def test_unknown_top_level_key():
    err = check(NetDefSyntaxError, "name: t\nlayer: []  #!\n")
    assert "unknown key 'layer'" in str(err) and "did you mean 'layers'?" in str(err)


def test_missing_layers():
    check(NetDefSyntaxError, "name: t  #!\nvars: {a: 1}\n")


def test_name_must_be_text():
    check(NetDefSyntaxError, "name: ${n}  #!\nvars: {n: 3}\nlayers: []\n")


def test_var_cycle_names_the_variables():
    err = check(VariableError, "vars:\n  a: ${b + 1}  #!\n  b: ${c}\n  c: ${a}\nlayers: []\n")
    assert "a -> b -> c -> a" in str(err)


def test_var_self_reference():
    err = check(VariableError, "vars:\n  a: 1\n  b: ${b}  #!\nlayers: []\n")
    assert "b -> b" in str(err)


def test_undefined_variable_in_var():
    err = check(VariableError, "vars:\n  crop: 3\n  half: ${crp / 2}  #!\nlayers: []\n", col="crp")
    assert "undefined variable 'crp'" in str(err) and "did you mean 'crop'?" in str(err)


def test_var_must_be_scalar():
    check(VariableError, "vars:\n  a: [1, 2]  #!\nlayers: []\n")
    check(VariableError, "vars:\n  2a: 1  #!\nlayers: []\n")
    check(VariableError, "vars: [a, b]  #!\nlayers: []\n")


def test_required_variable_used_but_not_given():
    # ~ marks a variable that must come from -D (a prototxt's ${DATA_ROOT} placeholders)
    err = check(VariableError, "vars:\n  root: ~  #!\nlayers:\n  - {name: a, type: X, p: ${root}}\n")
    assert "variable 'root' is required but not given" in str(err) and "-D root=VALUE" in str(err)
    doc = expand(loads("vars:\n  root: ~\nlayers:\n  - {name: a, type: X, p: ${root}}\n"),
                 overrides={"root": "/data"})
    assert doc["layers"][0]["p"] == "/data" and doc["vars"]["root"] == "/data"
    unused = expand(loads("vars: {root: ~}\nlayers: []\n"))
    assert unused["vars"]["root"] is None


def test_override_of_unknown_variable():
    with pytest.raises(VariableError) as info:
        expand(loads(HEAD), overrides={"num_clases": 59})
    msg = str(info.value)
    assert msg.startswith("-D num_clases: ") and "did you mean 'num_classes'?" in msg


def test_override_value_must_be_scalar():
    with pytest.raises(VariableError, match="must be a number"):
        expand(loads(HEAD), overrides={"crop": [1, 2]})


def test_override_feeding_a_cycle():
    with pytest.raises(VariableError, match="cycle"):
        expand(loads("vars: {a: 1, b: '${a}'}\nlayers: []\n"), overrides={"a": "${b}"})


# ---------------------------------------------------------------- expressions

@pytest.mark.parametrize("expr, what, at", [
    ("${nmu_classes}", "undefined variable 'nmu_classes'", "nmu"),
    ("${crop / 0}", "division by zero", "/"),
    ("${crop // (crop - crop)}", "division by zero", "//"),
    ("${crop % 0}", "modulo by zero", "%"),
    ("${crop +}", "incomplete expression", "}"),
    ("${crop ** 2}", "unexpected '*'", "* 2"),
    ("${(crop}", "missing ')'", "}"),
    ("${crop)}", "unexpected ')'", ")"),
    ("${crop 2}", "unexpected '2'", "2"),
    ("${}", "empty expression", "${"),
    ("${crop.x}", "unexpected character '.'", "."),
    ("${eval('1')}", "unexpected character", "'"),
    ("${lr * 2}", "arithmetic needs integers, but 'lr' is a float", "lr"),
    ("${mode + 1}", "'mode' is text", "mode"),
    ("${flag + 1}", "'flag' is a boolean", "flag"),
    ("${-lr}", "'lr' is a float", "lr"),
    ("x${crop", "unterminated '${'", "${"),
    ("${99999999999999999999}", "too large", "9"),
    ("${crop * 4611686018427387904}", "64-bit", "*"),
])
def test_bad_expressions(expr, what, at):
    line = f'  - {{name: a, type: T, n: "{expr}"}}  #!'
    err = check(VariableError, HEAD + line + "\n", col=line.index(expr) + expr.index(at) + 1)
    assert what in str(err)


def test_expression_error_in_block_scalar_points_at_the_value():
    text = HEAD + "  - name: a\n    type: T\n    n: ${crop / 0}  #!\n"
    check(VariableError, text, col="/")


def test_list_cannot_go_inside_text():
    text = HEAD.replace("k: 3}", "k: 3, ks: [1, 2]}").replace(
        'kernel_size: "${k}"}', 'kernel_size: "${k}", label: "k${ks}"}  #!')
    text = text + "  - use: conv\n    with: {name: a, bottom: b}\n"
    err = check(VariableError, text)
    assert "cannot be put inside text" in str(err) and "in template 'conv' used at" in str(err)


# ---------------------------------------------------------------- includes

def write(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_missing_include_names_the_resolved_path(tmp_path):
    write(tmp_path, {"net.yaml": "include:\n  - lib/nope.yaml  #!\nlayers: []\n"})
    path = tmp_path / "net.yaml"
    err = check(IncludeError, path.read_text(), filename=str(path), doc=load(path))
    assert str(tmp_path / "lib" / "nope.yaml") in str(err)


def test_missing_include_from_text_uses_base_dir(tmp_path):
    text = "include: nope.yaml  #!\nlayers: []\n"
    err = check(IncludeError, text, base_dir=tmp_path)
    assert str(tmp_path / "nope.yaml") in str(err)


def test_include_cycle_lists_the_chain(tmp_path):
    write(tmp_path, {"net.yaml": "include: lib/a.yaml\nlayers: []\n",
                     "lib/a.yaml": "include: b.yaml\n",
                     "lib/b.yaml": "include:\n  - ../lib/a.yaml  #!\n"})
    b = tmp_path / "lib" / "b.yaml"
    err = check(IncludeError, b.read_text(), filename=str(b), doc=load(tmp_path / "net.yaml"))
    assert "include cycle: lib/a.yaml -> lib/b.yaml -> ../lib/a.yaml" in str(err)


def test_self_include(tmp_path):
    write(tmp_path, {"net.yaml": "include: [net.yaml]  #!\nlayers: []\n"})
    path = tmp_path / "net.yaml"
    check(IncludeError, path.read_text(), filename=str(path), doc=load(path))


@pytest.mark.parametrize("body", ["layers: []  #!\n", "inputs: {data: [3, 8, 8]}  #!\n",
                                  "name: lib  #!\n", "tempaltes: {}  #!\n"])
def test_included_file_may_only_define_vars_templates_include(tmp_path, body):
    write(tmp_path, {"net.yaml": "include: lib.yaml\nlayers: []\n", "lib.yaml": "vars: {a: 1}\n" + body})
    lib = tmp_path / "lib.yaml"
    err = check(IncludeError, lib.read_text(), filename=str(lib), doc=load(tmp_path / "net.yaml"))
    assert "an included file may only define vars, templates and include" in str(err)


def test_syntax_error_in_included_file_points_into_it(tmp_path):
    write(tmp_path, {"net.yaml": "include: lib.yaml\nlayers: []\n", "lib.yaml": "vars: {a: 1\n  b: [  #!\n"})
    lib = tmp_path / "lib.yaml"
    check(NetDefSyntaxError, lib.read_text(), filename=str(lib), doc=load(tmp_path / "net.yaml"))


def test_template_defined_in_two_files(tmp_path):
    tmpl = "templates:\n  t:  #!\n    layers: []\n"
    write(tmp_path, {"net.yaml": "include: [a.yaml, b.yaml]\nlayers: []\n", "a.yaml": tmpl, "b.yaml": tmpl})
    b = tmp_path / "b.yaml"
    err = check(TemplateError, tmpl, filename=str(b), doc=load(tmp_path / "net.yaml"))
    assert "defined twice" in str(err) and "a.yaml:2:3" in str(err)


def test_include_paths_are_literal(tmp_path):
    check(IncludeError, "vars: {b: x}\ninclude: [lib/${b}.yaml]  #!\nlayers: []\n", base_dir=tmp_path)


# ---------------------------------------------------------------- templates

def test_unknown_template_lists_close_name():
    err = check(TemplateError, HEAD + "  - use: cnov  #!\n    with: {name: a, bottom: b}\n", col="use")
    assert "unknown template 'cnov'" in str(err) and "did you mean 'conv'?" in str(err)


def test_unknown_template_lists_known_ones():
    err = check(TemplateError, HEAD + "  - use: zzz  #!\n")
    assert "known templates: conv" in str(err)


def test_missing_template_argument():
    err = check(TemplateError, HEAD + "  - use: conv  #!\n    with: {name: a}\n")
    assert "needs argument 'bottom'" in str(err)


def test_unknown_template_argument():
    err = check(TemplateError, HEAD + "  - use: conv\n    with:\n      name: a\n      bottom: b\n"
                "      kk: 3  #!\n", col="kk")
    assert "has no parameter 'kk'" in str(err) and "did you mean 'k'?" in str(err)


def test_arguments_outside_with():
    err = check(TemplateError, HEAD + "  - use: conv\n    name: a  #!\n")
    assert "under 'with:'" in str(err)


def test_error_inside_template_body_names_the_call():
    text = HEAD.replace('kernel_size: "${k}"}', 'kernel_size: "${k}", pad: "${k / zero}"}  #!')
    err = check(VariableError, text + "  - use: conv\n    with: {name: a, bottom: b}\n")
    assert "undefined variable 'zero'" in str(err) and "(in template 'conv' used at net.yaml:9:5)" in str(err)


def test_template_recursion_is_bounded():
    text = ("templates:\n  loop:\n    params: {n: 0}\n    layers:\n"
            "      - use: loop  #!\n        with: {n: '${n + 1}'}\nlayers:\n  - use: loop\n")
    err = check(TemplateError, text)
    assert "nest deeper than 50" in str(err)


def test_bad_template_definitions():
    check(TemplateError, "templates:\n  t: [1]  #!\nlayers: []\n")
    check(TemplateError, "templates:\n  t:\n    params: {a: 1}\n    layyers: []  #!\nlayers: []\n")
    check(TemplateError, "templates:\n  t:  #!\n    params: {a: 1}\nlayers: []\n")
    check(TemplateError, "templates:\n  t:\n    params: [a]  #!\n    layers: []\nlayers: []\n")


def test_call_phase_conflicts_with_layer_phase():
    text = ("templates:\n  t:\n    layers:\n      - {name: a, type: T, phase: test}  #!\n"
            "layers:\n  - use: t\n    phase: train\n")
    err = check(TemplateError, text)
    assert "conflicts" in str(err)


def test_bad_call_phase():
    check(TemplateError, HEAD + "  - use: conv\n    with: {name: a, bottom: b}\n    phase: val  #!\n")


# ---------------------------------------------------------------- repeat

@pytest.mark.parametrize("count", ["0", "-2", "10001", "2.5", "abc", "true", "${lr}"])
def test_repeat_count_must_be_a_positive_integer(count):
    err = check(TemplateError, HEAD + f"  - repeat: {count}  #!\n    layers: []\n", col="repeat")
    assert "repeat count must be an integer from 1 to 10000" in str(err)


def test_repeat_needs_use_or_layers():
    check(TemplateError, HEAD + "  - repeat: 2  #!\n")
    check(TemplateError, HEAD + "  - repeat: 2  #!\n    use: conv\n    layers: []\n")
    check(TemplateError, HEAD + "  - repeat: 2\n    layers: []\n    with: {a: 1}  #!\n")
    check(TemplateError, HEAD + "  - repeat: 2\n    layers: []\n    var: 1x  #!\n")
    check(TemplateError, HEAD + "  - repeat: 2\n    layers: []\n    start: a  #!\n")
    check(TemplateError, HEAD + "  - repeat: 2\n    layers: []\n    wiht: 3  #!\n")


def test_repeat_index_is_not_visible_after_the_repeat():
    text = HEAD + "  - repeat: 2\n    layers: []\n  - {name: a, type: T, n: '${i}'}  #!\n"
    check(VariableError, text)


def test_huge_expansion_is_refused_quickly():
    text = ("layers:\n  - repeat: 10000\n    layers:\n      - repeat: 10000\n"
            "        layers:\n          - repeat: 10000  #!\n            layers: []\n")
    err = check(TemplateError, text)
    assert str(MAX_STEPS) in str(err)


# ---------------------------------------------------------------- layers

@pytest.mark.parametrize("entry, cls, what", [
    ("  - 5  #!", NetDefSyntaxError, "must be a mapping"),
    ("  - [a, b]  #!", NetDefSyntaxError, "must be a mapping"),
    ("  - {type: T}  #!", NetDefSyntaxError, "needs 'name'"),
    ("  - {name: a}  #!", NetDefSyntaxError, "needs 'type'"),
    ("  - {name: 5, type: T}  #!", NetDefSyntaxError, "name must be text"),
    ("  - {name: '${crop}', type: T}  #!", NetDefSyntaxError, "name must be text"),
    ("  - {name: a, type: [T]}  #!", NetDefSyntaxError, "type must be text"),
    ("  - {name: a, type: T, bottom: [x, 1]}  #!", ParameterError, "bottom must be"),
    ("  - {name: a, type: T, bottom: {x: 1}}  #!", ParameterError, "bottom must be"),
    ("  - {name: a, type: T, top: 3}  #!", ParameterError, "top must be"),
    ("  - {name: a, type: T, top: ''}  #!", ParameterError, "top must be"),
    ("  - {name: a, type: T, phase: val}  #!", ParameterError, "phase must be train or test"),
    ("  - {name: a, type: T, param: [1]}  #!", ParameterError, "param must be"),
    ("  - {name: a, type: T, with: {x: 1}}  #!", NetDefSyntaxError, "'with'"),
])
def test_bad_layer_entries(entry, cls, what):
    err = check(cls, HEAD + entry + "\n")
    assert what in str(err)


def test_layers_must_be_a_list():
    check(NetDefSyntaxError, "name: t\nlayers: {a: 1}  #!\n")


def test_bad_inputs_and_outputs():
    check(NetDefSyntaxError, "inputs:\n  data: [3, 0, 5]  #!\nlayers: []\n")
    check(NetDefSyntaxError, "vars: {c: x}\ninputs:\n  data: [3, '${c}']  #!\nlayers: []\n")
    check(NetDefSyntaxError, "inputs: [3, 5]  #!\nlayers: []\n")
    check(NetDefSyntaxError, "outputs: {a: 1}  #!\nlayers: []\n")


# ---------------------------------------------------------------- filter_phase

def test_filter_phase_rejects_unknown_phase_argument():
    doc = expand(loads("layers: []\n"))
    with pytest.raises(NetDefError, match="unknown phase 'val'") as info:
        filter_phase(doc, "val")
    assert info.value.hint


def test_filter_phase_rejects_unknown_layer_phase():
    # filter_phase checks phases itself: its input need not come from expand()
    text = "name: t\nlayers:\n  - {name: a, type: T, bottom: [], top: [a], phase: val}\n"
    with pytest.raises(ParameterError) as info:
        filter_phase(loads(text, "net.yaml"), "train")
    col = text.splitlines()[2].index("phase") + 1
    assert str(info.value).startswith(f"net.yaml:3:{col}: layer 'a' (T): phase must be train or test")
    assert info.value.hint


@pytest.mark.parametrize("body,want", [
    ("kernel_size: 3, dilaton: 2", "unknown parameter 'dilaton'"),           # a parameter check
    ("kernel_size: -3", "'kernel_size' must be >= 1"),                         # a value check
    ("kernel_size: 30", ""),                                                   # a shape check
])
def test_a_layer_error_inside_a_template_names_the_call_site(body, want):
    from deeplab_compile.compiler import load_netdef, net_from_doc
    text = ("name: t\ninputs: {data: [3, 9, 9]}\ntemplates:\n  outer:\n    params: {name: ~}\n    layers:\n"
            "      - {use: conv, with: {name: '${name}'}}\n  conv:\n    params: {name: ~}\n    layers:\n"
            "      - {name: '${name}', type: Convolution, bottom: data, num_output: 4, " + body + "}\n"
            "layers:\n  - {name: ok, type: ReLU, bottom: data}\n  - use: outer\n    with: {name: c1}\n")
    with pytest.raises(NetDefError) as info:
        net_from_doc(load_netdef(loads(text, "net.yaml")), phase="test")
    msg = str(info.value)
    assert "\n" not in msg and want in msg and "layer 'c1'" in msg
    assert "(in template 'conv' used at net.yaml:7:10, reached from 'outer' at net.yaml:14:5)" in msg


def test_every_missing_required_variable_is_named_at_once():
    err = check(VariableError, "vars:\n  root: ~  #!\n  lst: ~\n  n: 3\n  crop: ~\n"
                "layers:\n  - {name: a, type: X, p: '${root}/${lst}', c: '${crop}'}\n")
    msg = str(err)
    assert "variables 'root', 'lst', 'crop' are required but not given" in msg
    assert "-D root=VALUE -D lst=VALUE -D crop=VALUE" in msg and "'n'" not in msg

"""Netdefs that would take unbounded time or memory stop early with one located line:
alias bombs (parse.MAX_NODES), values multiplied by expansion (expand.MAX_VALUES) and
text doubled by substitution (expr.MAX_TEXT).  "Early" is checked by the memory the
attempt traces, never by a clock."""
import tracemalloc

import pytest

from deeplab_compile.netdef import expand as expand_mod
from deeplab_compile.netdef import expr, parse
from deeplab_compile.netdef.errors import NetDefSyntaxError, TemplateError, VariableError
from deeplab_compile.netdef.expand import expand
from deeplab_compile.netdef.parse import loads


def _chain(levels: int, indent: str, width: int = 9) -> str:
    """``levels`` anchored lists, each holding ``width`` aliases of the one before."""
    lines = [f"{indent}a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines)


def _traced(fn):
    """(the exception ``fn`` raised, peak bytes traced meanwhile)."""
    tracemalloc.start()
    try:
        try:
            fn()
        except Exception as err:       # noqa: BLE001  (returned to the test to check)
            caught = err
        else:
            caught = None
        return caught, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


TEMPLATE = """\
name: n
templates:
  t:
    params: {{name: ~, x: 0}}
    layers:
      - {{name: "${{name}}", type: ReLU, bottom: data, x: "${{x}}"}}
layers:
  - use: t
    with:
      name: a
      x:
{chain}
"""

BOMBS = {
    "under vars": "name: n\nvars:\n  big:\n{chain}\nlayers: []\n",
    "under a layer key": "name: n\nlayers:\n  - name: a\n    type: ReLU\n    junk:\n{chain}\n",
    "inside a template's with": TEMPLATE,
    "under templates": "name: n\ntemplates:\n  t:\n    params:\n{chain}\n    layers: []\nlayers: []\n",
}


@pytest.mark.parametrize("where", sorted(BOMBS))
@pytest.mark.parametrize("levels", [6, 9])
def test_alias_bomb_stops_at_the_alias(where, levels):
    indent = {"under vars": "    ", "under a layer key": "      ", "inside a template's with": "        ",
              "under templates": "      "}[where]
    text = BOMBS[where].format(chain=_chain(levels, indent))
    err, peak = _traced(lambda: expand(loads(text, "bomb.yaml")))
    assert isinstance(err, NetDefSyntaxError), err
    msg = str(err)
    assert "\n" not in msg and msg.startswith("bomb.yaml:")
    # 9**5 = 59,049 values fit; the next level's aliases cross the limit of 200,000
    line = text.splitlines()[err.loc.line - 1]
    assert "&a5" in line and line[err.loc.col - 1:].startswith("*a4")
    assert f"alias '*a4' makes the document hold more than {parse.MAX_NODES:,} values" in msg
    assert "write the values out once" in msg
    assert peak < 5 * 2 ** 20


def test_aliases_under_the_limit_still_work():
    text = "name: n\nvars:\n  k: 3\nlayers:\n  - name: a\n    type: ReLU\n    junk:\n" + _chain(3, "      ", 4)
    out = expand(loads(text, "ok.yaml"))
    junk = out["layers"][0]["junk"]
    assert junk["a2"] == [[["x"] * 4] * 4] * 4


def test_repeated_template_arguments_hit_the_expansion_limit(monkeypatch):
    monkeypatch.setattr(expand_mod, "MAX_VALUES", 100_000)     # the same check, sooner
    # 9**4 = 6,561 values per argument fit the document; 1000 calls copy them 6.5 million times
    text = TEMPLATE.format(chain=_chain(4, "          ")).replace(
        "  - use: t\n    with:\n      name: a", "  - repeat: 1000\n    use: t\n    with:\n      name: a${i}")
    err, peak = _traced(lambda: expand(loads(text, "rep.yaml")))
    assert isinstance(err, TemplateError), err
    msg = str(err)
    assert "\n" not in msg and msg.startswith("rep.yaml:")
    assert f"the expansion is too large (more than {expand_mod.MAX_VALUES:,} values" in msg
    assert peak < 100 * 2 ** 20


def test_whole_value_copies_are_counted(monkeypatch):
    monkeypatch.setattr(expand_mod, "MAX_VALUES", 50_000)      # the same check, sooner
    # one call: the argument (about 8,300 values) is bound once, then inserted whole 10 times
    keys = ", ".join(f'k{j}: "${{x}}"' for j in range(10))
    text = TEMPLATE.format(chain=_chain(4, "          ")).replace('x: "${x}"}', keys + "}")
    assert text.count("${x}") == 10
    with pytest.raises(TemplateError, match="the expansion is too large") as info:
        expand(loads(text, "copies.yaml"))
    assert str(info.value).startswith("copies.yaml:6:")   # the template body that inserts it
    monkeypatch.setattr(expand_mod, "MAX_VALUES", 100_000)     # 10 copies and the argument fit
    assert len(expand(loads(text, "copies.yaml"))["layers"][0]["k9"]["a3"]) == 9


def test_string_doubling_variables():
    lines = ["  v0: ab"] + [f'  v{i}: "${{v{i - 1}}}${{v{i - 1}}}"' for i in range(1, 40)]
    text = "name: n\nvars:\n" + "\n".join(lines) + '\nlayers:\n  - {name: "${v39}", type: ReLU, bottom: data}\n'
    err, peak = _traced(lambda: expand(loads(text, "dbl.yaml")))
    assert isinstance(err, VariableError), err
    msg = str(err)
    assert "\n" not in msg
    # v15 is "ab" doubled 15 times, 65,536 characters: the limit; v16 (line 19) is over
    # it at its second ${v15} (column 15)
    assert msg.startswith("dbl.yaml:19:15:")
    assert text.splitlines()[18] == '  v16: "${v15}${v15}"' and text.splitlines()[18][14:16] == "${"
    assert f"the text made by substitution is longer than {expr.MAX_TEXT:,} characters" in msg
    assert peak < 5 * 2 ** 20


def test_string_doubling_through_template_arguments():
    text = """\
name: n
templates:
  t:
    params: {name: ~, s: ~}
    layers:
      - {name: "${name}", type: ReLU, bottom: data}
      - use: t
        with: {name: "${name}x", s: "${s}${s}"}
layers:
  - use: t
    with: {name: a, s: ab}
"""
    err, peak = _traced(lambda: expand(loads(text, "rec.yaml")))
    assert isinstance(err, VariableError) and "longer than" in str(err), err
    assert str(err).startswith("rec.yaml:8:") and "in template 't'" in str(err)
    assert peak < 10 * 2 ** 20


def test_long_text_is_fine_until_substitution_makes_more():
    long = "x" * (expr.MAX_TEXT + 10)
    out = expand(loads(f"name: n\nvars: {{s: {long}}}\nlayers:\n  - {{name: a, type: ReLU, bottom: data, "
                       f"note: '${{s}}'}}\n", "long.yaml"))
    assert out["layers"][0]["note"] == long                   # a whole value is not made text
    with pytest.raises(VariableError, match="longer than"):
        expand(loads(f"name: n\nvars: {{s: {long}}}\nlayers:\n  - {{name: a, type: ReLU, bottom: data, "
                     f"note: 'a${{s}}'}}\n", "long.yaml"))


@pytest.mark.parametrize("how", ["repeat", "vars"])
def test_text_made_in_all_is_limited(how):
    # each text is under MAX_TEXT, but 100 of them make more than MAX_CHARS in all
    s = "x" * 60_000
    if how == "repeat":
        text = (f"name: n\nvars: {{s: {s}}}\nlayers:\n  - repeat: 100\n"
                f"    layers: [{{name: \"a${{i}}\", type: ReLU, bottom: data, note: \"${{s}}${{i}}\"}}]\n")
    else:
        many = "\n".join(f'  v{i}: "${{s}}{i}"' for i in range(100))
        text = f"name: n\nvars:\n  s: {s}\n{many}\nlayers: []\n"
    err, peak = _traced(lambda: expand(loads(text, "vol.yaml")))
    assert isinstance(err, VariableError), err
    msg = str(err)
    assert "\n" not in msg and msg.startswith("vol.yaml:")
    assert f"substitution made more than {expand_mod.MAX_CHARS:,} characters of text in all" in msg
    assert peak < 4 * expand_mod.MAX_CHARS
    assert 60_000 * 100 > expand_mod.MAX_CHARS > 60_000 * 60


def test_layer_count_is_limited():
    text = ("name: n\nlayers:\n  - repeat: 10000\n"
            "    layers: [{name: \"a${i}\", type: ReLU, bottom: data}]   #!\n")
    with pytest.raises(TemplateError) as info:
        expand(loads(text, "many.yaml"))
    msg = str(info.value)
    assert msg.startswith("many.yaml:4:14:") and "\n" not in msg
    assert f"the net has more than {expand_mod.MAX_LAYERS:,} layers" in msg
    few = text.replace("10000", str(expand_mod.MAX_LAYERS))
    assert len(expand(loads(few, "few.yaml"))["layers"]) == expand_mod.MAX_LAYERS


def test_the_documented_limits_are_the_limits():
    import os
    import re

    from deeplab_compile import sizes
    from conftest import ROOT
    doc = open(os.path.join(ROOT, "docs", "netdef.md")).read()
    table = {m.group(1): int(m.group(2).replace(",", ""))
             for m in re.finditer(r"^\| (MAX_[A-Z_]+) \(([\d,]+)\) \|", doc, re.M)}
    assert table == {"MAX_DEPTH": parse.MAX_DEPTH, "MAX_NODES": parse.MAX_NODES,
                     "MAX_TEMPLATE_DEPTH": expand_mod.MAX_TEMPLATE_DEPTH,
                     "MAX_REPEAT": expand_mod.MAX_REPEAT, "MAX_STEPS": expand_mod.MAX_STEPS,
                     "MAX_LAYERS": expand_mod.MAX_LAYERS, "MAX_VALUES": expand_mod.MAX_VALUES,
                     "MAX_TEXT": expr.MAX_TEXT, "MAX_CHARS": expand_mod.MAX_CHARS}
    assert f"| {sizes.DEFAULT_MAX_PARAM_GIB:g} GiB |" in doc
    assert f"| {parse._MAX_INT_DIGITS:,} digits |" in doc

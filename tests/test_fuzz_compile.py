"""Mutated and hostile netdefs through the whole front end (parse .. shapes .. codegen)
raise only the project's own error type, never anything else, and end quickly."""
import os
import random
import re
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeplab_compile.codegen import generate
from deeplab_compile.compiler import build_ir, infer_shapes, load_netdef
from deeplab_compile.errors import DeepLabError
from deeplab_compile.netdef import parse
from deeplab_compile.netdef.expand import expand, filter_phase

from conftest import DATA, NETDEF

SMALL = """\
name: small
vars: {c: 4, k: 3}
inputs:
  data: [3, 13, 13]     # pool1 -> 7, up -> 13: the loss sees matching sizes
  label: [1, 13, 13]
layers:
  - {name: conv1, type: Convolution, bottom: data, num_output: "${c}", kernel_size: "${k}", pad: 1, dilation: 1}
  - {name: relu1, type: ReLU, bottom: conv1, top: conv1}
  - {name: pool1, type: Pooling, bottom: conv1, pool: MAX, kernel_size: 3, stride: 2, pad: 1}
  - {name: bn1, type: BatchNorm, bottom: pool1, top: pool1, use_global_stats: true}
  - {name: sc1, type: Scale, bottom: pool1, top: pool1, bias_term: true}
  - {name: up, type: Interp, bottom: pool1, zoom_factor: 2}
  - {name: cat, type: Concat, bottom: [up, up]}
  - {name: fc, type: Convolution, bottom: cat, num_output: 3, kernel_size: 1}
  - {name: sum, type: Eltwise, bottom: [fc, fc], operation: SUM, coeff: [1, -1]}
  - {name: loss, type: SoftmaxWithLoss, bottom: [fc, label], ignore_label: 255, phase: train}
  - {name: prob, type: Softmax, bottom: fc, phase: test}
"""

TOKENS = ["${c}", "${c/0}", "${zz}", "-1", "0", "1e9", "[", "]", "{", "}", ":", ",", "Convolution", "Pooling",
          "Eltwise", "bottom", "top", "name", "type", "kernel_size", "stride", "pad", "num_output", "data",
          "conv1", "phase", "train", "param", "lr_mult", "use", "repeat", "include", "~", "'", '"', "\t", "&a", "*a"]


def compile_text(text: str, phase: str) -> None:
    doc = parse.loads(text, "fuzz.yaml")
    doc = expand(doc, base_dir=DATA)
    net = build_ir(filter_phase(doc, phase), phase)
    generate(infer_shapes(net))


def mutate(text: str, rnd: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(5)
        i = rnd.randrange(len(lines))
        if op == 0:
            del lines[i]
            if not lines:
                lines = [""]
        elif op == 1:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op == 2:
            line = lines[i]
            j = rnd.randrange(len(line) + 1)
            lines[i] = line[:j] + rnd.choice(TOKENS) + line[j:]
        elif op == 3:
            line = lines[i]
            words = line.split(" ")
            if len(words) > 1:
                a, b = rnd.randrange(len(words)), rnd.randrange(len(words))
                words[a], words[b] = words[b], words[a]
                lines[i] = " ".join(words)
        else:
            import re
            nums = list(re.finditer(r"\b\d+\b", lines[i]))
            if nums:
                m = rnd.choice(nums)
                lines[i] = lines[i][:m.start()] + str(rnd.choice([0, -1, 1, 2, 99, 100000])) + lines[i][m.end():]
    return "\n".join(lines) + "\n"


def test_small_net_compiles_both_phases():
    compile_text(SMALL, "train")
    compile_text(SMALL, "test")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), phase=st.sampled_from(["train", "test"]))
def test_mutated_netdefs_raise_only_project_errors(seed, phase):
    text = mutate(SMALL, random.Random(seed))
    try:
        compile_text(text, phase)
    except DeepLabError as err:
        assert "\n" not in str(err)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_zoo_netdef_raises_only_project_errors(seed, tmp_path_factory):
    rnd = random.Random(seed)
    src = open(os.path.join(NETDEF, "deeplab_largefov.yaml")).read()
    d = tmp_path_factory.mktemp("zoo")
    os.makedirs(d / "lib", exist_ok=True)
    (d / "lib" / "vgg16.yaml").write_text(open(os.path.join(NETDEF, "lib", "vgg16.yaml")).read())
    (d / "net.yaml").write_text(mutate(src, rnd))
    try:
        net = build_ir(filter_phase(load_netdef(str(d / "net.yaml"), {"crop": 33}), "test"), "test")
        infer_shapes(net)
    except DeepLabError as err:
        assert "\n" not in str(err)


# ---------------------------------------------------------------- hostile netdefs
#
# Generators for what a careless or hostile user may write: alias bombs, text that
# doubles through variables or template calls, huge sizes and long integers (YAML and
# prototxt), mixed with the mutations above.  Each case goes through the whole front end
# (load by suffix .. passes .. the table .. codegen) and must end in a DeepLabError or
# succeed, quickly.  The default run takes a few cases of each; ``-m slow`` runs 10,000.

SMALL_PROTOTXT = """\
name: "small"
input: "data"
input_shape { dim: 1 dim: 3 dim: 13 dim: 13 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "up" type: "Interp" bottom: "pool1" top: "up" interp_param { zoom_factor: 2 } }
"""

HUGE_INTS = [200000, 10 ** 6, 10 ** 9, 2 ** 31, 2 ** 32 + 1, 2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, 10 ** 18,
             10 ** 30, 10 ** 308, 10 ** 400, -(10 ** 9), 0]
SIZE_FIELDS = ["num_output", "kernel_size", "pad", "stride", "dilation", "group", "zoom_factor",
               "shrink_factor", "height", "width", "axis", "concat_dim", "lr_mult", "decay_mult", "std",
               "value", "coeff", "ignore_label", "num_axes", "pad_beg", "pad_end"]
# layers whose numbers (integers and floats) take a huge value: V
HUGE_LAYERS = [
    "{name: big, type: Convolution, bottom: data, num_output: 2, kernel_size: 1, param: {lr_mult: V}}",
    "{name: big, type: Convolution, bottom: data, num_output: 2, kernel_size: 1, weight_filler: {type: gaussian, std: V}}",
    "{name: big, type: Deconvolution, bottom: data, num_output: 2, kernel_size: 2, stride: V}",
    "{name: big, type: Deconvolution, bottom: data, num_output: 2, kernel_size: 2, dilation: V}",
    "{name: big, type: Pooling, bottom: data, pool: AVE, kernel_size: V}",
    "{name: big, type: Pooling, bottom: data, pool: MAX, kernel_size: 2, pad: V}",
    "{name: big, type: Interp, bottom: data, zoom_factor: V}",
    "{name: big, type: Interp, bottom: data, height: V, width: 3}",
    "{name: big, type: InnerProduct, bottom: data, num_output: V}",
    "{name: big, type: Dropout, bottom: data, dropout_ratio: V}",
    "{name: big, type: ReLU, bottom: data, negative_slope: V}",
    "{name: big, type: BatchNorm, bottom: data, eps: V}",
    "{name: big, type: Eltwise, bottom: [data, data], coeff: [V, 1]}",
    "{name: big, type: Clip, bottom: data, min: 0, max: V}",
    "{name: big, type: Reshape, bottom: data, shape: [V, -1]}",
    "{name: big, type: Slice, bottom: data, slice_point: [V]}",
    "{name: big, type: Crop, bottom: [data, data], offset: [V]}",
    "{name: big, type: SoftmaxWithLoss, bottom: [fc, label], loss_weight: V, phase: train}",
    "{name: big, type: SegAccuracy, bottom: [fc, label], ignore_label: [V], phase: train}",
]


def _alias_chain(rnd: random.Random, indent: str) -> tuple[str, str]:
    """Nested anchored lists (each holding aliases of the one before); returns the text
    and the last anchor's name."""
    levels, width = rnd.randint(2, 12), rnd.randint(2, 12)
    leaf = rnd.choice(["x", "1", "{a: 1}", "'${c}'", "[1, 2]"])
    lines = [f"{indent}b0: &b0 [" + ", ".join([leaf] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"{indent}b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]")
    return "\n".join(lines), f"b{levels - 1}"


def alias_bomb(rnd: random.Random) -> tuple[str, str]:
    where = rnd.choice(["vars", "layer", "with", "templates", "layers", "repeat", "inputs"])
    if where == "vars":
        chain, last = _alias_chain(rnd, "  ")
        return SMALL.replace("vars: {c: 4, k: 3}", "vars:\n  c: 4\n  k: 3\n" + chain
                             + rnd.choice(["", f"\n  z: *{last}"])), ".yaml"
    if where == "layer":
        chain, last = _alias_chain(rnd, "      ")
        return SMALL + f"  - name: junk\n    type: ReLU\n    bottom: fc\n    extra:\n{chain}\n", ".yaml"
    if where in ("with", "repeat"):
        chain, last = _alias_chain(rnd, "          ")
        head = f"  - repeat: {rnd.choice([2, 100, 10000])}\n    use: t\n" if where == "repeat" else "  - use: t\n"
        body = rnd.choice(['{name: "${name}", type: ReLU, bottom: fc, x: "${x}"}',
                           '{name: "${name}", type: ReLU, bottom: fc, x: "${x}", y: "${x}", z: "${x}"}'])
        text = SMALL.replace("layers:\n", "templates:\n  t:\n    params: {name: ~, x: 0}\n    layers:\n"
                             f"      - {body}\nlayers:\n", 1)
        name = "t${i}" if where == "repeat" else "t0"
        return text + head + f"    with:\n      name: \"{name}\"\n      x:\n{chain}\n", ".yaml"
    if where == "templates":
        chain, last = _alias_chain(rnd, "      ")
        return SMALL.replace("layers:\n", f"templates:\n  t:\n    params:\n{chain}\n    layers: []\nlayers:\n", 1), ".yaml"
    if where == "layers":
        n = rnd.randint(2, 12)
        lines = ["  - &l0 {name: r, type: ReLU, bottom: fc, top: fc}"]
        return SMALL + "\n".join(lines + [f"  - *l0"] * n) + "\n", ".yaml"
    chain, last = _alias_chain(rnd, "  ")
    return SMALL.replace("inputs:\n", f"x:\n{chain}\ninputs:\n  big: *{last}\n", 1), ".yaml"


def string_doubling(rnd: random.Random) -> tuple[str, str]:
    n, copies = rnd.randint(5, 60), rnd.choice([2, 2, 3, 10])
    base = rnd.choice(["ab", "x" * 1000, "${c}", "$$"])
    if rnd.random() < 0.2:       # many long texts, each under the limit
        long = "y" * rnd.choice([1000, 30000, 65000])
        return SMALL.replace("vars: {c: 4, k: 3}", f"vars: {{c: 4, k: 3, s: {long}}}") + (
            f"  - repeat: {rnd.choice([10, 300, 10000])}\n    layers: [{{name: \"r${{i}}${{s}}\", "
            "type: ReLU, bottom: fc}]\n"), ".yaml"
    if rnd.random() < 0.6:
        lines = [f"  v0: \"{base}\""] + [f'  v{i}: "' + f"${{v{i - 1}}}" * copies + '"' for i in range(1, n)]
        use = rnd.choice([f'"${{v{n - 1}}}"', f'"a${{v{n - 1}}}"', f'"${{v{rnd.randrange(n)}}}"'])
        text = SMALL.replace("vars: {c: 4, k: 3}", "vars:\n  c: 4\n  k: 3\n" + "\n".join(lines))
        return text + f"  - {{name: {use}, type: ReLU, bottom: fc}}\n", ".yaml"
    arg = '"' + "${s}" * copies + '"'
    text = SMALL.replace("layers:\n", "templates:\n  t:\n    params: {name: ~, s: ~}\n    layers:\n"
                         "      - {name: \"${name}\", type: ReLU, bottom: fc, note: \"${s}\"}\n"
                         f"      - use: t\n        with: {{name: \"${{name}}x\", s: {arg}}}\nlayers:\n", 1)
    return text + f"  - use: t\n    with: {{name: a, s: \"{base}\"}}\n", ".yaml"


def huge_sizes(rnd: random.Random) -> tuple[str, str]:
    prototxt = rnd.random() < 0.3
    text = SMALL_PROTOTXT if prototxt else SMALL
    for _ in range(rnd.randint(1, 3)):
        value = str(rnd.choice(HUGE_INTS))
        if prototxt:
            nums = list(re.finditer(r"(?<=: )\d+(\.\d+)?", text))
        else:
            nums = list(re.finditer(r"(?<=[:\[,] )\d+(\.\d+)?|\$\{[ck]\}", text))
        m = rnd.choice(nums)
        text = text[:m.start()] + value + text[m.end():]
    if not prototxt and rnd.random() < 0.3:
        field = rnd.choice(SIZE_FIELDS)
        text += f"  - {{name: big, type: Convolution, bottom: data, num_output: 2, kernel_size: 1, " \
                f"{field}: {rnd.choice(HUGE_INTS)}}}\n"
    elif not prototxt and rnd.random() < 0.5:
        value = rnd.choice(HUGE_INTS + ["1e308", "1.7e308", "-1e308", ".inf", "-.inf", ".nan"])
        text += "  - " + rnd.choice(HUGE_LAYERS).replace("V", str(value)) + "\n"
    return text, ".prototxt" if prototxt else ".yaml"


def long_integers(rnd: random.Random) -> tuple[str, str]:
    digits = rnd.choice([19, 20, 40, 309, 400, 3999, 4000, 4001, 4300, 4301, 5000, 20000])
    number = rnd.choice(["9", "1", "0"]) * digits
    form = rnd.choice(["", "-", "0x", "", "1e", "${"])
    if form == "1e":
        number = "1e" + number[:6]
    elif form == "${":
        number = "${" + number + " + c}"
    else:
        number = form + number
    if rnd.random() < 0.4:
        fields = re.findall(r"(\w+): \d", SMALL_PROTOTXT)
        text = re.sub(rf"\b{rnd.choice(fields)}: \d+(\.\d+)?", lambda m: m.group(0).split(":")[0] + ": " + number,
                      SMALL_PROTOTXT, count=1)
        return text, ".prototxt"
    nums = list(re.finditer(r"(?<=[:\[,] )\d+|\$\{[ck]\}", SMALL))
    m = rnd.choice(nums)
    return SMALL[:m.start()] + number + SMALL[m.end():], ".yaml"


def mutated(rnd: random.Random) -> tuple[str, str]:
    return mutate(SMALL, rnd), ".yaml"


GENERATORS = {"alias_bomb": alias_bomb, "string_doubling": string_doubling, "huge_sizes": huge_sizes,
              "long_integers": long_integers, "mutated": mutated}


def compile_any(text: str, suffix: str, phase: str, fuse) -> None:
    """The whole front end as the commands run it, the module built under a small
    parameter limit (the limit is what is tested, not the allocator)."""
    from deeplab_compile import compiler, summary
    doc = expand(compiler.loads(text, "fuzz" + suffix), base_dir=DATA)
    net = compiler.net_from_doc(doc, phase=phase, fuse=fuse)
    summary.format_table(net)
    generate(net, max_param_gib=0.25)


class _Overtime(Exception):
    pass


def run_case(kind: str, seed: int) -> tuple[str | None, float]:
    """Run one generated case: (the project error's class name, or None when it
    compiled; seconds).  Any other exception propagates."""
    rnd = random.Random(seed)
    text, suffix = GENERATORS[kind](rnd)
    phase, fuse = rnd.choice(["train", "test"]), rnd.choice([None, False, True])
    start = time.perf_counter()
    try:
        compile_any(text, suffix, phase, fuse)
        outcome = None
    except DeepLabError as err:
        msg = str(err)
        assert msg and "\n" not in msg, (kind, seed, msg[:300])
        outcome = type(err).__name__
    return outcome, time.perf_counter() - start


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_hostile_netdefs_raise_only_project_errors(kind):
    outcomes = [run_case(kind, seed)[0] for seed in range(12)]
    if kind != "mutated":
        assert any(o is not None for o in outcomes), "the generator made only valid netdefs"


@pytest.mark.slow
def test_hostile_netdefs_slow():
    """10,000 generated cases: no exception but DeepLabError, none over 10 s.  The
    counts are printed (pytest -s) for the record."""
    cases, errors, foreign, slowest, over = 0, {}, [], (0.0, None), []

    def alarm(signum, frame):
        raise _Overtime()

    old = signal.signal(signal.SIGALRM, alarm)
    try:
        for seed in range(10_000):
            kind = sorted(GENERATORS)[seed % len(GENERATORS)]
            signal.alarm(60)            # a hang becomes a failure, not a stuck run
            try:
                outcome, seconds = run_case(kind, seed)
            except _Overtime:
                outcome, seconds = "overtime", 60.0
            except Exception as err:    # noqa: BLE001  (what this test counts)
                foreign.append((kind, seed, f"{type(err).__name__}: {str(err)[:200]}"))
                outcome, seconds = "foreign", 0.0
            finally:
                signal.alarm(0)
            cases += 1
            key = f"{kind}:{outcome or 'compiled'}"
            errors[key] = errors.get(key, 0) + 1
            if seconds > slowest[0]:
                slowest = (seconds, (kind, seed))
            if seconds > 10:
                over.append((kind, seed, seconds))
    finally:
        signal.signal(signal.SIGALRM, old)
    print(f"\ncases {cases}; non-project exceptions {len(foreign)}; over 10 s {len(over)}; "
          f"slowest {slowest[0]:.2f} s {slowest[1]}")
    for key in sorted(errors):
        print(f"  {key}: {errors[key]}")
    assert cases >= 10_000
    assert not foreign, foreign[:5]
    assert not over, over[:5]

"""Mutated netdefs through the whole front end (parse .. shapes .. codegen) raise only
the project's own error type, never anything else."""
import os
import random

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

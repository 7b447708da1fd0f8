"""The examples in the documentation compile and mean what the text says."""
import os
import re

import torch

import deeplab_compile

from conftest import ROOT


def yaml_blocks(path):
    text = open(os.path.join(ROOT, path)).read()
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def test_first_netdef_in_the_language_reference(tmp_path):
    block = yaml_blocks("docs/netdef.md")[0]
    p = tmp_path / "tiny.yaml"
    p.write_text(block)
    train = deeplab_compile.compile(str(p), phase="train")
    assert train.output_names == ["loss"]
    out = train(torch.randn(2, 3, 65, 65), torch.randint(0, 21, (2, 1, 65, 65)).float())
    assert out["loss"].ndim == 0
    test = deeplab_compile.compile(str(p))
    assert test(torch.randn(1, 3, 65, 65))["score_up"].shape == (1, 21, 65, 65)


def test_template_example_in_the_language_reference(tmp_path):
    block = [b for b in yaml_blocks("docs/netdef.md") if b.startswith("templates:")][0]
    p = tmp_path / "t.yaml"
    p.write_text("name: t\ninputs: {data: [3, 9, 9]}\n" + block +
                 "layers:\n  - use: conv_relu\n    with: {name: conv1, bottom: data}\n")
    gm = deeplab_compile.compile(str(p))
    assert gm.conv1.weight.shape == (64, 3, 3, 3) and gm.conv1.padding == (1, 1)
    assert gm.output_names == ["conv1"]

"""Parameter counts and memory from the shape rules alone (deeplab_compile.sizes): they
agree with built modules, the layer table needs no module, and a net whose parameters
exceed the limit is refused with one located line before anything is allocated."""
import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
import torch

from deeplab_compile import sizes, summary
from deeplab_compile.codegen import generate, io_names, module_name, parameter_count
from deeplab_compile.compiler import build_net, compile_net
from deeplab_compile.errors import DeepLabError
from deeplab_compile.layers import registry
from deeplab_compile.layers.base import LayerType
from deeplab_compile.layers.testing import make_layer
from deeplab_compile.netdef.errors import SizeError

from conftest import DATA, NETDEF, ROOT
from test_layers import CASES

torch.set_num_threads(1)

HUGE = """\
name: huge
vars: {n: 200000}
inputs:
  data: [3, 8, 8]
layers:
  - {name: conv1, type: Convolution, bottom: data, num_output: 1280, kernel_size: 1}
  - {name: conv2, type: Convolution, bottom: conv1, num_output: "${n}", kernel_size: 1}
"""
# conv2 holds 1280 * 200000 + 200000 floats: 0.95 GiB, under the default limit of 4 GiB


@pytest.fixture
def huge(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE)
    return str(path)


@pytest.fixture
def no_limit_env(monkeypatch):
    """The limit variable unset, and unset again afterwards (the flag sets it)."""
    monkeypatch.setenv(sizes.ENV_VAR, "4")
    monkeypatch.delenv(sizes.ENV_VAR)


@pytest.fixture
def no_build(monkeypatch):
    """Any module build fails the test: what follows must come from the shape rules."""
    def refuse(self, layer):
        raise AssertionError(f"built a module for {layer.name}")
    for name in registry.known_types():
        monkeypatch.setattr(type(registry.get(name)), "build", refuse)


# ---------------------------------------------------------------- the layer types

@pytest.mark.parametrize("type_name", sorted(CASES))
def test_param_shapes_and_buffer_bytes_match_the_built_module(type_name):
    spec = registry.get(type_name)
    for params, shapes, kw in CASES[type_name]:
        layer, mod = make_layer(type_name, params, shapes, **kw)
        built = {n: tuple(p.shape) for n, p in mod.named_parameters(recurse=False)}
        assert spec.param_shapes(layer) == built, (params, shapes)
        buffers = sum(b.numel() * b.element_size() for b in mod.buffers())
        assert spec.buffer_bytes(layer) == buffers, (params, shapes)


def test_a_type_with_blobs_must_say_its_param_shapes():
    class Learned(LayerType):
        type_name = "Learned"
        blobs = ("weight",)
    with pytest.raises(NotImplementedError):
        Learned().param_shapes(None)
    assert LayerType().param_shapes(None) == {} and LayerType().buffer_bytes(None) == 0


# ---------------------------------------------------------------- whole nets

def _built_rows(gm):
    """Parameters per layer row, read off a built module (shared tensors once)."""
    seen, out = set(), {}
    for lay in gm.net.layers:
        n = 0
        for m in [module_name(lay.name)] + [module_name(a.name) for a in lay.absorbed]:
            if hasattr(gm, m):
                for p in getattr(gm, m).parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        n += p.numel()
        out[lay.name] = n
    return out


@pytest.mark.parametrize("netdef,phase,fuse", [
    ("deeplab_largefov_tiny.yaml", "train", False),
    ("deeplab_largefov_tiny.yaml", "test", True),
    ("deeplab_v2_resnet101_msc.yaml", "test", True),        # shared weights, fused ASPP sums, folded BN
    ("deeplab_v3plus_mobilenetv2.yaml", "test", True),      # the fused v3 head
    ("deeplab_v2_vgg16_aspp_l.yaml", "test", True),         # ConvSum
])
def test_counts_from_shape_rules_match_the_built_module(netdef, phase, fuse):
    small = {"data": "1x3x65x65"} if phase == "test" else None      # the sizes do not change the counts
    net = build_net(os.path.join(NETDEF, netdef), phase=phase, fuse=fuse, inputs=small)
    counts = sizes.layer_params(net)
    gm = generate(net)
    assert counts == _built_rows(gm)
    assert sum(counts.values()) == parameter_count(gm)
    assert io_names(net) == (gm.input_names, gm.output_names)
    built = sum(sizes.build_bytes(net).values())
    held = sum(t.numel() * t.element_size() for t in [*gm.parameters(), *gm.buffers()])
    if netdef == "deeplab_v2_resnet101_msc.yaml":
        assert built > held       # each scale's branch is built, then shares the first's weights
    else:
        assert built == held


def test_table_needs_no_module(no_build):
    net = build_net(os.path.join(NETDEF, "deeplab_largefov.yaml"))
    text = summary.format_table(net)
    assert "total: 20,505,429 parameters" in text      # as published for DeepLab-LargeFOV
    assert "4,719,616" in text.split("\nfc6 ")[1].splitlines()[0]


def test_table_of_a_net_too_large_to_build(huge, no_build):
    net = build_net(huge, vars={"n": 10 ** 9})
    text = summary.format_table(net)
    assert f"total: {1280 * 10 ** 9 + 10 ** 9 + 1280 * 3 + 1280:,} parameters" in text


# ---------------------------------------------------------------- the limit

def test_generate_refuses_before_building(huge, no_build, no_limit_env):
    net = build_net(huge, vars={"n": 10 ** 9})
    with pytest.raises(SizeError) as info:
        generate(net)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{huge}:7:")
    assert "layer 'conv2' (Convolution)" in msg and "over the limit of 4 GiB" in msg
    assert "--max-param-gib" in msg and sizes.ENV_VAR in msg


def test_compile_net_with_a_billion_outputs_allocates_nothing(huge, no_limit_env):
    tracemalloc.start()
    try:
        with pytest.raises(SizeError):
            compile_net(huge, vars={"n": 10 ** 9})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20


def test_limit_from_argument_and_environment(huge, monkeypatch, no_limit_env):
    net = build_net(huge)                                # 0.95 GiB
    with pytest.raises(SizeError, match="over the limit of 0.5 GiB"):
        sizes.check_memory(net, 0.5)
    monkeypatch.setenv(sizes.ENV_VAR, "0.5")
    with pytest.raises(SizeError, match="over the limit of 0.5 GiB"):
        compile_net(huge)
    assert sizes.check_memory(net, 2) == 4 * (1280 * 200000 + 200000 + 1280 * 3 + 1280)
    monkeypatch.setenv(sizes.ENV_VAR, "lots")
    with pytest.raises(DeepLabError, match=f"{sizes.ENV_VAR} must be a positive number of GiB"):
        sizes.check_memory(net)
    with pytest.raises(DeepLabError, match="max_param_gib must be a positive number"):
        sizes.check_memory(net, -1)


def test_every_zoo_net_fits_the_default_limit(no_limit_env):
    for name in sorted(os.listdir(NETDEF)):
        if name.endswith(".yaml"):
            net = build_net(os.path.join(NETDEF, name), phase="train")
            assert sizes.check_memory(net) < sizes.DEFAULT_MAX_PARAM_GIB * 2 ** 30 / 4, name


# ---------------------------------------------------------------- the commands

def _compile_cli(*argv, env=None):
    """deeplab-compile in a fresh process; returns (rc, stdout, stderr, peak RSS in MiB)."""
    # VmHWM is the peak RSS of this process image; getrusage's ru_maxrss would also
    # count the parent's memory, which a forked child inherits until it execs
    code = textwrap.dedent("""\
        import resource, sys
        from deeplab_compile.cli.compile import main
        rc = main(sys.argv[1:])
        try:
            with open("/proc/self/status") as f:
                peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        except OSError:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("PEAK_RSS_KB", peak, file=sys.stderr)
        sys.exit(rc)
    """)
    env = {**{k: v for k, v in os.environ.items() if k != sizes.ENV_VAR}, "PYTHONPATH": ROOT,
           **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    err, _, rss = proc.stderr.rpartition("PEAK_RSS_KB ")
    return proc.returncode, proc.stdout, err, int(rss) / 1024


def test_cli_table_of_200000_outputs_without_allocating(huge):
    rc, out, err, rss = _compile_cli(huge)
    assert rc == 0, err
    assert f"total: {1280 * 200000 + 200000 + 1280 * 3 + 1280:,} parameters" in out
    assert "1x200000x8x8" in out
    # building it would take 977 MiB on top of torch itself (about 250 MiB)
    assert rss < 700, f"peak RSS {rss:.0f} MiB"


def test_cli_a_billion_outputs_is_one_line_exit_2(huge):
    rc, out, err, rss = _compile_cli(huge, "-D", "n=1000000000")
    assert rc == 2
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert f"{huge}:7:" in err and "layer 'conv2' (Convolution): the net's parameters need" in err
    assert rss < 700, f"peak RSS {rss:.0f} MiB"


def test_cli_flag_raises_and_lowers_the_limit(huge):
    rc, out, err, _ = _compile_cli(huge, "--max-param-gib", "0.5")
    assert rc == 2 and "over the limit of 0.5 GiB" in err
    rc, out, err, _ = _compile_cli(huge, "-D", "n=1000000000", "--max-param-gib", "100000", "-q")
    assert rc == 0, err
    rc, out, err, _ = _compile_cli(huge, "--max-param-gib", "none")
    assert rc == 2 and err.count("\n") == 1
    assert "--max-param-gib must be a positive number of GiB, got 'none'" in err


@pytest.mark.parametrize("command", ["train", "test", "predict", "convert"])
def test_every_building_command_takes_the_flag(command, monkeypatch, no_limit_env):
    import importlib
    mod = importlib.import_module(f"deeplab_compile.cli.{command}")
    with pytest.raises(DeepLabError, match="--max-param-gib must be a positive number"):
        mod.build_parser().parse_args(["--max-param-gib", "0"])
    assert sizes.ENV_VAR not in os.environ


def test_predict_refuses_a_net_over_the_limit(tmp_path, capsys, no_limit_env):
    from deeplab_compile.cli.predict import main
    image = os.path.join(DATA, "voc_sample", "2007_000033.png")
    rc = main([image, "--netdef", os.path.join(NETDEF, "deeplab_largefov_tiny.yaml"),
               "-o", str(tmp_path / "out"), "--max-param-gib", "0.0001"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "over the limit of 0.0001 GiB" in err

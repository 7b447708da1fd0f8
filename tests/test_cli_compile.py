"""`deeplab-compile` as a user runs it: the table, -D, --phase, --input, --emit, errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import deeplab_compile
from deeplab_compile.cli.compile import main

from conftest import NETDEF, ROOT

LARGEFOV = os.path.join(NETDEF, "deeplab_largefov.yaml")
ASPP_L = os.path.join(NETDEF, "deeplab_v2_vgg16_aspp_l.yaml")


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_table_default(capsys):
    rc, out, err = run(capsys, LARGEFOV)
    assert rc == 0, err
    assert "phase test" in out
    lines = {l.split()[0]: l for l in out.splitlines() if l.strip() and not l.startswith(("-", "total"))}
    assert "1x21x41x41" in lines["fc8"]
    assert "conv1_1" in lines and "Convolution" in lines["conv1_1"]
    assert "data -> conv1_1" in lines["conv1_1"]
    assert "4,719,616" in lines["fc6"]
    assert "total: 20,505,429 parameters" in out
    # stride column: fc8 is at output stride 8, fc8_interp back at 1
    assert lines["fc8"].split()[-2] == "8"
    assert "1x21x321x321" in lines["fc8_interp"]


def test_table_flops_total_matches_hand_count(capsys):
    rc, out, _ = run(capsys, LARGEFOV, "--input", "data=1x3x321x321")
    # conv MAdds: sum over convs of Cout*Ho*Wo*Cin*k*k at the 321 input
    sizes = {1: 321, 2: 161, 3: 81, 4: 41, 5: 41}
    chans = [(1, 3, 64), (1, 64, 64), (2, 64, 128), (2, 128, 128), (3, 128, 256), (3, 256, 256), (3, 256, 256),
             (4, 256, 512), (4, 512, 512), (4, 512, 512), (5, 512, 512), (5, 512, 512), (5, 512, 512)]
    madds = sum(cout * sizes[s] ** 2 * cin * 9 for s, cin, cout in chans)
    madds += 41 * 41 * (1024 * 512 * 9 + 1024 * 1024 + 21 * 1024)
    total_line = [l for l in out.splitlines() if l.startswith("total:")][0]
    assert f"{madds / 1e9:.2f}G multiply-adds" in total_line


def test_defines_phase_and_input(capsys):
    rc, out, _ = run(capsys, LARGEFOV, "-D", "num_classes=59", "--phase", "train", "--input", "data=1x3x513x513",
                     "-D", "crop=513")
    assert rc == 0
    assert "phase train" in out
    assert "1x59x65x65" in out
    assert "loss" in out and "SoftmaxWithLoss" in out


@pytest.mark.parametrize("argv,needle", [
    (["-D", "num_clases=59"], "did you mean 'num_classes'"),
    (["-D", "oops"], "write -D name=value"),
    (["--input", "dat=1x3x9x9"], "did you mean 'data'"),
    (["-o", "x.py"], "-o given without --emit"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, needle):
    rc, out, err = run(capsys, LARGEFOV, *argv)
    assert rc == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_missing_file(capsys, tmp_path):
    rc, _, err = run(capsys, str(tmp_path / "nope.yaml"))
    assert rc == 2 and "no such file" in err


@pytest.mark.parametrize("typed,meant", [
    ("deeplab_largefov.yml", "deeplab_largefov.yaml"),        # another suffix beside it
    ("deeplab_largefv.yaml", "deeplab_largefov.yaml"),        # a near name beside it
])
def test_a_mistyped_netdef_path_names_the_file_meant(capsys, typed, meant):
    rc, _, err = run(capsys, os.path.join(NETDEF, typed))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"did you mean '{os.path.join(NETDEF, meant)}'?" in err


def test_a_mistyped_zoo_name_names_the_zoo_net(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "deeplab_largefv")
    assert rc == 2 and "did you mean 'deeplab_largefov'?" in err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninputs: {data: [3, 8, 8]}\nlayers:\n  - {name: a, type: Relu, bottom: data}\n")
    proc = subprocess.run([sys.executable, "-m", "deeplab_compile.cli.compile", str(bad)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{bad}:4:" in proc.stderr and "layer 'a' (Relu): unknown layer type 'Relu'; did you mean 'ReLU'?" in proc.stderr


def test_emit_python(capsys, tmp_path):
    out = tmp_path / "largefov.py"
    rc, _, _ = run(capsys, LARGEFOV, "-q", "--emit", "python", "-o", str(out))
    assert rc == 0
    text = out.read_text()
    assert "def forward(self, data)" in text and "self.fc8(" in text
    compile(text, str(out), "exec")


@pytest.mark.parametrize("path", [LARGEFOV, ASPP_L])
def test_emit_yaml_compiles_to_the_same_graph(capsys, tmp_path, path):
    out = tmp_path / "expanded.yaml"
    rc, _, _ = run(capsys, path, "-q", "--emit", "yaml", "-o", str(out))
    assert rc == 0
    doc = yaml.safe_load(out.read_text())
    assert "templates" not in doc and "include" not in doc
    for phase in ("train", "test"):
        torch.manual_seed(0)
        a = deeplab_compile.compile(path, phase=phase, vars={"crop": 49})
        torch.manual_seed(0)
        b = deeplab_compile.compile(str(out), phase=phase, vars={"crop": 49})
        assert a.code == b.code
        assert [(n, tuple(p.shape)) for n, p in a.named_parameters()] == \
               [(n, tuple(p.shape)) for n, p in b.named_parameters()]
        assert a.param_info == b.param_info


def test_emit_dot(capsys, tmp_path):
    out = tmp_path / "net.dot"
    rc, _, _ = run(capsys, ASPP_L, "-q", "--emit", "dot", "-o", str(out))
    text = out.read_text()
    assert text.startswith('digraph "deeplab_v2_vgg16_aspp_l"')
    assert '"layer:fc8" -> "blob:fc8"' in text
    assert '"blob:fc8_4" -> "layer:fc8"' in text


def test_emit_onnx_round_trip(capsys, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "largefov.onnx"
    torch.manual_seed(0)
    rc, _, err = run(capsys, LARGEFOV, "-q", "-D", "crop=65", "--emit", "onnx", "-o", str(out))
    assert rc == 0, err
    # the artifact must reproduce the compiled net: rebuild it with the same seed
    torch.manual_seed(0)
    gm = deeplab_compile.compile(LARGEFOV, vars={"crop": 65})
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        ref = gm(x)["fc8_interp"].numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"data": x.numpy()})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_emit_torchscript(capsys, tmp_path):
    out = tmp_path / "net.pt"
    torch.manual_seed(0)
    rc, _, err = run(capsys, os.path.join(os.path.dirname(__file__), "data", "nets", "multi_top.yaml"),
                     "-q", "--emit", "torchscript", "-o", str(out))
    assert rc == 0, err
    torch.manual_seed(0)
    gm = deeplab_compile.compile(os.path.join(os.path.dirname(__file__), "data", "nets", "multi_top.yaml"))
    loaded = torch.jit.load(str(out))
    x = torch.randn(1, 6, 8, 8)
    torch.testing.assert_close(loaded(x)["cat"], gm(x)["cat"])


def test_failed_emit_leaves_no_file(capsys, tmp_path, monkeypatch):
    from deeplab_compile import emit
    out = tmp_path / "x.dot"

    def boom(gm):
        raise RuntimeError("disk full")
    monkeypatch.setattr(emit, "dot_text", boom)
    with pytest.raises(RuntimeError):
        main([LARGEFOV, "-q", "--emit", "dot", "-o", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_define_values_are_read_as_netdef_scalars():
    from deeplab_compile.cli.compile import parse_defines
    assert parse_defines(["a=59", "b=1e-3", "c=true", "d=yes", "e=/data/VOC2012"]) == \
        {"a": 59, "b": 0.001, "c": True, "d": "yes", "e": "/data/VOC2012"}


def test_layers_reference_lists_every_type_and_their_params(capsys):
    from deeplab_compile.layers import registry
    rc, out, _ = run(capsys, "--layers")
    assert rc == 0
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert listed == registry.known_types()
    rc, out, _ = run(capsys, "--layers", "Convolution")
    assert "num_output" in out and "required" in out and "alias: hole" in out
    rc, _, err = run(capsys, "--layers", "Convolutoin")
    assert rc == 2 and "did you mean 'Convolution'" in err


def test_written_artifacts_have_ordinary_permissions(capsys, tmp_path):
    out = tmp_path / "net.dot"
    rc, _, _ = run(capsys, LARGEFOV, "-q", "--emit", "dot", "-o", str(out))
    mask = os.umask(0)
    os.umask(mask)
    assert rc == 0 and (out.stat().st_mode & 0o777) == 0o666 & ~mask


@pytest.mark.parametrize("text", ["", "a,b", "0.5,-1", "0"])
def test_bad_scales_are_one_line_errors(text):
    from deeplab_compile.cli.common import parse_scales
    from deeplab_compile.errors import DeepLabError
    with pytest.raises(DeepLabError, match="positive numbers"):
        parse_scales(text)
    assert parse_scales("0.5, 0.75,1") == [0.5, 0.75, 1.0]


def test_info_reports_the_cpu_kernel_paths(capsys, monkeypatch):
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "gemm")
    assert main(["--info"]) == 0
    out = capsys.readouterr().out
    from deeplab_compile.ops import _ext
    if _ext.available():
        assert "aspp_cpu_kernel: gemm" in out and "crf_storage: " in out


def test_bad_kernel_setting_is_a_one_line_error_before_any_work(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "avx512")
    assert main([os.path.join(NETDEF, "deeplab_largefov.yaml"), "--emit", "python", "-o",
                 str(tmp_path / "net.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DEEPLAB_ASPP_CPU_KERNEL must be one of auto, direct, gemm" in err
    assert not (tmp_path / "net.py").exists()
    with pytest.raises(SystemExit) as exit_:          # --help still works, to find the fix
        main(["--help"])
    assert exit_.value.code == 0


def test_deeplab_predict_takes_zoo_names_and_names_the_one_meant(tmp_path, monkeypatch, capsys):
    from deeplab_compile.cli import predict
    from deeplab_compile.netdef.search import find_netdef
    monkeypatch.chdir(tmp_path)
    assert find_netdef("deeplab_largefov_tiny").endswith(os.path.join("netdef", "deeplab_largefov_tiny.yaml"))
    rc = predict.main(["--netdef", "deeplab_largefov_tny", str(tmp_path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'deeplab_largefov_tiny'?" in err and "Traceback" not in err

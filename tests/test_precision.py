"""Precision and memory layout: the solver's ``precision`` / ``channels_last``, the
inference flags, and the custom ops under ``torch.autocast``.

Tolerances, and why:
* bf16 carries 8 mantissa bits (relative rounding 2**-9 ~ 2e-3 per operation); a few
  layers of products and sums stay within 2e-2 relative, the bound test_aspp_ops uses
  for bf16 kernels.  Losses over a few iterations of the tiny net: 2e-2 relative.
* A whole net in bf16 against fp32: relative L2 error of the scores under 5e-2, and at
  least 90% of the pixels with the same label (pixels whose two best scores lie within
  bf16 rounding of each other may swap).
* channels_last against contiguous: the same arithmetic in another order, fp32
  tolerance (1e-4 relative).
"""
import os
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deeplab_compile
from deeplab_compile import ops
from deeplab_compile.data.synthetic import generate
from deeplab_compile.training.loop import train
from deeplab_compile.training.precision import Precision, PrecisionError, resolve_channels_last
from deeplab_compile.training.solver import SolverError, load_solver
from deeplab_compile.weights import load_snapshot

from conftest import NETDEF

TINY = os.path.join(NETDEF, "deeplab_largefov_tiny.yaml")
needs_ext = pytest.mark.skipif(not ops.available(), reason="the compiled extension did not build")
BF16 = 2e-2


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


# --------------------------------------------------------------------------- ops under autocast

def _aspp_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 8, 13, 11, generator=g)
    ws = [torch.randn(5, 8, 3, 3, generator=g) * 0.2 for _ in range(3)]
    bs = [torch.randn(5, generator=g) for _ in range(3)]
    return x, ws, bs, [1, 2, 4]


@needs_ext
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_aspp_sum_takes_the_autocast_dtype(dtype):
    x, ws, bs, rates = _aspp_inputs()
    ref = ops.aspp_sum_reference(x, ws, bs, rates)
    # an fp32 weight beside a reduced-precision activation (what an autocast conv hands on)
    with torch.autocast("cpu", dtype=dtype):
        y = torch.ops.deeplab.aspp_sum(x.to(dtype), ws, bs, rates)
        z = ops.aspp_sum(x, ws, bs, rates)
    assert y.dtype == dtype and z.dtype == dtype
    cast = torch.ops.deeplab.aspp_sum(x.to(dtype), [w.to(dtype) for w in ws], [b.to(dtype) for b in bs], rates)
    assert torch.equal(y, cast)                     # the region's dtype, every input cast to it
    assert rel(y, ref) < BF16 and rel(z, ref) < BF16


@needs_ext
def test_aspp_sum_under_autocast_gives_float32_gradients_to_float32_weights():
    x, ws, bs, rates = _aspp_inputs(1)
    ws = [w.requires_grad_() for w in ws]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.ops.deeplab.aspp_sum(x, ws, bs, rates)
    y.float().square().sum().backward()
    ref_ws = [w.detach().clone().requires_grad_() for w in ws]
    ops.aspp_sum_reference(x, ref_ws, bs, rates).square().sum().backward()
    for w, r in zip(ws, ref_ws):
        assert w.grad.dtype == torch.float32
        assert rel(w.grad, r.grad) < 5e-2       # a gradient sums over many more bf16 terms


def _head_inputs():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 8, 9, 9, generator=g)
    weights = [torch.randn(4, 8, 1, 1, generator=g) * 0.3, torch.randn(4, 8, 3, 3, generator=g) * 0.2]
    biases = [torch.randn(4, generator=g) for _ in range(2)]
    projs = [torch.randn(6, 4, generator=g) * 0.3 for _ in range(2)]
    return (x, weights, biases, [1, 2], projs, torch.randn(3, 8, generator=g) * 0.3, torch.randn(3, generator=g),
            torch.randn(6, 3, generator=g) * 0.3, torch.randn(6, generator=g), True)


@needs_ext
def test_aspp_v3_head_takes_the_autocast_dtype():
    args = _head_inputs()
    ref = ops.aspp_v3_head_reference(*args)
    x = args[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.ops.deeplab.aspp_v3_head(x.bfloat16(), *args[1:], [])
        z = ops.aspp_v3_head(*args, tap_branches=[1])
    assert y.dtype == torch.bfloat16 and z.dtype == torch.bfloat16
    assert rel(y, ref) < BF16 and rel(z, ref) < BF16


@needs_ext
def test_dense_crf_runs_float32_under_autocast():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 10, 12, generator=g) * 255
    unary = torch.randn(1, 4, 10, 12, generator=g).bfloat16()
    args = (3.0, 3.0, 5.0, 50.0, 5.0, 3, "symmetric")
    want = torch.ops.deeplab.dense_crf(img, unary.float(), *args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_op = torch.ops.deeplab.dense_crf(img, unary, *args)
        q_fn = ops.dense_crf(img, unary, *args)
    for q in (q_op, q_fn):
        assert q.dtype == torch.float32
        torch.testing.assert_close(q, want, rtol=0, atol=0)


@needs_ext
def test_permutohedral_filter_runs_float32_under_autocast_and_float64_stays():
    g = torch.Generator().manual_seed(4)
    f = torch.randn(30, 3, generator=g)
    v = torch.randn(30, 2, generator=g).bfloat16()
    want = torch.ops.deeplab.permutohedral_filter(f, v.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = torch.ops.deeplab.permutohedral_filter(f, v)
        b = ops.permutohedral_filter(f, v)
        c = ops.permutohedral_filter(f.double(), v.double())
    assert a.dtype == b.dtype == torch.float32 and c.dtype == torch.float64
    torch.testing.assert_close(a, want, rtol=0, atol=0)
    torch.testing.assert_close(b, want, rtol=0, atol=0)


# --------------------------------------------------------------------------- the solver

@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("syn") / "voc"), num_images=8, min_size=40, max_size=48, seed=5)


def write_solver(folder, syn, extra="", max_iter=4, snapshot=0):
    """The tiny net without dropout (its masks depend on the memory layout)."""
    p = folder / "solver.yaml"
    p.write_text(textwrap.dedent(f"""\
        net: {TINY}
        vars: {{crop: 33, width: 4, dropout: 0.0}}
        data:
          source: {syn}/list/train.txt
          root_folder: {syn}
          batch_size: 2
          mirror: true
          preprocess: tf
          num_workers: 0
        base_lr: 0.01
        lr_policy: fixed
        max_iter: {max_iter}
        momentum: 0.9
        iter_size: 2
        snapshot: {snapshot}
        snapshot_prefix: {folder}/model/run
        random_seed: 3
        """) + extra)
    return str(p)


def run(folder, syn, extra="", **kw):
    folder.mkdir(exist_ok=True)
    return train(load_solver(write_solver(folder, syn, extra, **{k: kw.pop(k) for k in ("max_iter", "snapshot")
                                                                  if k in kw})),
                 progress=False, **{"echo": lambda *_: None, **kw})


@pytest.mark.parametrize("text,where", [("precision: fp8", "precision"), ("precision: [bf16]", "precision"),
                                        ("channels_last: 2", "channels_last")])
def test_bad_precision_or_layout_is_a_located_error(tmp_path, syn, text, where):
    path = write_solver(tmp_path, syn, text + "\n")
    with pytest.raises(SolverError) as e:
        load_solver(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:") and f"field '{where}'" in msg
    if where == "precision":
        assert "fp32, bf16, fp16" in msg


def test_deeplab_train_bad_precision_is_one_line_exit_2(tmp_path, syn, capsys):
    from deeplab_compile.cli.train import main
    path = write_solver(tmp_path, syn, "precision: double\n")
    assert main(["--solver", path, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and path in err[0] and "fp32, bf16, fp16" in err[0]


def test_prototxt_solver_takes_precision_and_channels_last(tmp_path):
    p = tmp_path / "solver.prototxt"
    p.write_text('net: "train.prototxt"\nbase_lr: 0.001\nmax_iter: 10\nprecision: "BF16"\nchannels_last: true\n')
    s = load_solver(str(p))
    assert (s.precision, s.channels_last) == ("bf16", True)
    p.write_text('net: "train.prototxt"\nbase_lr: 0.001\nmax_iter: 10\nprecision: "int8"\n')
    with pytest.raises(SolverError, match=r"solver.prototxt:4:.*fp32, bf16, fp16"):
        load_solver(str(p))


def test_defaults_are_fp32_and_the_layout_auto(tmp_path, syn):
    s = load_solver(write_solver(tmp_path, syn))
    assert (s.precision, s.channels_last) == ("fp32", "auto")
    # auto: channels-last on a CPU, NCHW on CUDA; true and false whatever the device
    assert resolve_channels_last("auto", "cpu") and not resolve_channels_last("auto", "cuda:0")
    assert resolve_channels_last(True, "cuda") and not resolve_channels_last(False, "cpu")


@pytest.mark.parametrize("text,want", [("channels_last: auto", "auto"), ("channels_last: Auto", "auto"),
                                       ("channels_last: true", True), ("channels_last: false", False),
                                       ('channels_last: "true"', True), ("channels_last: 'FALSE'", False),
                                       ("", "auto")])
def test_yaml_channels_last_takes_auto_true_false(tmp_path, syn, text, want):
    assert load_solver(write_solver(tmp_path, syn, text + "\n")).channels_last == want


def test_channels_last_from_a_variable_as_the_experiment_passes_it(tmp_path, syn):
    path = write_solver(tmp_path, syn, "channels_last: ${CL}\n")
    assert [load_solver(path, {"CL": v}).channels_last for v in ("auto", "true", "false", True)] == [
        "auto", True, False, True]


@pytest.mark.parametrize("value", ["2", "maybe", "[true]", "''", "1"])
def test_a_bad_channels_last_names_the_values(tmp_path, syn, value):
    path = write_solver(tmp_path, syn, f"channels_last: {value}\n")
    line = len(open(path).read().splitlines())          # the field is the file's last line
    with pytest.raises(SolverError) as e:
        load_solver(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}:") and "field 'channels_last' must be one of auto, true, false" in msg
    assert "\n" not in msg


def test_deeplab_train_bad_channels_last_is_one_line_exit_2(tmp_path, syn, capsys):
    from deeplab_compile.cli.train import main
    path = write_solver(tmp_path, syn, "channels_last: nhwc\n")
    assert main(["--solver", path, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and path in err[0] and "auto, true, false" in err[0] and "'nhwc'" in err[0]


@pytest.mark.parametrize("line,want", [("channels_last: true\n", True), ("channels_last: false\n", False),
                                       ("", "auto")])
def test_prototxt_channels_last_absent_is_auto(tmp_path, line, want):
    p = tmp_path / "solver.prototxt"
    p.write_text('net: "train.prototxt"\nbase_lr: 0.001\nmax_iter: 10\n' + line)
    assert load_solver(str(p)).channels_last == want
    from deeplab_compile.training.solver import convert_caffe
    fields, _ = convert_caffe(p.read_text(), str(p))      # deeplab-convert: absent stays absent (auto)
    assert fields.get("channels_last", "auto") == want


def test_prototxt_channels_last_is_a_bool_field(tmp_path):
    p = tmp_path / "solver.prototxt"
    p.write_text('net: "train.prototxt"\nbase_lr: 0.001\nmax_iter: 10\nchannels_last: auto\n')
    with pytest.raises(SolverError, match=r"solver.prototxt:4:.*'channels_last' takes true or false"):
        load_solver(str(p))


def test_the_default_layout_trains_channels_last_on_a_cpu_into_an_ordinary_snapshot(tmp_path, syn):
    """auto on the CPU: the run says channels_last and its weights are in that layout; the
    snapshot loads into a fresh compiled net, deeplab-test and a caffemodel as the same
    tensors in NCHW do."""
    import deeplab_compile
    from deeplab_compile.caffe.caffemodel import caffe_state_dict
    from deeplab_compile.cli.convert import main as convert_main
    from deeplab_compile.test import run_test

    lines = []
    folder = tmp_path / "run"
    folder.mkdir()
    res = run(folder, syn, max_iter=2, gpu="cpu", echo=lines.append)
    assert res.iter == 2
    assert any("device cpu, precision fp32, channels_last" in ln for ln in lines), lines
    model = load_snapshot(res.snapshot)["model"]
    w = model["conv1_1.weight"]
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    nchw = {k: v.contiguous() for k, v in model.items()}
    assert nchw["conv1_1.weight"].is_contiguous()
    plain = str(tmp_path / "nchw.pt")
    torch.save(nchw, plain)

    vars_ = {"crop": 33, "width": 4, "dropout": 0.0}
    x = torch.randn(2, 3, 33, 33, generator=torch.Generator().manual_seed(7))

    def outputs(weights):
        net = deeplab_compile.compile(TINY, phase="test", vars=vars_).eval()
        deeplab_compile.load_weights(net, weights)
        for k, v in net.state_dict().items():                 # loaded value for value
            assert torch.equal(v, nchw[k]), k
        with torch.no_grad():
            return net(x)

    a, b = outputs(res.snapshot), outputs(plain)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # deeplab-test on the snapshot writes what it writes from the NCHW copy
    from deeplab_compile.io.features import read_blob
    feats = {}
    for name, weights in (("snap", res.snapshot), ("plain", plain)):
        r = run_test(TINY, weights, list_path=f"{syn}/list/val.txt", root=syn, vars=dict(vars_, crop=49),
                     data={"preprocess": "tf"}, features_dir=str(tmp_path / name), progress=False, num_workers=0)
        feats[name] = {os.path.basename(f): read_blob(f) for f in r.files}
    assert feats["snap"] and feats["snap"].keys() == feats["plain"].keys()
    for k, v in feats["snap"].items():
        np.testing.assert_array_equal(v, feats["plain"][k], err_msg=k)

    # a caffemodel written from the snapshot holds the tensors in Caffe's (NCHW) order
    defines = [a for k, v in vars_.items() for a in ("-D", f"{k}={v}")]
    for name, weights in (("snap", res.snapshot), ("plain", plain)):
        assert convert_main([weights, "--netdef", TINY, *defines, "-o", str(tmp_path / f"{name}.caffemodel"),
                             "-q"]) == 0
    data = (tmp_path / "snap.caffemodel").read_bytes()
    assert data == (tmp_path / "plain.caffemodel").read_bytes()
    net = deeplab_compile.compile(TINY, phase="test", vars=vars_)
    back = caffe_state_dict(net, str(tmp_path / "snap.caffemodel"))
    for k, v in back.items():
        assert torch.equal(v, nchw[k]), k


def test_bf16_training_is_finite_and_close_to_fp32(tmp_path, syn):
    fp32 = run(tmp_path / "fp32", syn)
    bf16 = run(tmp_path / "bf16", syn, "precision: bf16\n")
    a, b = np.array(fp32.history["loss"]), np.array(bf16.history["loss"])
    assert len(a) == len(b) == 4 and np.isfinite(b).all()
    assert (np.abs(b - a) / a).max() < BF16
    assert a[-1] < a[0] and b[-1] < b[0]             # both learn
    # parameters and optimizer state stay float32
    snap = load_snapshot(bf16.snapshot)
    assert all(t.dtype == torch.float32 for t in snap["model"].values() if t.is_floating_point())
    assert snap["solver"]["precision"] == "bf16" and "grad_scaler" not in snap


def test_channels_last_training_equals_contiguous(tmp_path, syn):
    plain = run(tmp_path / "plain", syn, "channels_last: false\n")
    nhwc = run(tmp_path / "nhwc", syn, "channels_last: true\n")
    np.testing.assert_allclose(nhwc.history["loss"], plain.history["loss"], rtol=1e-4)
    a, b = load_snapshot(plain.snapshot)["model"], load_snapshot(nhwc.snapshot)["model"]
    w = b["conv1_1.weight"]
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()   # the layout was used
    assert a["conv1_1.weight"].is_contiguous()                                            # and not here
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_fp16_trains_with_a_grad_scaler_that_resumes(tmp_path, syn):
    if not torch.amp.is_autocast_available("cpu"):
        pytest.skip("no CPU autocast")
    try:
        Precision("fp16").check("cpu")
    except PrecisionError as e:          # this torch lacks fp16 CPU autocast: the error says so
        assert "fp16" in str(e)
        pytest.skip(str(e))
    straight = run(tmp_path / "a", syn, "precision: fp16\n", max_iter=4, snapshot=2)
    assert np.isfinite(straight.history["loss"]).all()
    half = tmp_path / "a" / "model" / "run_iter_2.pt"
    snap = load_snapshot(str(half))
    scaler = snap["grad_scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler
    end = load_snapshot(straight.snapshot)
    os.rename(straight.snapshot, tmp_path / "straight.pt")
    resumed = train(load_solver(str(tmp_path / "a" / "solver.yaml")), resume=str(half), progress=False,
                    echo=lambda *_: None)
    again = load_snapshot(resumed.snapshot)
    assert again["grad_scaler"] == end["grad_scaler"]
    for k, v in end["model"].items():
        assert torch.equal(again["model"][k], v), k


def test_a_precision_the_device_lacks_is_a_solver_error(tmp_path, syn, monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    path = write_solver(tmp_path, syn, "precision: bf16\n")
    with pytest.raises(SolverError, match="precision bf16: torch has no autocast for device 'cpu'") as e:
        train(load_solver(path), progress=False, echo=lambda *_: None)
    assert str(e.value).startswith(path)


# --------------------------------------------------------------------------- inference

V3 = os.path.join(NETDEF, "deeplab_v3_mobilenetv2.yaml")


@pytest.fixture(scope="module")
def v3_net():
    """A v3 net compiled for testing (ASPP fused into deeplab::aspp_v3_head), with
    BatchNorm statistics that are not the identity."""
    torch.manual_seed(0)
    net = deeplab_compile.compile(V3, vars={"crop": 65}).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    x = torch.randn(1, 3, 65, 65, generator=g)
    return net, x


def _scores(net, x, precision):
    with torch.no_grad(), precision.autocast("cpu"):
        out = net(precision.input(x))
    return next(iter(out.values())).float() if isinstance(out, dict) else out.float()


def test_bf16_inference_of_a_zoo_net_is_close_to_fp32(v3_net):
    """A randomly initialised MobileNetV2 (53 layers) amplifies rounding: rounding only its
    weights and input to bf16, with fp32 arithmetic, already moves the scores by several
    percent.  bf16 autocast must stay within twice that (a cast gone wrong, or an op run
    in the wrong dtype, moves them by order one), and 85% of the labels must agree."""
    import copy
    net, x = v3_net
    assert any(n.op == "call_module" and "aspp" in str(n.target).lower() for n in net.graph.nodes)
    ref = _scores(net, x, Precision())
    y = _scores(net, x, Precision("bf16"))
    assert torch.isfinite(y).all()
    rounded = copy.deepcopy(net)
    with torch.no_grad():
        for t in rounded.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.bfloat16().float())
    floor = rel(_scores(rounded, x.bfloat16().float(), Precision()), ref)
    assert 0 < rel(y, ref) < 2 * floor
    agree = float((y.argmax(1) == ref.argmax(1)).float().mean())
    assert agree >= 0.85


def test_channels_last_inference_equals_contiguous(v3_net):
    net, x = v3_net
    ref = _scores(net, x, Precision())
    import copy
    nhwc = Precision("fp32", channels_last=True).model(copy.deepcopy(net))
    y = _scores(nhwc, x, Precision("fp32", channels_last=True))
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


def test_deeplab_test_bf16_writes_float32_features_close_to_fp32(tmp_path, syn):
    from deeplab_compile.cli.test import main
    from deeplab_compile.io.features import read_blob
    net = deeplab_compile.compile(TINY, phase="test", vars={"width": 4})
    torch.save(net.state_dict(), tmp_path / "w.pt")
    lst = os.path.join(syn, "list", "val.txt")
    ids = [ln.split()[0].rsplit("/", 1)[-1].rsplit(".", 1)[0] for ln in open(lst) if ln.strip()]
    common = ["--net", TINY, "--weights", str(tmp_path / "w.pt"), "--list", lst, "--root", syn, "-D", "width=4",
              "--gpu", "cpu", "--workers", "0", "--no-progress"]
    assert main(common + ["--features", str(tmp_path / "fp32")]) == 0
    assert main(common + ["--features", str(tmp_path / "bf16"), "--png", str(tmp_path / "png"),
                          "--precision", "bf16", "--channels-last"]) == 0
    for i in ids:
        a = read_blob(str(tmp_path / "fp32" / f"{i}_blob_0.mat"))
        b = read_blob(str(tmp_path / "bf16" / f"{i}_blob_0.mat"))
        assert b.dtype == np.float32 and a.shape == b.shape
        assert np.linalg.norm(b - a) / np.linalg.norm(a) < 5e-2
        assert os.path.isfile(tmp_path / "png" / f"{i}.png")


@pytest.mark.parametrize("command", ["test", "predict"])
def test_inference_flags_reject_other_values(capsys, command):
    import importlib
    parser = importlib.import_module(f"deeplab_compile.cli.{command}").build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--netdef", "n", "-o", "o", "x.jpg", "--weights", "w",
                           "--precision", "fp64"] if command == "predict" else
                          ["--net", "n", "--weights", "w", "--precision", "fp64"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--precision" in last and "'fp32', 'bf16', 'fp16'" in last
    assert parser.parse_args((["--netdef", "n", "-o", "o", "x.jpg"] if command == "predict" else
                              ["--net", "n", "--weights", "w"]) + ["--precision", "BF16", "--channels-last"]
                             ).precision == "bf16"


def test_deeplab_predict_bf16_channels_last(tmp_path):
    from PIL import Image
    from deeplab_compile.cli.predict import main
    from deeplab_compile.io.palette import read_label_png
    torch.manual_seed(0)
    net = deeplab_compile.compile(V3, vars={"crop": 33})
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pt")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 45, 3), dtype=np.uint8)).save(tmp_path / "im.jpg")
    outs = {}
    for name, flags in (("fp32", []), ("bf16", ["--precision", "bf16", "--channels-last"])):
        assert main(["--netdef", V3, "--weights", str(tmp_path / "w.pt"), str(tmp_path / "im.jpg"), "-o",
                     str(tmp_path / name), "--probs", *flags]) == 0
        outs[name] = (read_label_png(tmp_path / name / "im.png"), np.load(tmp_path / name / "im_probs.npy"))
    (la, pa), (lb, pb) = outs["fp32"], outs["bf16"]
    assert lb.shape == la.shape == (37, 45) and np.allclose(pb.sum(0), 1, atol=1e-2)
    assert np.abs(pb.astype(np.float32) - pa.astype(np.float32)).max() < 5e-2


@needs_ext
def test_the_dispatcher_measures_inside_an_autocast_region_apart(monkeypatch):
    from deeplab_compile.ops import dispatch
    from deeplab_compile.ops.aspp_sum import aspp_sum_choice
    monkeypatch.delenv("DEEPLAB_KERNELS", raising=False)
    x, ws, bs, rates = _aspp_inputs(5)
    dispatch.clear()
    try:
        aspp_sum_choice(x, ws, bs, rates)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            aspp_sum_choice(x, ws, bs, rates)
        keys = [d["key"] for d in dispatch.decisions() if d["key"][0] == "aspp_sum"]
        assert sorted(k[-1] is None for k in keys) == [False, True]
        assert {k[-1] for k in keys} == {None, torch.bfloat16}
    finally:
        dispatch.clear()


def test_precision_benchmark_reports_both_interleaved_and_writes_its_section(monkeypatch, tmp_path, capsys):
    import sys
    from conftest import ROOT
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import timing
    import train as bench
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## benchmarks/train.py\n\nold table\n")
    monkeypatch.setattr(timing, "RESULTS", str(results))
    calls = []
    real = bench.precision_steps

    def spy(*a, **kw):
        steps = real(*a, **kw)
        return {k: (lambda f=f, k=k: calls.append(k) or f()) for k, f in steps.items()}
    monkeypatch.setattr(bench, "precision_steps", spy)
    assert bench.main(["--precision", "--net", "deeplab_largefov_tiny", "--batch", "1", "--size", "33",
                       "--repeats", "2", "--threads", "1", "--write"]) == 0
    assert calls == ["fp32", "bf16"] * 3                 # one warm-up round, then interleaved
    out = capsys.readouterr().out
    for want in ("| fp32 |", "| bf16 |", "bf16 / fp32 steps per second:", "load average"):
        assert want in out
    text = results.read_text()
    assert "old table" in text and "## benchmarks/train.py --precision" in text and "| bf16 |" in text


def test_a_dtype_that_autocast_disables_is_a_clear_error(monkeypatch):
    """Some torch versions warn and leave autocast off for a dtype they lack on a device."""
    import contextlib
    import warnings

    @contextlib.contextmanager
    def disabled(device_type, dtype=None, **kw):
        warnings.warn(f"In {device_type} autocast, but the target dtype is not supported. Disabling autocast.")
        yield
    monkeypatch.setattr(torch, "autocast", disabled)
    with pytest.raises(PrecisionError, match=r"precision fp16: .*does not support torch.float16 \(In cpu autocast"):
        Precision("fp16").check("cpu")
    Precision("fp32").check("cpu")                   # fp32 needs no autocast


@needs_ext
def test_tracing_sees_the_autocast_casts_of_a_custom_op():
    """make_fx (what torch.compile's AOT step runs) records the casts before the op."""
    from torch.fx.experimental.proxy_tensor import make_fx
    x, ws, bs, rates = _aspp_inputs(6)

    def f(x, w0, w1, w2, b0, b1, b2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.ops.deeplab.aspp_sum(x, [w0, w1, w2], [b0, b1, b2], rates)
    g = make_fx(f)(x, *ws, *bs)
    calls = [str(n.target) for n in g.graph.nodes if n.op == "call_function"]
    assert calls[-1] == "deeplab.aspp_sum.default" and calls.count("aten._to_copy.default") == 7
    assert g(x, *ws, *bs).dtype == torch.bfloat16

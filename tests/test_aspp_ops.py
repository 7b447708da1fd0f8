"""deeplab::aspp_sum and deeplab::aspp_v3_head against their PyTorch references."""
import pytest
import torch

from deeplab_compile.ops import _ext, dispatch
from deeplab_compile.ops.aspp_sum import aspp_sum, aspp_sum_auto, aspp_sum_reference
from deeplab_compile.ops.aspp_v3_head import aspp_v3_head, aspp_v3_head_reference

HAS_OPS = _ext.has_kernel("aspp_sum", "CPU") and _ext.has_kernel("aspp_v3_head", "CPU")
needs_ops = pytest.mark.skipif(not HAS_OPS, reason="deeplab_compile._C was not built with the ASPP ops")
needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and _ext.has_kernel("aspp_sum", "CUDA")),
                                reason="needs a GPU and the CUDA kernels")

# (N, C, Co, H, W, rates): odd sizes, rates beyond the map, a single rate, repeated rates.
CASES = [(2, 5, 3, 7, 9, [1, 2, 6]), (1, 4, 2, 5, 5, [6, 1]), (3, 3, 4, 11, 8, [2, 3, 4, 12]),
         (1, 6, 21, 9, 13, [6, 12, 18, 24]), (2, 2, 1, 1, 1, [1]), (1, 3, 2, 6, 4, [2, 2])]


def _args(case, dtype=torch.float64, bias=True, seed=0):
    n, c, co, h, w, rates = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, dtype=dtype, generator=g)
    ws = [torch.randn(co, c, 3, 3, dtype=dtype, generator=g) for _ in rates]
    bs = [torch.randn(co, dtype=dtype, generator=g) for _ in rates] if bias else []
    return x, ws, bs, rates


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


@needs_ops
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("band_cols", ["0", "7"])      # one GEMM, or several row bands
def test_aspp_sum_forward_backward(case, dtype, band_cols, monkeypatch):
    monkeypatch.setenv("DEEPLAB_ASPP_BAND_COLS", band_cols)
    x, ws, bs, rates = _args(case, dtype, bias=case[0] != 3)
    ins = [x, *ws, *bs]
    for t in ins:
        t.requires_grad_(True)
    ref = aspp_sum_reference(x, ws, bs, rates)
    out = torch.ops.deeplab.aspp_sum(x, ws, bs, rates)
    torch.testing.assert_close(out, ref, **_tol(dtype))
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, ins, g), torch.autograd.grad(ref, ins, g), **_tol(dtype))


@needs_ops
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_aspp_sum_layouts(layout):
    x, ws, bs, rates = _args(CASES[2], torch.float32)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] + 3)[:, :, ::2, 1:-2]
        ws = [w.transpose(2, 3) for w in ws]            # non-contiguous weights too
    torch.testing.assert_close(torch.ops.deeplab.aspp_sum(x, ws, bs, rates), aspp_sum_reference(x, ws, bs, rates),
                               rtol=1e-4, atol=1e-4)


@needs_ops
def test_aspp_sum_gradcheck():
    x, ws, bs, rates = _args((2, 3, 2, 5, 6, [1, 3]))
    for t in [x, *ws, *bs]:
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, *p: torch.ops.deeplab.aspp_sum(x, list(p[:2]), list(p[2:]), rates),
                                    (x, *ws, *bs))


@needs_ops
@pytest.mark.parametrize("bias", [True, False])
def test_aspp_sum_opcheck(bias):
    x, ws, bs, rates = _args((2, 3, 2, 5, 6, [1, 3]), bias=bias)
    for t in [x, *ws, *bs]:
        t.requires_grad_(True)
    torch.library.opcheck(torch.ops.deeplab.aspp_sum.default, (x, ws, bs, rates))


@needs_ops
def test_aspp_sum_bad_inputs_name_the_argument():
    x, ws, bs, rates = _args(CASES[0], torch.float32)
    with pytest.raises(RuntimeError, match=r"weights\[1\]"):
        torch.ops.deeplab.aspp_sum(x, [ws[0], ws[1][:, :2]], bs[:2], rates[:2])
    with pytest.raises(RuntimeError, match=r"rates\[0\]"):
        torch.ops.deeplab.aspp_sum(x, ws[:1], bs[:1], [0])
    with pytest.raises(ValueError, match="one weight per rate"):
        aspp_sum(x, ws, bs, rates[:1])


def test_aspp_sum_falls_back_without_the_extension(monkeypatch):
    monkeypatch.setattr(_ext, "has_kernel", lambda op, key: False)
    x, ws, bs, rates = _args(CASES[0], torch.float32)
    monkeypatch.setattr(_ext, "_warned", set())
    with pytest.warns(RuntimeWarning, match="reference"):
        y = aspp_sum(x, ws, bs, rates)
    torch.testing.assert_close(y, aspp_sum_reference(x, ws, bs, rates))
    torch.testing.assert_close(aspp_sum_auto(x, ws, bs, rates), y)


def test_dispatcher_measures_once_and_can_be_forced(monkeypatch):
    dispatch.clear()
    calls = {"a": 0, "b": 0}

    def a(t):
        calls["a"] += 1
        return t

    def b(t):
        calls["b"] += 1
        return t

    x = torch.ones(3)
    name = dispatch.choose(("k",), {"a": a, "b": b}, (x,))
    n = dict(calls)
    assert name in ("a", "b") and n["a"] == n["b"] == 1 + dispatch.REPEATS
    assert dispatch.choose(("k",), {"a": a, "b": b}, (x,)) == name and calls == n
    assert [d["choice"] for d in dispatch.decisions()] == [name]
    monkeypatch.setenv("DEEPLAB_KERNELS", "b")
    assert dispatch.choose(("k2",), {"a": a, "b": b}, (x,)) == "b"
    dispatch.clear()


# --------------------------------------------------------------------------- v3 head

def _head_args(n=2, c=6, cb=(4, 3, 4, 5), kinds=(1, 3, 3, 3), rates=(1, 2, 5, 9), co=7, h=9, w=8, pool=True,
               dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, dtype=dtype, generator=g)
    x = r(n, c, h, w)
    ws = [r(b, c, k, k) for b, k in zip(cb, kinds)]
    bs = [r(b) for b in cb]
    projs = [r(co, b) for b in cb]
    pw, pb, pp = (r(3, c), r(3), r(co, 3)) if pool else (None, None, None)
    return x, ws, bs, list(rates), projs, pw, pb, pp, r(co)


@needs_ops
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("relu_out", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_aspp_v3_head_matches_reference(pool, relu_out, dtype):
    args = _head_args(pool=pool, dtype=dtype)
    torch.testing.assert_close(torch.ops.deeplab.aspp_v3_head(*args, relu_out),
                               aspp_v3_head_reference(*args, relu_out), **_tol(dtype))


@needs_ops
def test_aspp_v3_head_layouts_and_opcheck():
    args = list(_head_args(n=1, h=5, w=6, dtype=torch.float32))
    ref = aspp_v3_head_reference(*args, True)
    args[0] = args[0].contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(aspp_v3_head(*args, True), ref, rtol=1e-4, atol=1e-4)
    torch.library.opcheck(torch.ops.deeplab.aspp_v3_head.default, (*args, True),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@needs_ops
@pytest.mark.parametrize("taps", [[1], [1, 2, 3], [3]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_aspp_v3_head_tap_branches_match_reference(taps, dtype):
    # The 3x3 branches listed go through deeplab::aspp_sum (the atrous kernel) instead
    # of the library convolution; the result must not change.
    args = _head_args(dtype=dtype)
    ref = aspp_v3_head_reference(*args, True)
    torch.testing.assert_close(torch.ops.deeplab.aspp_v3_head(*args, True, taps), ref, **_tol(dtype))
    torch.library.opcheck(torch.ops.deeplab.aspp_v3_head.default, (*args, True, taps),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@needs_ops
@pytest.mark.parametrize("bad", [[0], [7], [-1]])       # branch 0 is the 1x1
def test_aspp_v3_head_tap_branches_checked(bad):
    with pytest.raises(RuntimeError, match="tap_branches"):
        torch.ops.deeplab.aspp_v3_head(*_head_args(), True, bad)


@needs_ops
@pytest.mark.parametrize("forced,expect", [("ours", [1, 2, 3]), ("library", [])])
def test_auto_head_picks_tap_branches_by_measurement(forced, expect, monkeypatch):
    from deeplab_compile.ops import aspp_v3_head_auto, dispatch
    from deeplab_compile.ops.aspp_v3_head import tap_branches
    monkeypatch.setenv("DEEPLAB_KERNELS", forced)
    args = _head_args(dtype=torch.float32)
    assert tap_branches(args[0], args[1], args[2], args[3]) == expect
    torch.testing.assert_close(aspp_v3_head_auto(*args, True), aspp_v3_head_reference(*args, True),
                               rtol=1e-4, atol=1e-4)
    monkeypatch.delenv("DEEPLAB_KERNELS")
    dispatch.clear()
    chosen = tap_branches(args[0], args[1], args[2], args[3])      # measured: any subset of the 3x3 branches
    assert set(chosen) <= {1, 2, 3}
    assert {d["key"][0] for d in dispatch.decisions()} == {"atrous"}
    dispatch.clear()


@needs_ops
def test_aspp_v3_head_is_inference_only():
    args = list(_head_args(n=1, h=4, w=4))
    args[0].requires_grad_(True)
    y = torch.ops.deeplab.aspp_v3_head(*args, True)
    with pytest.raises(RuntimeError, match="inference only"):
        y.sum().backward()


@needs_cuda
def test_cpu_matches_cuda():
    x, ws, bs, rates = _args(CASES[3], torch.float32)
    cu = lambda ts: [t.cuda() for t in ts]
    y = torch.ops.deeplab.aspp_sum(x.cuda(), cu(ws), cu(bs), rates).cpu()
    torch.testing.assert_close(y, torch.ops.deeplab.aspp_sum(x, ws, bs, rates), rtol=1e-4, atol=1e-4)
    args = _head_args(dtype=torch.float32)
    dev = [a.cuda() if isinstance(a, torch.Tensor) else ([t.cuda() for t in a] if isinstance(a, list) and a and
           isinstance(a[0], torch.Tensor) else a) for a in args]
    torch.testing.assert_close(torch.ops.deeplab.aspp_v3_head(*dev, True).cpu(),
                               torch.ops.deeplab.aspp_v3_head(*args, True), rtol=1e-4, atol=1e-4)

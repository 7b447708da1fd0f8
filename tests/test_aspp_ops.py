"""deeplab::aspp_sum and deeplab::aspp_v3_head against their PyTorch references."""
import platform

import pytest
import torch

from deeplab_compile.ops import _ext, dispatch
from deeplab_compile.ops.aspp_sum import aspp_sum, aspp_sum_auto, aspp_sum_reference
from deeplab_compile.ops.aspp_v3_head import aspp_v3_head, aspp_v3_head_reference

HAS_OPS = _ext.has_kernel("aspp_sum", "CPU") and _ext.has_kernel("aspp_v3_head", "CPU")
needs_ops = pytest.mark.skipif(not HAS_OPS, reason="deeplab_compile._C was not built with the ASPP ops")
needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and _ext.has_kernel("aspp_sum", "CUDA")),
                                reason="needs a GPU and the CUDA kernels")

# (N, C, Co, H, W, rates): odd sizes, rates beyond the map, a single rate, repeated rates,
# a map wider than one default band.
CASES = [(2, 5, 3, 7, 9, [1, 2, 6]), (1, 4, 2, 5, 5, [6, 1]), (3, 3, 4, 11, 8, [2, 3, 4, 12]),
         (1, 6, 21, 9, 13, [6, 12, 18, 24]), (2, 2, 1, 1, 1, [1]), (1, 3, 2, 6, 4, [2, 2]),
         (1, 4, 3, 23, 19, [2, 7, 12])]      # 437 pixels: several default bands


def _args(case, dtype=torch.float64, bias=True, seed=0):
    n, c, co, h, w, rates = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, dtype=dtype, generator=g)
    ws = [torch.randn(co, c, 3, 3, dtype=dtype, generator=g) for _ in rates]
    bs = [torch.randn(co, dtype=dtype, generator=g) for _ in rates] if bias else []
    return x, ws, bs, rates


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)




def _cpu_has_avx512f() -> bool:
    """From the hardware, not from the code under test."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


HAS_DIRECT = HAS_OPS and _cpu_has_avx512f()
needs_direct = pytest.mark.skipif(not HAS_DIRECT, reason="the direct CPU kernel needs an x86-64 CPU with AVX-512")

# How the CPU forward runs: (DEEPLAB_ASPP_CPU_KERNEL, DEEPLAB_ASPP_BAND_COLS).  The
# direct kernel takes float32 only; float64 always runs the GEMMs.
# None: unset, the default bands of about 200 pixels (the backward, and gemm forwards).
PATHS = {"direct": ("direct", None), "gemm-default": ("gemm", None), "gemm-one-band": ("gemm", "0"),
         "gemm-bands": ("gemm", "7")}


@needs_ops
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype,path", [pytest.param(d, p, marks=[needs_direct] if p == "direct" else [])
                                        for d in (torch.float32, torch.float64) for p in PATHS
                                        if p != "direct" or d == torch.float32])
def test_aspp_sum_forward_backward(case, dtype, path, monkeypatch):
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", PATHS[path][0])
    if PATHS[path][1] is None:
        monkeypatch.delenv("DEEPLAB_ASPP_BAND_COLS", raising=False)
    else:
        monkeypatch.setenv("DEEPLAB_ASPP_BAND_COLS", PATHS[path][1])
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
@pytest.mark.parametrize("kernel", [pytest.param("direct", marks=needs_direct), "gemm"])
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_aspp_sum_layouts(layout, kernel, monkeypatch):
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", kernel)
    x, ws, bs, rates = _args(CASES[2], torch.float32)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] + 3)[:, :, ::2, 1:-2]
        ws = [w.transpose(2, 3) for w in ws]            # non-contiguous weights too
    torch.testing.assert_close(torch.ops.deeplab.aspp_sum(x, ws, bs, rates), aspp_sum_reference(x, ws, bs, rates),
                               rtol=1e-4, atol=1e-4)


# (N, C, Co, H, W, rates) for the direct kernel's edges: several channel blocks of 256
# with a ragged last one; (tap, class) lanes that cross the 64-lane tiles (Co 21 over 9
# taps, Co 40, Co 5, Co 1, Co 70 > 64); rows narrower than a tile and wider than
# several; taps that reach one row only; rates at and beyond the map.
DIRECT_CASES = [(1, 300, 21, 17, 19, [6, 12, 18, 24]), (2, 7, 40, 9, 30, [1, 5]), (1, 9, 5, 3, 1, [1, 2]),
                (3, 16, 1, 13, 13, [2, 4, 8, 16]), (1, 513, 70, 6, 7, [3, 6]), (2, 3, 21, 41, 5, [24, 40]),
                (1, 5, 21, 25, 25, [12, 24])]


@needs_direct
@pytest.mark.parametrize("case", DIRECT_CASES)
@pytest.mark.parametrize("threads", [1, 2, 5])     # 5: more threads than channel blocks
def test_aspp_sum_direct_kernel_edges(case, threads, monkeypatch):
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "direct")
    x, ws, bs, rates = _args(case, torch.float32, bias=case[1] % 2 == 1, seed=1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = torch.ops.deeplab.aspp_sum(x, ws, bs, rates)
    finally:
        torch.set_num_threads(before)
    ref = aspp_sum_reference(x.double(), [w.double() for w in ws], [b.double() for b in bs], rates)
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5 * scale)


@needs_direct
def test_aspp_sum_direct_kernel_at_deeplab_shape(monkeypatch):
    """DeepLab v2's ASPP head (2048 -> 21 classes, rates 6-24) on a 41x41 map, as the
    benchmark runs it: the direct kernel against float64 convolutions and against the
    GEMM kernel."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2048, 41, 41, generator=g).relu()
    ws = [torch.randn(21, 2048, 3, 3, generator=g) * 0.01 for _ in range(4)]
    bs = [torch.randn(21, generator=g) for _ in range(4)]
    rates = [6, 12, 18, 24]
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "direct")
    direct = torch.ops.deeplab.aspp_sum(x, ws, bs, rates)
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "gemm")
    gemm = torch.ops.deeplab.aspp_sum(x, ws, bs, rates)
    ref = aspp_sum_reference(x.double(), [w.double() for w in ws], [b.double() for b in bs], rates)
    torch.testing.assert_close(direct.double(), ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(direct, gemm, rtol=0, atol=1e-4)
    assert not torch.equal(direct, gemm)        # two kernels ran, not one twice


@needs_ops
def test_aspp_cpu_kernel_setting(monkeypatch):
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "gemm")
    assert _ext.aspp_cpu_kernel() == "gemm" and _ext.backends()["aspp_cpu_kernel"] == "gemm"
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "direct")
    assert _ext.aspp_cpu_kernel() == ("direct" if HAS_DIRECT else "gemm")
    monkeypatch.setenv("DEEPLAB_ASPP_CPU_KERNEL", "fast")
    with pytest.raises(ValueError, match="DEEPLAB_ASPP_CPU_KERNEL must be one of auto, direct, gemm, got 'fast'"):
        _ext.aspp_cpu_kernel()
    assert _ext.backends()["aspp_cpu_kernel"].startswith("invalid")
    x, ws, bs, rates = _args(CASES[0], torch.float32)
    with pytest.raises(RuntimeError, match="DEEPLAB_ASPP_CPU_KERNEL must be"):
        torch.ops.deeplab.aspp_sum(x, ws, bs, rates)


@needs_ops
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_aspp_sum_reduced_precision_accumulates_in_float(dtype, tol):
    """bfloat16 / float16 take the GEMM kernel, with the biases and sums in float."""
    x, ws, bs, rates = _args(CASES[3], torch.float32)
    ref = aspp_sum_reference(x, ws, bs, rates)
    cast = lambda ts: [t.to(dtype) for t in ts]   # noqa: E731
    out = torch.ops.deeplab.aspp_sum(x.to(dtype), cast(ws), cast(bs), rates)
    assert out.dtype == dtype
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() < tol


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


def _aspp_sum_calls(fn) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "deeplab::aspp_sum")


@needs_ops
@pytest.mark.parametrize("taps", [[1], [1, 2, 3], [3]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_aspp_v3_head_tap_branches_match_reference(taps, dtype):
    # The 3x3 branches listed go through deeplab::aspp_sum (the atrous kernel) instead
    # of the library convolution; the result must not change.
    args = _head_args(dtype=dtype)
    ref = aspp_v3_head_reference(*args, True)
    torch.testing.assert_close(torch.ops.deeplab.aspp_v3_head(*args, True, taps), ref, **_tol(dtype))
    assert _aspp_sum_calls(lambda: torch.ops.deeplab.aspp_v3_head(*args, True, taps)) == len(taps)
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
    from deeplab_compile.ops.aspp_v3_head import pick_tap_branches
    monkeypatch.setenv("DEEPLAB_KERNELS", forced)
    args = _head_args(dtype=torch.float32)
    assert pick_tap_branches(*args[:4]) == expect
    ref = aspp_v3_head_reference(*args, True)
    if forced == "ours":            # the fused head, its 3x3 branches through aspp_sum
        torch.testing.assert_close(aspp_v3_head_auto(*args, True), ref, rtol=1e-4, atol=1e-4)
        assert _aspp_sum_calls(lambda: aspp_v3_head_auto(*args, True)) == 3
    else:                           # the library graph itself
        assert torch.equal(aspp_v3_head_auto(*args, True), ref)
    monkeypatch.delenv("DEEPLAB_KERNELS")
    dispatch.clear()
    chosen = pick_tap_branches(*args[:4])
    # Measured: exactly the branches whose one-rate aspp_sum the dispatcher chose.
    picks = {d["key"][6]: d["choice"] for d in dispatch.decisions() if d["key"][0] == "aspp_sum"}
    assert sorted(picks) == [(int(args[3][i]),) for i in (1, 2, 3)]
    assert chosen == [i for i in (1, 2, 3) if picks[(int(args[3][i]),)] == "ours"]
    dispatch.clear()


@needs_ops
def test_aspp_v3_head_is_inference_only():
    args = list(_head_args(n=1, h=4, w=4))
    args[0].requires_grad_(True)
    y = torch.ops.deeplab.aspp_v3_head(*args, True)
    with pytest.raises(RuntimeError, match="inference only"):
        y.sum().backward()


@pytest.mark.cuda
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

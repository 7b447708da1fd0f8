"""Every CUDA kernel against its CPU kernel and its PyTorch reference (``pytest -m cuda``).

Collected everywhere and skipped without a CUDA device; scripts/gpu_check.sh runs them
on a GPU machine.  Where a device is present but the extension lacks a CUDA kernel, the
first test fails instead of skipping, so a broken CUDA build cannot pass as "skipped".

Tolerances (``_close``): the reference is computed in float64 on the CPU from the same
(rounded) inputs, and the error is measured as max |out - ref| / max |ref|:

    float32   1e-4   (cuBLAS/cuDNN in full float32: TF32 is switched off for these tests)
    float16   4e-3   (fp16 GEMM operands, float accumulation in the shifted adds)
    bfloat16  2e-2   (bf16 GEMM operands: 8 mantissa bits)
    float64   1e-10

The lattice ops (permutohedral_filter, dense_crf) take float32/float64 only.  The dense
CRF's CUDA labels must agree with the CPU kernel's on at least 99.5% of the pixels of
each real VOC image in tests/data/voc_sample.
"""
import os
import random

import pytest
import torch

import test_passes
from deeplab_compile.ops import _ext
from deeplab_compile.ops.aspp_sum import aspp_sum_reference
from deeplab_compile.ops.aspp_v3_head import aspp_v3_head_reference
from deeplab_compile.ops.permutohedral_filter import permutohedral_filter_reference

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda"      # the device under test; the comparisons read the same with "cpu"
OPS = ("aspp_sum", "_aspp_sum_backward", "aspp_v3_head", "permutohedral_filter", "_permutohedral_filter_backward",
       "dense_crf")

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]

TOL = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2, torch.float64: 1e-10}
NETDEF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "netdef")


@pytest.fixture(autouse=True)
def _full_float32():
    """cuDNN convolutions default to TF32 on Ampere and later; the checks want float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _close(out, ref, dtype, what=""):
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values"
    scale = ref.abs().max().item() or 1.0
    err = (out - ref).abs().max().item() / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e} ({dtype})"


def _cuda(a):
    if isinstance(a, torch.Tensor):
        return a.to(DEV)
    if isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
        return [t.to(DEV) for t in a]
    return a


def _layout(x, layout):
    """x in the given memory layout, same values."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":            # a view into a wider tensor: neither layout is dense
        big = torch.zeros(*x.shape[:3], 2 * x.shape[3] + 1, dtype=x.dtype, device=x.device)
        big[..., 1::2] = x
        return big[..., 1::2]
    return x.contiguous()


def test_cuda_kernels_were_built():
    missing = [op for op in OPS if not _ext.has_kernel(op, "CUDA")]
    assert not missing, (f"a CUDA device is present but deeplab_compile._C has no CUDA kernel for {missing}; "
                         f"build with FORCE_CUDA=1 python setup.py build_ext --inplace")


needs_kernels = pytest.mark.skipif(HAS_CUDA and not all(_ext.has_kernel(op, "CUDA") for op in OPS),
                                   reason="the CUDA kernels were not built (see test_cuda_kernels_were_built)")

# --------------------------------------------------------------------------- under compute-sanitizer


@needs_kernels
@pytest.mark.sanitize
def test_each_kernel_once_small():
    """Every CUDA kernel once on small inputs, compared with the CPU kernel: the subset that
    scripts/gpu_check.sh runs under compute-sanitizer memcheck and racecheck."""
    x, ws, bs, rates = _aspp_args((2, 5, 3, 11, 9, [1, 2, 12], True), torch.float32, 5)
    ins = [_layout(x.to(DEV), "channels_last"), *_cuda(ws), *_cuda(bs)]
    for t in ins:
        t.requires_grad_(True)
    out = torch.ops.deeplab.aspp_sum(ins[0], ins[1:4], ins[4:], rates)
    _close(out, torch.ops.deeplab.aspp_sum(x, ws, bs, rates), torch.float32, "aspp_sum")
    gx = torch.autograd.grad(out.square().sum(), ins[0])[0]
    xr = x.clone().requires_grad_(True)
    _close(gx, torch.autograd.grad(torch.ops.deeplab.aspp_sum(xr, ws, bs, rates).square().sum(), xr)[0],
           torch.float32, "aspp_sum backward")
    xb, wb, bb = x.to(DEV).bfloat16(), [w.to(DEV).bfloat16() for w in ws], [b.to(DEV).bfloat16() for b in bs]
    _close(torch.ops.deeplab.aspp_sum(xb, wb, bb, rates), torch.ops.deeplab.aspp_sum(x, ws, bs, rates),
           torch.bfloat16, "aspp_sum bf16")
    args = _head_args(1, n=1, h=7, w=6)
    _close(torch.ops.deeplab.aspp_v3_head(*_cast(args, torch.float32, DEV), True, [1, 2]),
           torch.ops.deeplab.aspp_v3_head(*_cast(args, torch.float32), True, [1, 2]), torch.float32, "aspp_v3_head")
    g = torch.Generator().manual_seed(3)
    f, v = torch.randn(50, 5, generator=g), torch.randn(50, 4, generator=g)
    vc = v.to(DEV).requires_grad_(True)
    y = torch.ops.deeplab.permutohedral_filter(f.to(DEV), vc)
    _close(y, torch.ops.deeplab.permutohedral_filter(f, v), torch.float32, "permutohedral_filter")
    torch.autograd.grad(y.sum(), vc)
    img = (torch.rand(1, 3, 9, 11, generator=g) * 255).floor()
    unary = torch.randn(1, 4, 9, 11, generator=g)
    crf = (4.0, 3.0, 5.0, 20.0, 10.0, 3, "symmetric")
    q = torch.ops.deeplab.dense_crf(img.to(DEV), unary.to(DEV), *crf)
    torch.testing.assert_close(q.cpu(), torch.ops.deeplab.dense_crf(img, unary, *crf), rtol=0, atol=1e-2)
    if DEV == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- aspp_sum


def _aspp_case(seed):
    """Random shape, rates (some beyond the map) and batch size."""
    r = random.Random(seed)
    n, c, co = r.randint(1, 3), r.randint(1, 12), r.choice([1, 3, 21, 32])
    h, w = r.randint(1, 37), r.randint(1, 37)
    rates = r.sample([1, 2, 3, 4, 6, 9, 12, 18, 24, 40], r.randint(1, 4))
    return n, c, co, h, w, rates, r.random() < 0.7


def _aspp_args(case, dtype, seed=0):
    n, c, co, h, w, rates, bias = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    ws = [torch.randn(co, c, 3, 3, generator=g, dtype=torch.float64) for _ in rates]
    bs = [torch.randn(co, generator=g, dtype=torch.float64) for _ in rates] if bias else []
    cast = lambda t: t.to(dtype)
    return cast(x), [cast(t) for t in ws], [cast(t) for t in bs], rates


@needs_kernels
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_aspp_sum_forward_backward(seed, dtype, layout):
    case = _aspp_case(seed)
    x, ws, bs, rates = _aspp_args(case, dtype, seed)
    ref_in = [t.double().requires_grad_(True) for t in [x, *ws, *bs]]
    ref = aspp_sum_reference(ref_in[0], ref_in[1:1 + len(ws)], ref_in[1 + len(ws):], rates)
    gy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    ref_g = torch.autograd.grad(ref, ref_in, gy)

    ins = [_layout(x.to(DEV), layout), *_cuda(ws), *_cuda(bs)]
    for t in ins:
        t.requires_grad_(True)
    out = torch.ops.deeplab.aspp_sum(ins[0], ins[1:1 + len(ws)], ins[1 + len(ws):], rates)
    _close(out, ref, dtype, f"aspp_sum {case} forward")
    grads = torch.autograd.grad(out, ins, gy.to(dtype).to(DEV))
    names = ["x"] + [f"w{i}" for i in range(len(ws))] + [f"b{i}" for i in range(len(bs))]
    # Gradients sum over many more terms (pixels, classes): a looser bound in reduced precision.
    for name, g, rg in zip(names, grads, ref_g):
        _close(g, rg, dtype if dtype == torch.float32 else torch.bfloat16, f"aspp_sum {case} grad {name}")
    if dtype == torch.float32:         # the CPU kernel on the same inputs
        cpu = torch.ops.deeplab.aspp_sum(x, ws, bs, rates)
        _close(out, cpu, dtype, f"aspp_sum {case} CUDA vs CPU kernel")


@needs_kernels
def test_aspp_sum_deeplab_shape_matches_cudnn():
    """DeepLab v2's head (2048 -> 21, rates 6/12/18/24) at 41x41 against four cuDNN convolutions."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2048, 41, 41, generator=g).to(DEV)
    ws = [(torch.randn(21, 2048, 3, 3, generator=g) * 0.01).to(DEV) for _ in range(4)]
    bs = [torch.randn(21, generator=g).to(DEV) for _ in range(4)]
    rates = [6, 12, 18, 24]
    out = torch.ops.deeplab.aspp_sum(x, ws, bs, rates)
    ref = aspp_sum_reference(x.double(), [w.double() for w in ws], [b.double() for b in bs], rates)
    _close(out, ref, torch.float32, "aspp_sum at 2x2048x41x41")
    xl = x.contiguous(memory_format=torch.channels_last)
    _close(torch.ops.deeplab.aspp_sum(xl, ws, bs, rates), ref, torch.float32, "aspp_sum channels_last")


@needs_kernels
@pytest.mark.parametrize("bias", [True, False])
def test_aspp_sum_gradcheck_and_opcheck(bias):
    x, ws, bs, rates = _aspp_args((2, 3, 2, 6, 5, [1, 2, 7], bias), torch.float64, 3)
    ins = [t.to(DEV).requires_grad_(True) for t in [x, *ws, *bs]]
    k = len(ws)
    assert torch.autograd.gradcheck(lambda *t: torch.ops.deeplab.aspp_sum(t[0], list(t[1:1 + k]),
                                                                          list(t[1 + k:]), rates), ins)
    torch.library.opcheck(torch.ops.deeplab.aspp_sum.default, (ins[0], ins[1:1 + k], ins[1 + k:], rates))


@needs_kernels
def test_aspp_sum_autocast_and_dispatcher():
    from deeplab_compile.ops import dispatch
    from deeplab_compile.ops.aspp_sum import aspp_sum_auto
    x, ws, bs, rates = _aspp_args((1, 8, 5, 17, 15, [2, 6], True), torch.float32, 4)
    x, ws, bs = x.to(DEV), _cuda(ws), _cuda(bs)
    ref = aspp_sum_reference(x.double(), [w.double() for w in ws], [b.double() for b in bs], rates)
    with torch.autocast(DEV, dtype=torch.bfloat16):
        _close(torch.ops.deeplab.aspp_sum(x, ws, bs, rates), ref, torch.bfloat16, "aspp_sum under autocast")
    dispatch.clear()
    _close(aspp_sum_auto(x, ws, bs, rates), ref, torch.float32, "aspp_sum_auto on CUDA")
    assert any(d["key"][1] == DEV for d in dispatch.decisions())
    dispatch.clear()


# --------------------------------------------------------------------------- v3 head


def _head_args(seed, n=2, c=6, cb=(4, 3, 4, 5), kinds=(1, 3, 3, 3), rates=(1, 2, 5, 9), co=7, h=9, w=8, pool=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)
    x = r(n, c, h, w)
    ws = [r(b, c, k, k) for b, k in zip(cb, kinds)]
    bs = [r(b) for b in cb]
    projs = [r(co, b) for b in cb]
    pw, pb, pp = (r(3, c), r(3), r(co, 3)) if pool else (None, None, None)
    return [x, ws, bs, list(rates), projs, pw, pb, pp, r(co)]


def _cast(args, dtype, device="cpu"):
    def one(a):
        if isinstance(a, torch.Tensor):
            return a.to(device, dtype)
        if isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
            return [t.to(device, dtype) for t in a]
        return a
    return [one(a) for a in args]


@needs_kernels
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("taps", [[], [1, 3]])
def test_aspp_v3_head(seed, dtype, layout, taps):
    r = random.Random(seed)
    kw = dict(n=r.randint(1, 3), h=r.randint(2, 21), w=r.randint(2, 21), pool=seed % 2 == 0,
              rates=(1, r.choice([2, 3]), r.choice([4, 6]), r.choice([9, 30])))
    args = _head_args(seed, **kw)
    relu_out = seed % 3 != 1
    ref = aspp_v3_head_reference(*_cast(args, torch.float64), relu_out)
    dev = _cast(args, dtype, DEV)
    dev[0] = _layout(dev[0], layout)
    out = torch.ops.deeplab.aspp_v3_head(*dev, relu_out, taps)
    _close(out, ref, dtype, f"aspp_v3_head {kw} taps {taps}")
    if dtype == torch.float32:
        _close(out, torch.ops.deeplab.aspp_v3_head(*_cast(args, dtype), relu_out, taps), dtype,
               "aspp_v3_head CUDA vs CPU kernel")


@needs_kernels
def test_aspp_v3_head_opcheck():
    args = _cast(_head_args(7, n=1, h=5, w=6), torch.float32, DEV)
    torch.library.opcheck(torch.ops.deeplab.aspp_v3_head.default, (*args, True, [1, 2]),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


# --------------------------------------------------------------------------- permutohedral_filter


@needs_kernels
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_permutohedral_filter(seed, dtype):
    r = random.Random(seed)
    n, d, v = r.randint(1, 300), r.choice([1, 2, 3, 5]), r.randint(1, 24)
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g, dtype=torch.float64) * r.choice([0.3, 1.0, 3.0])
    vals = torch.randn(n, v, generator=g, dtype=torch.float64)
    ref = permutohedral_filter_reference(f, vals)
    fc, vc = f.to(dtype).to(DEV).requires_grad_(False), vals.to(dtype).to(DEV).requires_grad_(True)
    out = torch.ops.deeplab.permutohedral_filter(fc, vc)
    tol = torch.float32 if dtype == torch.float32 else torch.float64
    # float64 differs from the reference only by summation order; 1e-10 relative holds.
    _close(out, ref, tol, f"permutohedral_filter n={n} d={d} v={v}")
    cpu = torch.ops.deeplab.permutohedral_filter(f.to(dtype), vals.to(dtype))
    _close(out, cpu, tol, "permutohedral_filter CUDA vs CPU kernel")
    gy = torch.randn(n, v, generator=g, dtype=torch.float64)
    (gv,) = torch.autograd.grad(out, vc, gy.to(dtype).to(DEV))
    vr = vals.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(permutohedral_filter_reference(f, vr), vr, gy)
    _close(gv, gr, tol, "permutohedral_filter backward")


@needs_kernels
def test_permutohedral_filter_non_contiguous_gradcheck_opcheck():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(40, 3, generator=g, dtype=torch.float64).to(DEV)
    vals = torch.randn(6, 40, generator=g, dtype=torch.float64).to(DEV).t()       # non-contiguous [40, 6]
    ref = permutohedral_filter_reference(f.cpu(), vals.cpu())
    _close(torch.ops.deeplab.permutohedral_filter(f, vals), ref, torch.float64, "non-contiguous values")
    v = vals.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.ops.deeplab.permutohedral_filter(f, t), (v,))
    torch.library.opcheck(torch.ops.deeplab.permutohedral_filter.default, (f, v))


# --------------------------------------------------------------------------- dense CRF


@needs_kernels
@pytest.mark.parametrize("normalization", ["symmetric", "after"])
def test_dense_crf_small_against_cpu_and_reference(normalization, float32_storage):
    from deeplab_compile.ops.dense_crf import dense_crf_reference
    g = torch.Generator().manual_seed(2)
    img = (torch.rand(2, 3, 13, 17, generator=g) * 255).floor()
    unary = torch.randn(2, 5, 13, 17, generator=g) * 2
    args = (4.0, 3.0, 5.0, 20.0, 10.0, 5, normalization)
    out = torch.ops.deeplab.dense_crf(img.to(DEV), unary.to(DEV), *args)
    cpu = torch.ops.deeplab.dense_crf(img, unary, *args)
    torch.testing.assert_close(out.cpu(), cpu, rtol=0, atol=1e-4)
    for b in range(2):
        ref = dense_crf_reference(img[b:b + 1], unary[b:b + 1], *args)
        torch.testing.assert_close(out[b:b + 1].cpu(), ref, rtol=0, atol=1e-4)
    non_contig = unary.to(DEV).permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    torch.testing.assert_close(torch.ops.deeplab.dense_crf(img.to(DEV), non_contig, *args), out, rtol=0, atol=1e-6)
    torch.library.opcheck(torch.ops.deeplab.dense_crf.default, (img.to(DEV), unary.to(DEV), *args),
                          test_utils=("test_schema", "test_faketensor"))


@needs_kernels
def test_dense_crf_voc_labels_agree_with_cpu_kernel():
    from crf_helpers import VOC_IDS, noisy_logits, voc_image, voc_label
    from deeplab_compile.crf import PRESETS, dense_crf
    for k, image_id in enumerate(VOC_IDS):
        img, gt = voc_image(image_id), voc_label(image_id)
        logits = torch.from_numpy(noisy_logits(gt, seed=k))
        for preset in ("deeplab_largefov", "deeplab_v2_resnet101"):
            cpu = dense_crf(img, logits, PRESETS[preset])
            cuda = dense_crf(img, logits.to(DEV), PRESETS[preset])
            assert cuda.device.type == DEV
            agree = (cuda.argmax(0).cpu() == cpu.argmax(0)).double().mean().item()
            assert agree >= 0.995, f"{image_id} {preset}: {agree:.4f} of labels agree"
            assert (cuda.cpu() - cpu).abs().max().item() < 0.05, f"{image_id} {preset}"


# --------------------------------------------------------------------------- fused nets


def _randomize(gm, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = gm.state_dict()
    for k, v in sd.items():
        if v.is_floating_point():
            r = torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.3
            v.copy_(r.abs() + 0.5 if k.endswith("running_var") else r + (1 if k.endswith("scale.weight") else 0))
    return sd


# test_passes.py's v3 head on a small trunk, at 33x33 here
V3 = test_passes.V3.replace("[3, 17, 17]", "[3, 33, 33]")


@needs_kernels
@pytest.mark.parametrize("name", ["deeplab_largefov", "deeplab_v2_vgg16_aspp_l", "v3_head"])
def test_fused_net_matches_unfused_on_cuda(name, tmp_path, monkeypatch):
    from deeplab_compile.compiler import compile_net
    from deeplab_compile.ops import dispatch
    monkeypatch.setenv("DEEPLAB_KERNELS", "ours")          # the fused layers run our CUDA kernels
    if name == "v3_head":
        path = tmp_path / "v3.yaml"
        path.write_text(V3.format(lib=os.path.join(NETDEF, "lib")))
        path, inputs, size = str(path), None, 33
    else:
        path, inputs, size = os.path.join(NETDEF, name + ".yaml"), {"data": "2x3x65x65"}, 65
    plain = compile_net(path, inputs=inputs, fuse=False)
    fused = compile_net(path, inputs=inputs, fuse=True)
    assert any(l.fused_from for l in fused.net.layers) or name == "deeplab_largefov"
    fused.load_state_dict(_randomize(plain), strict=True)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    plain, fused = plain.to(DEV).eval(), fused.to(DEV).eval()
    with torch.no_grad():
        a, b = plain(x.to(DEV)), fused(x.to(DEV))
        bl = fused.to(memory_format=torch.channels_last)(x.to(DEV).contiguous(memory_format=torch.channels_last))
    assert a.keys() == b.keys()
    for k in a:
        _close(b[k], a[k], torch.float32, f"{name} fused vs unfused, output {k}")
        _close(bl[k], a[k], torch.float32, f"{name} fused channels_last, output {k}")
    dispatch.clear()

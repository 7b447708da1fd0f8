"""deeplab::permutohedral_filter and deeplab::dense_crf: kernels against references."""
import sys
import warnings

import numpy as np
import pytest
import torch

from deeplab_compile.ops import (_ext, dense_crf, dense_crf_reference, permutohedral_filter,
                                 permutohedral_filter_reference)

compiled = pytest.mark.skipif(not _ext.has_kernel("dense_crf", "CPU"), reason="_C not built")


def _features(n, d, spread, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=dtype) * spread


@pytest.mark.parametrize("d,tol", [(1, 0.005), (2, 0.01), (3, 0.02), (5, 0.06)])
def test_lattice_matches_brute_force_gaussian(d, tol):
    # The lattice approximates exp(-|fi - fj|^2 / 2) up to a smooth change of scale; the
    # normalised filter (what the CRF uses) is within a few per cent (Adams et al. 2010).
    f = _features(400, d, 4.0)
    v = torch.rand(400, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    K = torch.exp(-0.5 * torch.cdist(f, f) ** 2)
    exact = (K @ v) / K.sum(1, keepdim=True)
    out = permutohedral_filter(f, torch.cat([v, torch.ones(400, 1, dtype=torch.float64)], 1))
    approx = out[:, :3] / out[:, 3:]
    assert float((approx - exact).norm() / exact.norm()) < tol
    # Unnormalised, the filter stays within a bounded factor of the Gaussian.
    ratio = out[:, 3] / K.sum(1)
    assert float(ratio.min()) > 0.15 and float(ratio.max()) < 3.0


def test_far_apart_points_do_not_interact():
    f = torch.tensor([[0.0, 0.0], [100.0, 100.0]])
    v = torch.tensor([[1.0], [0.0]])
    out = permutohedral_filter(f, v)
    assert out[1, 0] == 0 and out[0, 0] > 0


@compiled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,d,V", [(1, 2, 1), (50, 2, 3), (300, 5, 21), (200, 3, 9)])
def test_compiled_filter_matches_reference(n, d, V, dtype):
    f = _features(n, d, 3.0, seed=n, dtype=dtype)
    v = torch.randn(n, V, dtype=dtype, generator=torch.Generator().manual_seed(2))
    a = permutohedral_filter(f, v)
    b = permutohedral_filter_reference(f, v)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@compiled
@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 9, 16])
def test_compiled_float_filter_eight_points_at_a_time(d):
    # Float features are embedded eight points at a time (a runtime d as well as the fixed
    # ones); 1001 points leave one over, which is embedded in a padded block of eight.
    # Spread over several lattice cells, so that the simplices differ from point to point.
    n = 1001
    f = _features(n, d, 6.0, seed=10 + d, dtype=torch.float32) - 2.0
    v = torch.randn(n, 2, generator=torch.Generator().manual_seed(d))
    out = permutohedral_filter(f, v)
    # Double features take the one-point-at-a-time embedding.
    torch.testing.assert_close(out, permutohedral_filter(f.double(), v.double()).float(), rtol=1e-4, atol=1e-4)
    if d <= 9:  # (the reference's 64-bit key codes do not cover this range for larger d)
        torch.testing.assert_close(out, permutohedral_filter_reference(f, v), rtol=1e-4, atol=1e-4)
    # One point alone (a padded block), and nine (a block and one over).
    for k in (1, 9):
        torch.testing.assert_close(permutohedral_filter(f[:k], v[:k]),
                                   permutohedral_filter(f[:k].double(), v[:k].double()).float(),
                                   rtol=1e-4, atol=1e-4)


@compiled
@pytest.mark.parametrize("d", [2, 5, 6])
def test_compiled_float_filter_same_for_any_thread_count(d):
    # 20001 points: two threads split the embedding at a point that is not a multiple of eight.
    f = _features(20001, d, 30.0, seed=d, dtype=torch.float32)
    v = torch.randn(20001, 3, generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = permutohedral_filter(f, v)
        torch.set_num_threads(2)
        two = permutohedral_filter(f, v)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@compiled
@pytest.mark.parametrize("d,offset", [(5, 3000.0), (3, 1e6), (8, 200.0), (2, 0.0)])
def test_compiled_filter_far_from_origin(d, offset):
    # Lattice keys pack into one 64-bit word (64/d bits a coordinate) when they fit; far
    # from the origin the build keeps full int32 keys instead.  Both give the reference.
    f = _features(120, d, 3.0, seed=d, dtype=torch.float64) + offset
    v = torch.randn(120, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    # (Large offsets cost float64 digits in the embedding, hence the tolerance.)
    torch.testing.assert_close(permutohedral_filter(f, v), permutohedral_filter_reference(f, v),
                               rtol=1e-6, atol=1e-8)


@compiled
@pytest.mark.parametrize("spread", [0.0, 5000.0])
def test_compiled_filter_2d_grid_and_hashed(spread):
    # d = 2 lattices index their vertices through a dense grid over the keys' box; two
    # outliers far apart make that box too large for the grid, and the hashed build takes over.
    f = _features(150, 2, 3.0, seed=7, dtype=torch.float64)
    f[:2] += torch.tensor([[spread, -spread], [-spread, spread]], dtype=torch.float64)
    v = torch.randn(150, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(permutohedral_filter(f, v), permutohedral_filter_reference(f, v),
                               rtol=1e-6, atol=1e-8)


@compiled
def test_filter_non_contiguous_and_empty():
    f = _features(60, 4, 3.0, dtype=torch.float32)
    v = torch.randn(5, 60).t()                     # non-contiguous
    torch.testing.assert_close(permutohedral_filter(f, v), permutohedral_filter(f, v.contiguous()))
    assert permutohedral_filter(f[:0], v[:0]).shape == (0, 5)


@compiled
def test_filter_gradcheck():
    f = _features(40, 3, 2.0)
    v = torch.randn(40, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: permutohedral_filter(f, x), (v,))
    assert torch.autograd.gradgradcheck(lambda x: permutohedral_filter(f, x), (v,))


def test_reference_filter_gradcheck():
    f = _features(12, 2, 2.0)
    v = torch.randn(12, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: permutohedral_filter_reference(f, x), (v,))


@compiled
def test_backward_is_transposed_filter():
    f = _features(80, 5, 3.0)
    M = permutohedral_filter(f, torch.eye(80, dtype=torch.float64))
    Mt = torch.ops.deeplab._permutohedral_filter_backward(f, torch.eye(80, dtype=torch.float64))
    torch.testing.assert_close(Mt, M.t())


@compiled
def test_opcheck_filter():
    f = _features(20, 3, 2.0, dtype=torch.float32)
    v = torch.randn(20, 2, requires_grad=True)
    torch.library.opcheck(torch.ops.deeplab.permutohedral_filter.default, (f, v))
    torch.library.opcheck(torch.ops.deeplab._permutohedral_filter_backward.default, (f, v.detach()))


@compiled
def test_opcheck_dense_crf():
    image = torch.rand(2, 3, 9, 11) * 255
    unary = torch.rand(2, 4, 9, 11) * 3
    torch.library.opcheck(torch.ops.deeplab.dense_crf.default, (image, unary, 3.0, 3.0, 4.0, 20.0, 5.0, 3, "symmetric"),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@compiled
@pytest.mark.parametrize("normalization", ["symmetric", "after"])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 2, 13, 11), (2, 21, 7, 8)])
def test_compiled_crf_matches_reference(shape, normalization, float32_storage):
    B, C, H, W = shape
    g = torch.Generator().manual_seed(3)
    image = torch.rand(B, 3, H, W, generator=g) * 255
    unary = torch.rand(B, C, H, W, generator=g) * 4
    a = dense_crf(image, unary, 3, 3, 4, 10, 5, 3, normalization)
    b = dense_crf_reference(image, unary, 3, 3, 4, 10, 5, 3, normalization)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@compiled
def test_compiled_crf_zero_weights_and_iterations():
    image = torch.rand(1, 3, 8, 9) * 255
    unary = torch.rand(1, 4, 8, 9) * 4
    q0 = dense_crf(image, unary, 3, 3, 4, 10, 5, 0)
    torch.testing.assert_close(q0, torch.softmax(-unary, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dense_crf(image, unary, 0, 3, 0, 10, 5, 5), torch.softmax(-unary, 1),
                               rtol=1e-5, atol=1e-6)


@compiled
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("C", [1, 5, 21, 40])
def test_half_storage_without_iterations_is_the_softmax(C, threads):
    # No iterations: the half-storage loop's one pixel pass is the softmax of -unary,
    # with its polynomial exp, written label-major eight pixels at a time (a tail of
    # five pixels here).  Energies span +-300, so that many exps come close to zero: the
    # rounding of (x - max) log2(e), at most 126 where 2^t is not clamped to the
    # smallest normal float, bounds the relative error near 1e-5.
    g = torch.Generator().manual_seed(C)
    image = torch.rand(1, 3, 13, 29, generator=g) * 255
    unary = (torch.rand(1, C, 13, 29, generator=g) - 0.5) * 600
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        q = dense_crf(image, unary, 3, 3, 4, 10, 5, 0)
    finally:
        torch.set_num_threads(before)
    expected = torch.softmax(-unary.double(), 1).float()
    torch.testing.assert_close(q, expected, rtol=1e-5, atol=1e-37)


@compiled
@pytest.mark.parametrize("C", [1, 4, 13, 21, 32, 40, 70])   # 1, 1, 2, 3, 4, 5 and 9 label blocks (5, 9: generic)
def test_half_storage_close_to_float32(C, monkeypatch):
    g = torch.Generator().manual_seed(C)
    image = (torch.rand(2, 3, 37, 41, generator=g) * 255).round()
    unary = torch.rand(2, C, 37, 41, generator=g) * 4
    half = dense_crf(image, unary, 3, 3, 4, 20, 5, 5)
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", "float32")
    full = dense_crf(image, unary, 3, 3, 4, 20, 5, 5)
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.sum(1), torch.ones(2, 37, 41), rtol=0, atol=1e-5)
    diff = (half - full).abs()
    assert diff.max() < 1e-2 and diff.mean() < 2e-4, (diff.max(), diff.mean())
    if _ext.crf_storage() == "half" and C > 1:
        assert diff.max() > 0          # the half-storage loop did run (the default on x86-64)
    if C > 1:
        assert (half.argmax(1) == full.argmax(1)).float().mean() >= 0.995


@compiled
@pytest.mark.parametrize("threads", [1, 2])
def test_half_storage_positional_kernel_close_to_float32(threads, monkeypatch):
    # A positional kernel of one pixel over 150 x 130 pixels: its lattice's chains (the
    # half-float loop's blur order) run for a hundred vertices and more, and are listed
    # sixteen at a time; the float32 loop blurs without chains.
    g = torch.Generator().manual_seed(3)
    image = (torch.rand(1, 3, 150, 130, generator=g) * 255).round()
    unary = torch.rand(1, 7, 150, 130, generator=g) * 4
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        half = dense_crf(image, unary, 3, 1, 0, 80, 13, 5)
        monkeypatch.setenv("DEEPLAB_CRF_STORAGE", "float32")
        full = dense_crf(image, unary, 3, 1, 0, 80, 13, 5)
    finally:
        torch.set_num_threads(before)
    diff = (half - full).abs()
    assert diff.max() < 1e-2 and diff.mean() < 2e-4, (diff.max(), diff.mean())
    assert (half.argmax(1) == full.argmax(1)).float().mean() >= 0.995


@compiled
def test_storage_setting_is_checked(monkeypatch):
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", "fp16")
    with pytest.raises(RuntimeError, match="DEEPLAB_CRF_STORAGE must be"):
        dense_crf(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4), 3, 3, 4, 10, 5, 2)


@compiled
@pytest.mark.parametrize("storage", ["half", "float32"])
def test_batch_equals_single_images(storage, monkeypatch):
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", storage)
    image = torch.rand(3, 3, 15, 14) * 255
    unary = torch.rand(3, 5, 15, 14) * 4
    batch = dense_crf(image, unary, 3, 3, 4, 30, 6, 5)
    for b in range(3):
        torch.testing.assert_close(batch[b:b + 1], dense_crf(image[b:b + 1], unary[b:b + 1], 3, 3, 4, 30, 6, 5))


@compiled
@pytest.mark.parametrize("bad,match", [
    (dict(unary=torch.full((1, 2, 4, 4), float("nan"))), "unary.*NaN"),
    (dict(pos_xy_std=0.0), "standard deviations must be positive"),
    (dict(image=torch.rand(1, 3, 5, 4)), "must agree"),
    (dict(unary=torch.rand(1, 2, 4, 4).double()), "'unary' must be float32"),
    (dict(normalization="none"), "normalization"),
])
def test_kernel_checks_name_the_argument(bad, match):
    args = dict(image=torch.rand(1, 3, 4, 4), unary=torch.rand(1, 2, 4, 4), pos_w=3.0, pos_xy_std=3.0, bi_w=4.0,
                bi_xy_std=10.0, bi_rgb_std=5.0, iterations=2, normalization="symmetric")
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.deeplab.dense_crf(*args.values())


def test_fallback_warns_once_and_matches(monkeypatch):
    monkeypatch.setattr(_ext, "has_kernel", lambda op, key: False)
    monkeypatch.setattr(_ext, "_warned", set())
    f = _features(30, 2, 2.0, dtype=torch.float32)
    v = torch.randn(30, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = permutohedral_filter(f, v)
        permutohedral_filter(f, v)
    assert sum("PyTorch reference" in str(w.message) for w in caught) == 1
    torch.testing.assert_close(a, permutohedral_filter_reference(f, v))


def test_backends_reports_extension():
    info = _ext.backends()
    assert set(info) >= {"extension", "cpu", "cuda", "cuda_device", "threads", "crf_storage"}
    assert info["crf_storage"] in ("half", "float32")
    if info["extension"]:
        assert "dense_crf" in info["cpu"]


@compiled
@pytest.mark.parametrize("storage", ["half", "float32"])
def test_thread_count_does_not_change_the_result(storage, monkeypatch):
    # Large enough (n * (d + 1) corners over 65536) that 2 threads cut the lattice build's
    # contributor lists into chunks; the lists, and so every sum, must come out the same.
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", storage)
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, 150, 160, generator=g) * 255).round()
    unary = torch.rand(1, 5, 150, 160, generator=g) * 4
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = dense_crf(image, unary, 3, 3, 4, 30, 6, 3)
        torch.set_num_threads(2)
        two = dense_crf(image, unary, 3, 3, 4, 30, 6, 3)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@compiled
@pytest.mark.parametrize("storage", ["half", "float32"])
def test_reused_scratch_memory_does_not_leak_into_the_next_image(storage, monkeypatch):
    # The kernel keeps its large scratch arrays (1 MiB and up) for the next call; an image
    # run after a larger and a smaller one, on the same thread, must come out exactly as
    # when it ran first.
    monkeypatch.setenv("DEEPLAB_CRF_STORAGE", storage)
    g = torch.Generator().manual_seed(1)

    def case(h, w, c):
        return (torch.rand(1, 3, h, w, generator=g) * 255).round(), torch.rand(1, c, h, w, generator=g) * 4

    image, unary = case(170, 180, 21)
    first = dense_crf(image, unary, 3, 3, 4, 30, 6, 3)
    for other in (case(260, 250, 24), case(120, 130, 5)):
        dense_crf(*other, 3, 3, 4, 30, 6, 3)
    assert torch.equal(dense_crf(image, unary, 3, 3, 4, 30, 6, 3), first)


@compiled
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts page faults with getrusage")
def test_repeated_call_reuses_its_scratch_memory():
    # A call on an image the size of the last one takes every large scratch array from the
    # kernel's block cache: it faults no fresh array in (the 17 MB ones are over 4000 pages
    # each; a cache that let one request take the block a later one needs faulted 13000+
    # pages on every call).  The result is deleted before the next call so that its memory
    # is reused too; what remains is small allocations outside the kernel.
    import resource
    g = torch.Generator().manual_seed(2)
    image = (torch.rand(1, 3, 375, 500, generator=g) * 255).round()
    unary = torch.rand(1, 21, 375, 500, generator=g) * 4
    before = torch.get_num_threads()
    faults = []
    try:
        torch.set_num_threads(1)
        for _ in range(5):
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            out = dense_crf(image, unary, 3, 3, 4, 121, 5, 1)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
            del out
    finally:
        torch.set_num_threads(before)
    assert min(faults[2:]) < 2500, faults

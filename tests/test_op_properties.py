"""Property tests of every fastsr op (hypothesis): the C++ kernel (``impl="auto"`` on CPU)
against the plain-PyTorch reference, forward and every gradient, on random shapes (zero
sizes included), dtypes (float32, bfloat16, float64), memory layouts (contiguous,
channels_last, transposed, stepped, stride-0 expanded), special values (NaN, +-Inf, +-0,
subnormals), extreme magnitudes and scalars; and on invalid arguments, where the kernel
must raise the reference's exception type (and succeed where the reference succeeds).

Profiles, chosen with the environment variable FASTSR_HYPOTHESIS_PROFILE:
  default   derandomized (the same examples every run), DEFAULT_EXAMPLES per test: the
            normal ``pytest`` run;
  thorough  random, THOROUGH_EXAMPLES per test, for a search on demand.

Tolerances, from the arithmetic (as in the per-op tests):
- elementwise results that kernel and reference compute with the same operations in the
  accumulation dtype (fp32 for fp32/bf16, fp64 for fp64) and round once: identical,
  NaN for NaN. Where the kernel may contract a*b + c into one FMA, the two differ by at
  most the rounding of the product: eps_acc * |a*b| (+ one storage ulp for bf16).
- reductions (bias/weight gradients, summed losses): another summation order. Against the
  float64 sum of the kernel's own acc-dtype terms, the error is below
  64 * eps_acc * sum |terms| (helpers.reduction_atol; the classic bound is n * eps; chunked
  summation is far better), plus one storage rounding. A non-finite sum does not depend on
  the order (any NaN gives NaN, +Inf and -Inf give NaN, one sign of Inf gives it), so it
  must match exactly. Magnitudes are kept below 1e15 so that no finite fp32 term or partial
  sum overflows (products below 1e30, sums below 1e35).
- SSIM, on images in [0, data_range]: the variances cancel (E[x^2] - mu^2), an error of a
  few eps_acc * L^2 divided by at least C2 = (k2 L)^2: 8 eps_acc / k2^2 on the value, and
  relative to the largest gradient (tiny images with small windows reach it; the per-op
  tests' 1e-5 holds for 11x11 windows averaged over larger maps).
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from helpers import BF16_RTOL
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fastsr.ops import (
    bias_prelu,
    bias_prelu_reference,
    bias_residual,
    bias_residual_reference,
    l1_loss,
    l1_loss_reference,
    pixel_shuffle_prelu,
    pixel_shuffle_prelu_reference,
    ssim,
    ssim_reference,
)

DEFAULT_EXAMPLES = 200
THOROUGH_EXAMPLES = 2000
settings.register_profile(
    "default",
    max_examples=DEFAULT_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=THOROUGH_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("FASTSR_HYPOTHESIS_PROFILE", "default"))

DTYPES = (torch.float32, torch.bfloat16, torch.float64)
LAYOUTS = ("contiguous", "channels_last", "transposed", "stepped", "expanded")
SCALES = (1.0, 1e-3, 1e3, 1e15, 1e-20)
SPECIALS = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-40, -1e-310)


def acc_of(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def eps_of(dtype):
    return torch.finfo(acc_of(dtype)).eps


# ---- strategies ------------------------------------------------------------------------
@st.composite
def values(draw, shape, dtype, allow_specials=True):
    """A tensor of ``shape`` and ``dtype``: normal values of a drawn magnitude, and, sometimes,
    special values at random positions."""
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from(SCALES))
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if allow_specials and t.numel() > 0 and draw(st.booleans()):
        specials = draw(st.lists(st.sampled_from(SPECIALS), min_size=1, max_size=4))
        flat = t.view(-1)
        for v in specials:
            flat[draw(st.integers(0, t.numel() - 1))] = v
    return t.to(dtype)


@st.composite
def laid_out(draw, t):
    """``t`` (4-D) in a drawn memory layout. 'expanded' repeats one slice along a dimension
    with stride 0, so its values differ from ``t``'s: use the returned tensor everywhere."""
    layout = draw(st.sampled_from(LAYOUTS))
    if t.dim() != 4:
        layout = draw(st.sampled_from(("contiguous", "stepped", "expanded")))
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":  # stored as (N, C, W, H)
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    if t.dim() == 0:
        return t
    dim = draw(st.integers(0, t.dim() - 1))
    if layout == "stepped":
        wide_shape = list(t.shape)
        wide_shape[dim] *= 2
        wide = torch.zeros(wide_shape, dtype=t.dtype)
        index = [slice(None)] * t.dim()
        index[dim] = slice(None, None, 2)
        wide[tuple(index)] = t
        return wide[tuple(index)]
    if t.shape[dim] == 0:
        return t
    return t.narrow(dim, 0, 1).expand(t.shape)


def shape4(draw, n=3, c=6, hw=9):
    return (draw(st.integers(0, n)), draw(st.integers(0, c)), draw(st.integers(0, hw)), draw(st.integers(0, hw)))


# ---- comparisons -----------------------------------------------------------------------
def assert_match(actual, expected, bound=None, what=""):
    """``actual`` equals ``expected`` where ``expected`` is not finite (NaN for NaN, Inf of
    the same sign), and is within ``bound`` (a float64 tensor or number; 0 if None) of it
    elsewhere. Compared in float64."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double(), expected.detach().double()
    fin = torch.isfinite(e)
    same_special = (a == e) | (torch.isnan(a) & torch.isnan(e))
    bad = ~fin & ~same_special
    assert not bad.any(), f"{what}: non-finite mismatch at {bad.nonzero()[:5].tolist()}: {a[bad][:5]} vs {e[bad][:5]}"
    b = torch.zeros_like(e) if bound is None else torch.as_tensor(bound, dtype=torch.float64).expand_as(e)
    diff = (a - e).abs()
    bad = fin & ~(diff <= b)  # NaN diffs (a NaN where e is finite) are bad too
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} elements off, e.g. {a[bad][:3].tolist()} vs {e[bad][:3].tolist()} "
        f"(bound {b[bad][:3].tolist()})"
    )


def storage_ulp(t_dtype, value):
    """One storage ulp for bf16 (2^-7 relative): acc-dtype values a rounding apart can
    round to neighbouring bf16 numbers; 0 for fp32/fp64, whose error is the acc one."""
    return BF16_RTOL * value.abs() if t_dtype == torch.bfloat16 else 0.0


def subnormal(dtype):
    """The smallest positive value of ``dtype``: the spacing of its subnormal numbers."""
    fi = torch.finfo(dtype)
    return fi.tiny * fi.eps


def floor_of(dtype, roundings=1):
    """Absolute error floor of ``roundings`` acc-dtype roundings in the subnormal range
    (where relative bounds do not hold), plus one storage rounding for bf16."""
    f = roundings * subnormal(acc_of(dtype))
    return f + subnormal(torch.bfloat16) if dtype == torch.bfloat16 else f


def assert_sum_close(actual, terms, dims, what, dtype, out_dtype):
    """``actual`` is the sum over ``dims`` of ``terms`` (the kernel's terms, computed in
    float64 or in acc_of(dtype)), within the summation-order bound (module docstring) plus
    one rounding per term in the subnormal range and the rounding to ``out_dtype``."""
    t64 = terms.double()
    exact = t64.sum(dims)
    absum = t64.abs().nan_to_num(posinf=0.0).sum(dims)
    n = t64.numel() // max(exact.numel(), 1)
    bound = 64 * eps_of(dtype) * absum + floor_of(out_dtype if out_dtype == torch.bfloat16 else dtype, n + 1)
    if out_dtype == torch.bfloat16:
        bound = bound + BF16_RTOL * exact.abs().nan_to_num(posinf=0.0)
    assert_match(actual, exact.to(actual.dtype).double() if out_dtype != torch.float64 else exact, bound, what)


def grads_of(fn, inputs, grad_out):
    """(output, gradients of every input that requires grad) of ``fn(*inputs)``."""
    out = fn(*inputs)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    if not wrt:
        return out, []
    return out, list(torch.autograd.grad(out, wrt, grad_out, allow_unused=True))


def leaf(t, requires_grad=True):
    return t.detach().requires_grad_(requires_grad)


# ---- bias_prelu --------------------------------------------------------------------------
@given(st.data())
def test_bias_prelu_matches_reference(data):
    draw = data.draw
    dtype = draw(st.sampled_from(DTYPES))
    shape = shape4(draw)
    C = shape[1]
    shared = draw(st.booleans())
    pdtype = draw(st.sampled_from((dtype, torch.float32)))
    x = draw(laid_out(draw(values(shape, dtype))))
    bias = draw(values((C,), pdtype))
    weight = draw(values((1 if shared else C,), pdtype))
    g = draw(laid_out(draw(values(shape, dtype))))

    args = [leaf(x), leaf(bias), leaf(weight)]
    y, (dx, db, dw) = grads_of(bias_prelu, args, g)
    y_ref, (dx_ref, db_ref, dw_ref) = grads_of(bias_prelu_reference, [leaf(t) for t in (x, bias, weight)], g)
    assert y.dtype == dtype and db.dtype == bias.dtype and dw.dtype == weight.dtype
    assert_match(y, y_ref, what="y")  # the same acc-dtype operations, one rounding
    assert_match(dx, dx_ref, what="dx")

    acc = acc_of(dtype)
    z = x.to(acc) + bias.to(acc).view(1, -1, 1, 1)
    ga = g.to(acc)
    a = weight.to(acc).view(1, -1, 1, 1)
    dz = torch.where(z > 0, ga, a * ga)
    dw_terms = torch.where(z > 0, torch.zeros_like(z), ga * z)
    for name, got in (("dbias", db), ("dbias_ref", db_ref)):
        assert_sum_close(got, dz, (0, 2, 3), name, dtype, bias.dtype)
    for name, got in (("dweight", dw), ("dweight_ref", dw_ref)):
        if shared:
            assert_sum_close(got, dw_terms.reshape(1, -1), (1,), name, dtype, weight.dtype)
        else:
            assert_sum_close(got, dw_terms, (0, 2, 3), name, dtype, weight.dtype)


# ---- bias_residual ---------------------------------------------------------------------
@given(st.data())
def test_bias_residual_matches_reference(data):
    draw = data.draw
    dtype = draw(st.sampled_from(DTYPES))
    shape = shape4(draw)
    pdtype = draw(st.sampled_from((dtype, torch.float32)))
    x = draw(laid_out(draw(values(shape, dtype))))
    res = draw(laid_out(draw(values(shape, dtype))))
    bias = draw(values((shape[1],), pdtype))
    scale = draw(st.sampled_from((1.0, 0.2, -0.5, 0.0, -0.0, 1e-20, 1e15, 3)))
    g = draw(laid_out(draw(values(shape, dtype))))

    y, (dx, db, dr) = grads_of(lambda a, b, r: bias_residual(a, b, r, scale), [leaf(t) for t in (x, bias, res)], g)
    y_ref, (dx_ref, db_ref, dr_ref) = grads_of(
        lambda a, b, r: bias_residual_reference(a, b, r, scale), [leaf(t) for t in (x, bias, res)], g
    )
    acc = acc_of(dtype)
    # r + s * (x + b), possibly one FMA in the kernel: the product's rounding, then one
    # storage rounding (bf16).
    # fma(s, z, r) vs fl(r + fl(s * z)): the product's rounding plus the two final ones,
    # eps_acc * (|s * z| + |y|); bf16 adds one storage ulp.
    prod = (scale * (x.to(acc) + bias.to(acc).view(1, -1, 1, 1))).double().abs().nan_to_num(posinf=0.0)
    mag = y_ref.double().abs().nan_to_num(posinf=0.0)
    bound = eps_of(dtype) * (prod + mag) + (BF16_RTOL * mag if dtype == torch.bfloat16 else 0.0) + floor_of(dtype, 3)
    assert_match(y, y_ref, bound, "y")
    assert_match(dx, dx_ref, what="dx")  # scale * g in acc, one rounding
    assert_match(dr, dr_ref, what="dresidual")  # g itself
    terms = scale * g.double()  # the kernel scales the float64 sum; the reference each term
    for name, got in (("dbias", db), ("dbias_ref", db_ref)):
        assert_sum_close(got, terms, (0, 2, 3), name, dtype, bias.dtype)


# ---- pixel_shuffle_prelu ---------------------------------------------------------------
@given(st.data())
def test_pixel_shuffle_prelu_matches_reference(data):
    draw = data.draw
    dtype = draw(st.sampled_from(DTYPES))
    r = draw(st.integers(1, 4))
    N, C, H, W = shape4(draw, c=3, hw=6)
    shared = draw(st.booleans())
    pdtype = draw(st.sampled_from((dtype, torch.float32)))
    x = draw(laid_out(draw(values((N, C * r * r, H, W), dtype))))
    weight = draw(values((1 if shared else C,), pdtype))
    g = draw(laid_out(draw(values((N, C, H * r, W * r), dtype))))

    y, (dx, dw) = grads_of(lambda a, w: pixel_shuffle_prelu(a, w, r), [leaf(x), leaf(weight)], g)
    y_ref, (dx_ref, dw_ref) = grads_of(lambda a, w: pixel_shuffle_prelu_reference(a, w, r), [leaf(x), leaf(weight)], g)
    assert y.shape == (N, C, H * r, W * r) and dw.dtype == weight.dtype
    assert_match(y, y_ref, what="y")
    assert_match(dx, dx_ref, what="dx")
    acc = acc_of(dtype)
    v = torch.nn.functional.pixel_shuffle(x.to(acc).contiguous(), r) if x.numel() else x.to(acc).reshape(N, C, H * r, W * r)
    ga = g.to(acc)
    terms = torch.where(v > 0, torch.zeros_like(v), ga * v)
    for name, got in (("dweight", dw), ("dweight_ref", dw_ref)):
        if shared:
            assert_sum_close(got, terms.reshape(1, -1), (1,), name, dtype, weight.dtype)
        else:
            assert_sum_close(got, terms, (0, 2, 3), name, dtype, weight.dtype)


# ---- l1_loss -----------------------------------------------------------------------------
@given(st.data())
def test_l1_loss_matches_reference(data):
    draw = data.draw
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.sampled_from((0, 1, 2, 4)))
    shape = tuple(draw(st.integers(0, 7)) for _ in range(ndim))
    reduction = draw(st.sampled_from(("mean", "sum", "none")))
    eps = draw(st.sampled_from((None, None, 1e-3, 0.5, 1e-20, 1e10)))
    x = draw(laid_out(draw(values(shape, dtype))))
    t = draw(laid_out(draw(values(shape, dtype))))
    req = draw(st.sampled_from(((True, True), (True, False), (False, True))))
    if reduction == "none":
        g = draw(laid_out(draw(values(shape, dtype))))
    else:
        g = torch.tensor(draw(st.sampled_from((1.0, 1.0, 0.75, -3.0, 0.0, 1e15))), dtype=dtype)

    def run(fn):
        return grads_of(lambda a, b: fn(a, b, reduction, eps=eps), [leaf(x, req[0]), leaf(t, req[1])], g)

    loss, grads = run(l1_loss)
    loss_ref, grads_ref = run(l1_loss_reference)
    assert loss.dtype == dtype and loss.shape == loss_ref.shape
    acc = acc_of(dtype)
    d = x.to(acc) - t.to(acc)
    terms = d.abs() if eps is None else torch.sqrt(d * d + eps**2)
    # Charbonnier: d*d + eps^2 may be one FMA: a few acc ulps of the square root.
    elem_rtol = 0.0 if eps is None else 2 * eps_of(dtype)
    if reduction == "none":
        bound = elem_rtol * loss_ref.double().abs().nan_to_num(posinf=0.0) + storage_ulp(dtype, loss_ref.double().nan_to_num(posinf=0.0))
        assert_match(loss, loss_ref, bound, "loss")
    else:
        n = max(terms.numel(), 1)
        scale = 1.0 / n if reduction == "mean" else 1.0
        flat = (terms.reshape(-1) * (1 + elem_rtol)) if terms.numel() else terms.reshape(-1)
        for name, got in (("loss", loss), ("loss_ref", loss_ref)):
            if terms.numel() == 0 and reduction == "mean":
                assert got.isnan(), name
                continue
            absum = flat.double().abs().nan_to_num(posinf=0.0).sum()
            exact = terms.double().sum() * scale
            bound = (64 * eps_of(dtype) + elem_rtol) * absum * scale + floor_of(dtype, n + 1)
            if dtype == torch.bfloat16:
                bound = bound + BF16_RTOL * exact.abs().nan_to_num(posinf=0.0)
            expected = exact if dtype == torch.float64 else exact.to(dtype).double()
            assert_match(got, expected, bound, name)
    # Gradients: s * dl/dd * g. The kernel stores s * dl/dd in the storage dtype and
    # multiplies by g (two roundings); the reference divides g by numel first: a few ulps.
    # In the subnormal range the reference's Charbonnier backward rounds g / (2 l) before
    # multiplying by 2 d: an absolute error of one subnormal spacing times 2 |d|.
    # And where the kernel's stored s * dl/dd is itself subnormal (a subnormal d over eps), its
    # rounding is absolute -- up to one subnormal spacing of the storage dtype -- and the
    # incoming gradient multiplies it: an absolute error of that spacing times |g| (1e15 g
    # made it 1e-5 relative in float64 under random seeds).
    floor = floor_of(dtype, 4)
    if eps is not None:
        floor = floor + subnormal(acc) * 2 * d.double().abs().nan_to_num(nan=0.0, posinf=0.0)
        floor = floor + subnormal(dtype) * g.double().abs().nan_to_num(nan=0.0, posinf=0.0)
    for got, ref, name in zip(grads, grads_ref, ("dinput", "dtarget") if req[0] else ("dtarget",)):
        rtol = BF16_RTOL if dtype == torch.bfloat16 else 4 * eps_of(dtype) + elem_rtol
        bound = rtol * ref.double().abs().nan_to_num(posinf=0.0) + floor
        assert_match(got, ref, bound, name)
    if eps is None and req[0]:
        # sign(d) is 0 where d is NaN (torch.sign): never a NaN gradient from a NaN difference
        # unless the incoming gradient is itself non-finite.
        assert not (torch.isnan(grads[0]) & torch.isfinite(g.to(acc)) & torch.isnan(d)).any()


# ---- ssim ----------------------------------------------------------------------------------
@settings(max_examples=max(1, settings.default.max_examples // 2))  # the slowest op to fuzz
@given(st.data())
def test_ssim_matches_reference(data):
    draw = data.draw
    dtype = draw(st.sampled_from(DTYPES))
    win = draw(st.sampled_from((1, 3, 5, 7, 11)))
    N, C = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(win, win + 5)), draw(st.integers(win, win + 5))
    data_range = draw(st.sampled_from((1.0, 255.0, 1e-2, 1e3)))
    sigma = draw(st.sampled_from((1.5, 0.3, 5.0)))
    k1, k2 = draw(st.sampled_from(((0.01, 0.03), (0.1, 0.3), (1e-3, 3e-3))))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(N, C, H, W, generator=gen, dtype=torch.float64) * data_range
    y0 = (x0 + 0.2 * data_range * torch.randn(N, C, H, W, generator=gen, dtype=torch.float64)).clamp(0, data_range)
    specials = N > 0 and draw(st.booleans())
    if specials:
        for v in draw(st.lists(st.sampled_from((math.nan, math.inf, -math.inf)), min_size=1, max_size=2)):
            x0.view(-1)[draw(st.integers(0, x0.numel() - 1))] = v
    x = draw(laid_out(x0.to(dtype)))
    y = draw(laid_out(y0.to(dtype)))
    wrt_y = draw(st.booleans())
    w = torch.randn(N, generator=gen, dtype=torch.float64).to(dtype)
    params = (data_range, win, sigma, k1, k2)

    def run(fn):
        xs, ys = leaf(x), leaf(y, wrt_y)
        v = fn(xs, ys, *params)
        if N == 0:
            return v, None, None
        grads = torch.autograd.grad(v, (xs, ys) if wrt_y else (xs,), w)
        return v, grads[0], (grads[1] if wrt_y else None)

    v, dx, dy = run(ssim)
    v_ref, dx_ref, dy_ref = run(ssim_reference)
    assert v.dtype == dtype and v.shape == (N,)
    if specials:
        # An image with a non-finite pixel has a non-finite SSIM in both (NaN pattern only).
        assert torch.equal(torch.isfinite(v), torch.isfinite(v_ref))
        return
    # sigma^2 = E[x^2] - mu^2 cancels: an absolute error of a few eps_acc * L^2 that the map
    # divides by at least C2 = (k2 L)^2; kernel and reference round differently, so
    # |dSSIM| <= 8 eps_acc / k2^2 (both sides), plus one storage rounding for bf16.
    rel = 8 * eps_of(dtype) / k2**2 + (BF16_RTOL if dtype == torch.bfloat16 else 0.0)
    assert_match(v, v_ref, rel, "ssim")
    if N == 0:
        return
    for got, ref, name in ((dx, dx_ref, "dx"), (dy, dy_ref, "dy")):
        if ref is None:
            continue
        scale = ref.double().abs().max().item() if ref.numel() else 0.0
        assert_match(got, ref, rel * scale + floor_of(dtype, 4), name)


# ---- invalid arguments: the kernel raises what the reference raises ------------------------
def _outcome(fn):
    try:
        fn()
    except (TypeError, ValueError, RuntimeError) as e:  # anything else fails the test
        return type(e)
    return None


def _any_scalar():
    return st.sampled_from((1.0, 0.0, -1.0, math.nan, math.inf, -math.inf, 2, True, None, "1", torch.tensor(2.0), 1e300))


def _any_tensorish():
    return st.sampled_from(("ok", "list", "int32", "fp16", "3d", "5d", "wrong_shape", "meta", "complex"))


def _mangle(t, how, shape_change):
    if how == "ok":
        return t
    if how == "list":
        return t.tolist()
    if how == "int32":
        return t.to(torch.int32)
    if how == "fp16":
        return t.to(torch.float16)
    if how == "complex":
        return t.to(torch.complex64)
    if how == "3d":
        return t.flatten(0, 1) if t.dim() == 4 else t.reshape(1, 1, -1)
    if how == "5d":
        return t.unsqueeze(0)
    if how == "meta":
        return t.to("meta")
    return shape_change(t)


@settings(max_examples=3 * settings.default.max_examples)  # cheap: mostly argument checks
@given(st.data())
def test_invalid_arguments_raise_like_the_reference(data):
    draw = data.draw
    op = draw(st.sampled_from(("bias_prelu", "bias_residual", "pixel_shuffle_prelu", "l1_loss", "ssim")))
    dtype = draw(st.sampled_from(DTYPES))
    g = torch.Generator().manual_seed(0)

    def grow_w(t):
        return torch.cat([t, t[..., :1]], dim=-1) if t.dim() and t.shape[-1] else torch.zeros(*t.shape[:-1], 3) if t.dim() else t

    if op in ("bias_prelu", "bias_residual"):
        shape = shape4(draw, n=2, c=3, hw=3)
        x = torch.randn(shape, generator=g).to(dtype)
        kinds = [draw(_any_tensorish()) for _ in range(3)]
        x_, b_ = _mangle(x, kinds[0], grow_w), _mangle(torch.zeros(shape[1]), kinds[1], grow_w)
        third = _mangle(x.clone() if op == "bias_residual" else torch.ones(shape[1]), kinds[2], grow_w)
        if op == "bias_prelu":
            args = (x_, b_, third)
            fused, ref = bias_prelu, bias_prelu_reference
        else:
            args = (x_, b_, third, draw(_any_scalar()))
            fused, ref = bias_residual, bias_residual_reference
    elif op == "pixel_shuffle_prelu":
        shape = shape4(draw, n=2, c=5, hw=3)
        x = torch.randn(shape, generator=g).to(dtype)
        r = draw(st.sampled_from((1, 2, 3, 0, -1, 2.0, True, None, 2**31, 2**32, 3037000500, 2**62, 2**64)))
        wlen = draw(st.sampled_from((1, shape[1], max(shape[1] // 4, 1), 2)))
        args = (_mangle(x, draw(_any_tensorish()), grow_w), _mangle(torch.ones(wlen), draw(_any_tensorish()), grow_w), r)
        fused, ref = pixel_shuffle_prelu, pixel_shuffle_prelu_reference
    elif op == "l1_loss":
        shape = tuple(draw(st.integers(0, 3)) for _ in range(draw(st.integers(0, 4))))
        x = torch.randn(shape, generator=g).to(dtype)
        kinds = [draw(_any_tensorish()) for _ in range(2)]
        if "3d" in kinds or "5d" in kinds:  # l1_loss takes any rank: make them shape mismatches
            kinds = ["wrong_shape" if k in ("3d", "5d") else k for k in kinds]
        args = (_mangle(x, kinds[0], grow_w), _mangle(x.clone(), kinds[1], grow_w),
                draw(st.sampled_from(("mean", "sum", "none", "avg", None, 1))))
        eps = draw(st.sampled_from((None, 0.1, 0.0, -1.0, math.nan, math.inf, True, "0.1", torch.tensor(0.1))))
        fused = lambda *a, impl="auto": l1_loss(*a, eps=eps, impl=impl)  # noqa: E731
        ref = lambda *a: l1_loss_reference(*a, eps=eps)  # noqa: E731
    else:
        shape = (draw(st.integers(0, 2)), draw(st.integers(0, 2)), draw(st.integers(0, 12)), draw(st.integers(0, 12)))
        x = torch.rand(shape, generator=g).to(dtype)
        kinds = [draw(_any_tensorish()) for _ in range(2)]
        win = draw(st.sampled_from((11, 3, 4, 0, -1, 65, 11.0, True)))
        scalars = [draw(_any_scalar()) if draw(st.booleans()) else d for d in (1.0, 1.5, 0.01, 0.03)]
        args = (_mangle(x, kinds[0], grow_w), _mangle(x.clone(), kinds[1], grow_w), scalars[0], win, *scalars[1:])
        fused, ref = ssim, ssim_reference

    expected = _outcome(lambda: ref(*args))
    assert _outcome(lambda: fused(*args)) is expected, f"{op}{tuple(type(a).__name__ for a in args)}"
    assert _outcome(lambda: fused(*args, impl="reference")) is expected


# ---- sizes whose product overflows int64 ---------------------------------------------------
_HUGE = torch.empty(1, 0, 1, 1).expand(1, 0, 2**40, 2**40)  # numel 0, but H * W = 2**80

HUGE_CALLS = {
    "bias_prelu": lambda impl: bias_prelu(_HUGE, torch.zeros(0), torch.ones(1), impl=impl),
    "bias_residual": lambda impl: bias_residual(_HUGE, torch.zeros(0), _HUGE, 0.5, impl=impl),
    "pixel_shuffle_prelu": lambda impl: pixel_shuffle_prelu(_HUGE, torch.ones(1), 1, impl=impl),
    "ssim": lambda impl: ssim(_HUGE, _HUGE, window_size=1, impl=impl),
    "l1_loss": lambda impl: l1_loss(_HUGE, _HUGE, "sum", impl=impl),
    "torch.ops.bias_prelu": lambda impl: torch.ops.fastsr.bias_prelu(_HUGE, torch.zeros(0), torch.ones(1)),
    "torch.ops.channel_sum": lambda impl: torch.ops.fastsr.channel_sum(_HUGE, 1.0, torch.float32),
    "torch.ops.ssim": lambda impl: torch.ops.fastsr.ssim(_HUGE, _HUGE, 1.0, 1, 1.5, 0.01, 0.03, False, False),
    "torch.ops.l1_loss": lambda impl: torch.ops.fastsr.l1_loss(_HUGE, _HUGE, "sum", None, False),
}


@pytest.mark.parametrize("impl", ("auto", "reference"))
@pytest.mark.parametrize("call", HUGE_CALLS, ids=list(HUGE_CALLS))
def test_size_products_beyond_int64_are_value_errors(call, impl):
    """A zero-size view whose sizes multiply past int64 is refused by name before any
    kernel forms H * W (a signed overflow), on every path."""
    with pytest.raises(ValueError, match="overflow"):
        HUGE_CALLS[call](impl)

"""GPU checks of fastsr: the sections of check.py plus the checks of the compiled CUDA kernels
(call overhead, fp64 gradcheck, opcheck of every op, torch.compile of every fused generator).
Results to $OUT/gpu.json.

  bash benchmarks/gpu/run.sh [--smoke]     (QUICK=1: parity, call overhead, kernel table)
"""
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check  # noqa: E402  (imports fastsr, defines the sections)
import torch  # noqa: E402

from fastsr import ops  # noqa: E402
from fastsr.ops import _common  # noqa: E402
from fastsr.perf import time_fn  # noqa: E402

DEV = check.DEV
OUT = check.OUT


def part(name, budget_s=600):
    """check.py's section decorator for a function without the budget arguments: its result
    goes to $OUT/gpu.json under ``name``."""
    return lambda fn: check.section(name, budget_s)(lambda budget, t0: fn())


def wall_us(fn, n=300):
    """Median us per call of ``n`` back-to-back calls after 20 warm-up calls (fastsr.perf.time_fn:
    CUDA events around each call; for a launch-bound call the interval is its host cost)."""
    return time_fn(fn, DEV, iters=n, warmup=20).median_s * 1e6


@part("which_kernels")
def which_kernels():
    return {"compiled_cuda": sorted(_common.COMPILED_CUDA), "triton_cuda": _common.TRITON_CUDA}


@part("call_us")
def call_us():
    res = {}
    for rep in range(3):  # interleaved repeats; min and median reported
        x = torch.randn(1, 64, 8, 8, device=DEV); b = torch.randn(64, device=DEV); w = torch.rand(64, device=DEV)
        r = torch.randn_like(x)
        xg = x.clone().requires_grad_(); bg = b.clone().requires_grad_(); wg = w.clone().requires_grad_()
        g = torch.randn_like(x)
        x4 = torch.randn(1, 256, 8, 8, device=DEV, requires_grad=True); w4 = torch.rand(64, device=DEV, requires_grad=True)
        g4 = torch.randn(1, 64, 16, 16, device=DEV)
        a = torch.rand(1, 3, 32, 32, device=DEV, requires_grad=True); c = torch.rand(1, 3, 32, 32, device=DEV)
        cases = {
            "torch.relu fwd": lambda: torch.relu(x),
            "eager x+b then prelu fwd": lambda: torch.nn.functional.prelu(x + b.view(1, -1, 1, 1), w),
            "fastsr.ops.bias_prelu fwd": lambda: ops.bias_prelu(x, b, w),
            "torch.ops.fastsr.bias_prelu fwd": lambda: torch.ops.fastsr.bias_prelu(x, b, w),
            "fastsr.ops.bias_residual fwd": lambda: ops.bias_residual(x, b, r, 1.0),
            "eager bias+prelu fwd+bwd": lambda: torch.nn.functional.prelu(xg + bg.view(1, -1, 1, 1), wg).backward(g),
            "fastsr bias_prelu fwd+bwd": lambda: ops.bias_prelu(xg, bg, wg).backward(g),
            "fastsr bias_residual fwd+bwd": lambda: ops.bias_residual(xg, bg, r, 0.2).backward(g),
            "eager pixel_shuffle+prelu fwd+bwd": lambda: torch.nn.functional.prelu(torch.nn.functional.pixel_shuffle(x4, 2), w4).backward(g4),
            "fastsr pixel_shuffle_prelu fwd+bwd": lambda: ops.pixel_shuffle_prelu(x4, w4, 2).backward(g4),
            "eager l1 fwd+bwd": lambda: torch.nn.functional.l1_loss(a, c).backward(),
            "fastsr l1 fwd+bwd": lambda: ops.l1_loss(a, c).backward(),
        }
        for k, fn in cases.items():
            res.setdefault(k, []).append(round(wall_us(fn, n=200), 1))
    return {k: {"min": min(v), "median": statistics.median(v)} for k, v in res.items()}


@part("gradcheck_fp64_and_opcheck")
def gradcheck_opcheck():
    out = {}
    dd = dict(device=DEV, dtype=torch.float64)
    x = torch.randn(2, 8, 5, 7, **dd, requires_grad=True)
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(8, **dd, requires_grad=True); w = torch.rand(8, **dd, requires_grad=True)
    r = torch.randn(2, 8, 5, 7, **dd, requires_grad=True)
    w2 = torch.rand(2, **dd, requires_grad=True)
    a = torch.rand(2, 3, 6, 5, **dd, requires_grad=True); c = torch.rand(2, 3, 6, 5, **dd, requires_grad=True)
    checks = {
        "bias_prelu": lambda: torch.autograd.gradcheck(lambda x, b, w: ops.bias_prelu(x, b, w), (x, b, w)),
        "bias_prelu_cl": lambda: torch.autograd.gradcheck(lambda x, b, w: ops.bias_prelu(x, b, w), (xc, b, w)),
        "bias_prelu_shared": lambda: torch.autograd.gradcheck(lambda x, b, w: ops.bias_prelu(x, b, w), (x, b, w[:1].detach().clone().requires_grad_())),
        "bias_residual": lambda: torch.autograd.gradcheck(lambda x, b, r: ops.bias_residual(x, b, r, 0.3), (x, b, r)),
        "pixel_shuffle_prelu": lambda: torch.autograd.gradcheck(lambda x, w: ops.pixel_shuffle_prelu(x, w, 2), (x, w2)),
        "pixel_shuffle_prelu_cl": lambda: torch.autograd.gradcheck(lambda x, w: ops.pixel_shuffle_prelu(x, w, 2), (xc, w2)),
        "l1_mean": lambda: torch.autograd.gradcheck(lambda a, c: ops.l1_loss(a, c), (a, c)),
        "l1_none": lambda: torch.autograd.gradcheck(lambda a, c: ops.l1_loss(a, c, "none"), (a, c)),
        "charbonnier_sum": lambda: torch.autograd.gradcheck(lambda a, c: ops.l1_loss(a, c, "sum", eps=1e-2), (a, c)),
    }
    for k, fn in checks.items():
        try:
            out[k] = bool(fn())
        except Exception as e:
            out[k] = repr(e)[:300]
    xf = torch.randn(2, 16, 9, 13, device=DEV, requires_grad=True)
    a32 = torch.rand(2, 3, 9, 13, device=DEV, requires_grad=True); c32 = torch.rand(2, 3, 9, 13, device=DEV)
    op_cases = {
        "bias_prelu": (torch.ops.fastsr.bias_prelu.default, (xf, torch.randn(16, device=DEV, requires_grad=True), torch.rand(16, device=DEV, requires_grad=True))),
        "bias_residual": (torch.ops.fastsr.bias_residual.default, (xf, torch.randn(16, device=DEV, requires_grad=True), torch.randn(2, 16, 9, 13, device=DEV, requires_grad=True), 0.5)),
        "channel_sum": (torch.ops.fastsr.channel_sum.default, (xf.detach(), 0.5, torch.float32)),
        "pixel_shuffle_prelu": (torch.ops.fastsr.pixel_shuffle_prelu.default, (xf, torch.rand(4, device=DEV, requires_grad=True), 2)),
        "pixel_shuffle_prelu_cl": (torch.ops.fastsr.pixel_shuffle_prelu.default, (xf.detach().contiguous(memory_format=torch.channels_last).requires_grad_(), torch.rand(4, device=DEV, requires_grad=True), 2)),
        "l1_loss": (torch.ops.fastsr.l1_loss.default, (a32, c32, "mean", None, True)),
        "l1_loss_none_charb": (torch.ops.fastsr.l1_loss.default, (a32, c32, "none", 1e-3, True)),
    }
    oc = {}
    for k, (op, args) in op_cases.items():
        try:
            torch.library.opcheck(op, args)
            oc[k] = "ok"
        except Exception as e:
            oc[k] = repr(e)[:300]
    out["opcheck"] = oc
    # bad input on CUDA: a CPU bias must be refused with a ValueError
    try:
        ops.bias_prelu(xf.detach(), torch.randn(16), torch.rand(16, device=DEV))
        out["cpu_bias_refused"] = False
    except ValueError as e:
        out["cpu_bias_refused"] = str(e)[:200]
    # channels_last output format of pixel_shuffle_prelu
    xcl = torch.randn(2, 16, 5, 6, device=DEV).contiguous(memory_format=torch.channels_last)
    y = ops.pixel_shuffle_prelu(xcl, torch.rand(4, device=DEV), 2)
    yr = ops.pixel_shuffle_prelu(xcl, torch.rand(4, device=DEV), 2, impl="reference")
    out["ps_cl_format"] = {"fastsr_cl": y.is_contiguous(memory_format=torch.channels_last),
                           "reference_cl": yr.is_contiguous(memory_format=torch.channels_last)}
    return out


@part("compile_every_fused_generator")
def compile_generators():
    from fastsr.models import create
    res = {}
    names = ["SRResNet", "MSRResNet", "NonBNResNet", "SharpnessGenerator", "RRDBNet", "EDSR"]
    for name in names:
        t = time.time()
        try:
            kw = {"scale": 4} if name != "SharpnessGenerator" else {}
            small = {"RRDBNet": {"num_block": 2}, "EDSR": {"num_block": 2}}.get(name, {})
            try:
                g = create(name, fused=True, **kw, **small).to(DEV)
            except TypeError:
                g = create(name, fused=True, **kw).to(DEV)
            xin = torch.rand(2, 3, 24, 24, device=DEV)
            ye = g(xin)
            torch._dynamo.reset()
            gc = torch.compile(g, fullgraph=True)
            yc = gc(xin)
            yc.float().mean().backward()
            res[name] = {"rel_err": check.rel_err(yc, ye), "s": round(time.time() - t, 1)}
        except Exception as e:
            res[name] = repr(e)[:300]
    return res


@part("iteration_paper")
def iteration_paper():
    b, c = (16, 96) if not check.SMOKE else (2, 64)
    labels = os.environ.get("ITER_VARIANTS", "2,2b,2c,3,6,9,7,8").split(",")
    return check.time_iterations(b, c, float(os.environ.get("ITER_BUDGET", 100)), time.time(), labels=set(labels),
                                 iters=10 if not check.SMOKE else 1, warmup=5 if not check.SMOKE else 1)


@part("kernels_quick")
def kernels_quick():
    """fwd+bwd ms of the epilogues vs eager (no torch.compile column: it costs minutes)."""
    rows = []
    ref_bp = lambda x, b, w: torch.nn.functional.prelu(x + b.view(1, -1, 1, 1), w)
    ref_br = lambda x, b, r: r + 0.2 * (x + b.view(1, -1, 1, 1))
    ref_ps = lambda x, w: torch.nn.functional.prelu(torch.nn.functional.pixel_shuffle(x, 2), w)
    ref_l1 = lambda a, c: torch.nn.functional.l1_loss(a, c)
    shapes = [(16, 64, 24, 24), (64, 64, 96, 96)] if not check.SMOKE else [(2, 8, 8, 8)]
    for dt in (torch.float32, torch.bfloat16):
        for s in shapes:
            for cl in (False, True):
                fmt = torch.channels_last if cl else torch.contiguous_format
                x = torch.randn(s, device=DEV, dtype=dt).contiguous(memory_format=fmt)
                b = torch.randn(s[1], device=DEV, dtype=dt); w = (torch.rand(s[1], device=DEV) * 0.5).to(dt)
                r = torch.randn_like(x)
                n = x.numel() * x.element_size()
                for op, f, e, args, gi, nb in (
                        ("bias_prelu", ops.bias_prelu, ref_bp, [x, b, w], (0, 1, 2), 5 * n),
                        ("bias_residual", lambda x, b, r: ops.bias_residual(x, b, r, 0.2), ref_br, [x, b, r], (0, 1, 2), 5 * n)):
                    tf = check.bench(check.fb(f, args, gi)); te = check.bench(check.fb(e, args, gi))
                    rows.append({"op": op, "shape": "x".join(map(str, s)), "dtype": str(dt)[6:], "fmt": "cl" if cl else "nchw",
                                 "fastsr": round(tf, 4), "eager": round(te, 4), "x_eager": round(te / tf, 2),
                                 "GBps_all_passes": round(nb / tf / 1e6, 1)})
            s4 = (s[0], 256, s[2], s[3])
            x4 = torch.randn(s4, device=DEV, dtype=dt); w4 = (torch.rand(64 if not check.SMOKE else 64, device=DEV) * 0.5).to(dt)
            tf = check.bench(check.fb(lambda x, w: ops.pixel_shuffle_prelu(x, w, 2), [x4, w4], (0, 1)))
            te = check.bench(check.fb(ref_ps, [x4, w4], (0, 1)))
            rows.append({"op": "pixel_shuffle_prelu", "shape": "x".join(map(str, s4)), "dtype": str(dt)[6:], "fmt": "nchw",
                         "fastsr": round(tf, 4), "eager": round(te, 4), "x_eager": round(te / tf, 2)})
    for s in ([(16, 3, 96, 96), (1, 3, 2048, 2048)] if not check.SMOKE else [(2, 3, 16, 16)]):
        a = torch.rand(s, device=DEV); c = torch.rand(s, device=DEV)
        tf = check.bench(check.fb(ops.l1_loss, [a, c], (0,))); te = check.bench(check.fb(ref_l1, [a, c], (0,)))
        rows.append({"op": "l1_loss", "shape": "x".join(map(str, s)), "dtype": "float32", "fmt": "nchw",
                     "fastsr": round(tf, 4), "eager": round(te, 4), "x_eager": round(te / tf, 2)})
    return rows


if __name__ == "__main__" and os.environ.get("QUICK"):
    check.env()
    which_kernels()
    check.correctness()
    call_us()
    kernels_quick()
    print(f"\ntotal {time.time() - check.T0:.0f}s", flush=True)
elif __name__ == "__main__":
    check.env()
    which_kernels()
    check.correctness()
    gradcheck_opcheck()
    call_us()
    check.kernels()
    iteration_paper()
    check.inference()
    compile_generators()
    print(f"\ntotal {time.time() - check.T0:.0f}s", flush=True)

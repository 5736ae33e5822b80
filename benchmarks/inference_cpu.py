"""CPU inference of the generators people run, fastsr against every peer in one run.

Variants (batch 1, random weights of the published sizes, LR side ``--sizes``):
  eager fp32 (NCHW, as loaded), eager fp32 + channels_last, fastsr's fused fp32 model as
  built (no preparation), ``fastsr.optimize_for_inference`` fp32 / bf16 (with and without
  the Winograd convolutions: "oneDNN only" is prepacking and post-ops alone), eager bf16 +
  channels_last (``model.bfloat16()``), torch.compile with Inductor freezing fp32 / bf16 +
  channels_last, onnxruntime fp32, OpenVINO fp32 / bf16 (its inference-precision hint).
Rounds are interleaved (every variant once per round), times are per image; the report
gives min and median and each median against eager fp32 and eager bf16 + channels_last.

    python benchmarks/inference_cpu.py --threads 1 --out benchmarks/results/cpu_inference.md

Peers that are not installed (onnxruntime, openvino) are left out with a note. Every
speed claim of the README about inference on the CPU comes from this script.
"""
from __future__ import annotations

import argparse
import copy
import io
import platform
import statistics
import sys
import time
import warnings

import torch

import fastsr
from fastsr.models import create

MODELS = {
    "SRVGGNetCompact x4 (realesr-general-x4v3 size)": ("SRVGGNetCompact", dict(num_conv=32)),
    "MSRResNet x4": ("MSRResNet", {}),
    "NonBN x4 (fastsr nonbn_x4)": ("NonBNResNet", {}),
    "RRDBNet x4, 23 blocks (RealESRGAN_x4plus size)": ("RRDBNet", dict(num_block=23)),
}


def _model(name, kw):
    torch.manual_seed(0)
    m = create(name, scale=4, **kw).eval()
    with torch.no_grad():
        for p in m.modules():
            if isinstance(p, torch.nn.PReLU):
                p.weight.uniform_(0.05, 0.4)
    return m


def _eager(model, dtype, channels_last, fused=False):
    m = copy.deepcopy(model)
    m.fused = fused
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = m.to(dtype=dtype, memory_format=fmt)

    def run(x):
        with torch.no_grad():
            return m(x.to(dtype).contiguous(memory_format=fmt)).float()
    return run


def _compiled(model, dtype, channels_last):
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    m = copy.deepcopy(model)
    m.fused = False
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = m.to(dtype=dtype, memory_format=fmt)
    c = torch.compile(m)

    def run(x):
        with torch.no_grad():
            return c(x.to(dtype).contiguous(memory_format=fmt)).float()
    return run


def _onnxruntime(model, x, threads):
    import onnxruntime as ort

    m = copy.deepcopy(model)
    m.fused = False
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), buf, dynamo=False, opset_version=17, input_names=["lr"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(sess.run(None, {"lr": x.numpy()})[0])


def _openvino(model, x, threads, precision):
    import openvino as ov

    m = copy.deepcopy(model)
    m.fused = False
    ov_model = ov.convert_model(m, example_input=x)
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "INFERENCE_PRECISION_HINT": precision,
                                                         "PERFORMANCE_HINT": "LATENCY"})
    return lambda x: torch.from_numpy(compiled([x.numpy()])[0])


def variants(model, x, threads, skip_compile=False, bf16=True):
    """name -> callable(x); ``bf16=False`` leaves the bf16 variants out (CPUs without native
    bf16, where oneDNN and OpenVINO emulate it and no user would run it)."""
    out = {
        "eager fp32": _eager(model, torch.float32, False),
        "eager fp32 + channels_last": _eager(model, torch.float32, True),
        "fastsr fused fp32, unprepared": _eager(model, torch.float32, False, fused=True),
        "fastsr optimize_for_inference fp32, oneDNN only": fastsr.optimize_for_inference(model, precision="fp32",
                                                                                        winograd=False),
        "fastsr optimize_for_inference fp32": fastsr.optimize_for_inference(model, precision="fp32"),
    }
    if bf16:
        out["eager bf16 + channels_last"] = _eager(model, torch.bfloat16, True)
        out["fastsr optimize_for_inference bf16, oneDNN only"] = fastsr.optimize_for_inference(
            model, precision="bf16", winograd=False)
        out["fastsr optimize_for_inference bf16"] = fastsr.optimize_for_inference(model, precision="bf16")
    notes = []
    if not skip_compile:
        out["torch.compile freezing fp32"] = _compiled(model, torch.float32, False)
        if bf16:
            out["torch.compile freezing bf16 + channels_last"] = _compiled(model, torch.bfloat16, True)
    peers = [("onnxruntime fp32", lambda: _onnxruntime(model, x, threads)),
             ("openvino fp32", lambda: _openvino(model, x, threads, "f32"))]
    if bf16:
        peers.append(("openvino bf16", lambda: _openvino(model, x, threads, "bf16")))
    for name, make in peers:
        try:
            out[name] = make()
        except ImportError as e:
            notes.append(f"{name}: not installed ({e.name})")
    return out, notes


def bench(label, model, px, rounds, threads, skip_compile, bf16):
    x = torch.rand(1, 3, px, px)
    runs, notes = variants(model, x, threads, skip_compile, bf16)
    ref = runs["eager fp32"](x)
    errs, times = {}, {k: [] for k in runs}
    for k, f in runs.items():  # warm-up (compiles) and the output error against eager fp32
        t0 = time.perf_counter()
        y = f(x)
        errs[k] = float((y.float() - ref).abs().max())
        print(f"  warm-up {k}: {time.perf_counter() - t0:.1f} s, max |diff| {errs[k]:.2e}", file=sys.stderr)
    for _ in range(rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f(x)
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["eager fp32"])
    bf = statistics.median(times["eager bf16 + channels_last"]) if bf16 else None
    rows = [f"| {label}, {px} px | {k} | {min(v) * 1e3:.0f} | {statistics.median(v) * 1e3:.0f} | "
            f"{base / statistics.median(v):.2f}x | {f'{bf / statistics.median(v):.2f}x' if bf else '-'} | "
            f"{errs[k]:.1e} |" for k, v in times.items()]
    return rows, notes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS), metavar="MODEL")
    p.add_argument("--sizes", type=int, nargs="*", default=[128, 256])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-lr-pixels-rrdb", type=int, default=128 * 128,
                   help="RRDBNet only up to this LR size (it is ~10x the others' cost)")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="the bf16 variants (auto: where the CPU computes bf16 natively)")
    p.add_argument("--out", help="append the markdown table to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and fastsr.perf.native_bf16("cpu"))
    fastsr.perf.tune_allocator()  # both sides: the same process
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    head = [f"CPU: {cpu}; native bf16: {fastsr.perf.native_bf16('cpu')}; torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()}); {args.threads} thread(s); batch 1; "
            f"{args.rounds} interleaved rounds; glibc allocator tuning on for every variant", "",
            "| model, LR size | variant | min ms | median ms | vs eager fp32 | vs eager bf16 + CL | max abs diff |",
            "|---|---|---|---|---|---|---|"]
    rows, notes = [], set()
    for label in args.models:
        name, kw = MODELS[label]
        model = _model(name, kw)
        for px in args.sizes:
            if name == "RRDBNet" and px * px > args.max_lr_pixels_rrdb:
                continue
            print(f"{label} {px} px", file=sys.stderr)
            r, n = bench(label, model, px, args.rounds if name != "RRDBNet" else max(3, args.rounds // 2),
                         args.threads, args.skip_compile, bf16)
            rows += r
            notes |= set(n)
    text = "\n".join(head + rows + [""] + sorted(notes)) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()

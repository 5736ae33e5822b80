"""Per-iteration training benchmark of the EM-distance GAN (Zhang et al. 2019) models.

One iteration is exactly what ``fastsr train`` does per generator update
(:meth:`fastsr.train.GANStep.step`, without the host read of the losses, as in ``fit``): G forward, L1 + 1e-3 WGAN generator loss (eq. 8),
G backward + Adam step, critic forward/backward on HR and SR.detach() with the WGAN loss
(eq. 9) + Adam step + weight clipping. Batch 16, 96 px HR crops, x4 (96 -> 24 px LR), as in
the paper, from the ``nonbn_wgan_x4`` recipe.

Variants:

1. SRResNet with BatchNorm, eager fp32 NCHW (the paper's "before")
2. NonBN, eager fp32 NCHW (the paper's "after")
3. NonBN with fastsr's fused layers and losses, fp32
4. 3 + channels_last
5. 4 + bf16 autocast
6. 5 + ``Adam(fused=True)`` + allocator tuning (fastsr's recommended configuration)
7. NonBN eager under ``torch.compile`` (G and critic)
8. the recipe's own settings: what ``fastsr train`` does on this machine (``bf16`` and
   ``channels_last`` are ``auto``: see the report's machine line for what they chose)
9. 2 + allocator tuning; 10. eager bf16 + channels_last + fused Adam + allocator (the best
   plain PyTorch on a bf16 machine); 11. the same in fp32 (the best plain PyTorch where bf16
   is emulated); 12. 8 with ``train.winograd: false`` (oneDNN's direct convolutions); 13. 8 in
   fp32; 14. 8 with oneDNN's bf16 weight gradient (where the bf16 Winograd kernel runs: see
   :func:`fastsr.ops.winograd_bf16_weight_grad`).

Method: every (variant, round) runs in a fresh subprocess (so allocator settings, compile
caches and memory state never leak between variants); rounds interleave the variants
(1..8, 1..8, ...); each subprocess builds the Trainer on the benchmark's device, moves the
batch there once, runs ``warmup`` untimed iterations then ``iters`` timed ones with
:func:`fastsr.perf.time_fn` (CPU: ``time.perf_counter`` around each iteration; CUDA: CUDA
events around each iteration and one synchronize after the last, plus the peak memory
allocated during the timed iterations). The report gives min, median and the 20th / 80th
percentiles of the time per iteration over all timed iterations of all rounds, and on CUDA
the largest peak memory of the rounds. GFLOP per iteration comes from
:class:`torch.utils.flop_counter.FlopCounterMode` on one eager iteration (convolutions and
matmuls, forward and backward, from their shapes).

Device: ``device=None`` (the default of :func:`run_benchmark` and ``fastsr bench``) is CUDA
when available, else the CPU -- the device ``fastsr train`` picks by default.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fastsr.errors import UserError
from fastsr.perf import Timing, time_fn

RECIPE = "nonbn_wgan_x4"

_OFF = {"model.fused": False, "train.channels_last": False, "train.bf16": False,
        "train.fused_optimizer": False, "train.tune_allocator": False, "train.compile": False, "train.cuda_graph": False}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    overrides: dict = field(default_factory=dict)
    defaults: bool = False  # start from the recipe's own settings instead of everything off
    env: dict = field(default_factory=dict)  # environment of the variant's process (a process-wide kernel choice)

    def config_overrides(self) -> list[str]:
        merged = {**({} if self.defaults else _OFF), **self.overrides}
        return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in merged.items()]


VARIANTS: tuple[Variant, ...] = (
    Variant("1", "SRResNet+BN eager fp32 NCHW",
            {"model.generator": "{name: SRResNet, num_blocks: 16, channels: 64, bn: true}"}),
    Variant("2", "NonBN eager fp32 NCHW"),
    Variant("3", "NonBN fastsr fused fp32", {"model.fused": True}),
    Variant("4", "3 + channels_last", {"model.fused": True, "train.channels_last": True}),
    Variant("5", "4 + bf16 autocast", {"model.fused": True, "train.channels_last": True, "train.bf16": True}),
    Variant("6", "5 + fused Adam + allocator (recommended)",
            {"model.fused": True, "train.channels_last": True, "train.bf16": True,
             "train.fused_optimizer": True, "train.tune_allocator": True}),
    Variant("7", "NonBN eager + torch.compile", {"train.compile": True}),
    Variant("8", "`fastsr train` defaults (auto: chosen for this machine)", defaults=True),
    # plain PyTorch set up as a good user would, so that a reader sees what the fused ops alone are worth
    Variant("9", "NonBN eager fp32 + allocator", {"train.tune_allocator": True}),
    Variant("10", "NonBN eager bf16 + channels_last + fused Adam + allocator (best plain PyTorch)",
            {"train.channels_last": True, "train.bf16": True, "train.fused_optimizer": True,
             "train.tune_allocator": True}),
    # the same in fp32: the best plain PyTorch where bf16 is emulated (CPUs without AVX512-BF16 / AMX)
    Variant("11", "NonBN eager fp32 + channels_last + fused Adam + allocator (best plain fp32 PyTorch)",
            {"train.channels_last": True, "train.fused_optimizer": True, "train.tune_allocator": True}),
    # what the Winograd convolutions alone are worth inside fastsr's defaults
    Variant("12", "8 without Winograd convolutions (train.winograd false)", {"train.winograd": False},
            defaults=True),
    # on a CPU with native bf16: the fp32 Winograd path (F(4x4, 3x3), Winograd weight gradient)
    # against the bf16 default (F(2x2, 3x3), oneDNN's bf16 weight gradient): which one auto should pick
    Variant("13", "8 in fp32 (train.bf16 false)", {"train.bf16": False}, defaults=True),
    # on a CPU with the bf16 Winograd kernel: oneDNN's bf16 weight gradient against the default,
    # bf16 operands widened to float32 and the F(4x4, 3x3) Winograd weight gradient
    Variant("14", "8 with oneDNN's bf16 weight gradient (FASTSR_WINOGRAD_BF16_WGRAD=onednn)", defaults=True,
            env={"FASTSR_WINOGRAD_BF16_WGRAD": "onednn"}),
)


def _variant(key: str) -> Variant:
    for v in VARIANTS:
        if v.key == key:
            return v
    raise UserError(f"unknown benchmark variant {key!r}; expected one of {', '.join(v.key for v in VARIANTS)}")


def resolve_device(device: str | None) -> str:
    """``None`` -> "cuda" when CUDA is available, else "cpu"; "cpu" / "cuda" as given.

    Raises:
        UserError: ``device`` not None, "cpu" or "cuda"; "cuda" when CUDA is not available.
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        from fastsr.train.distributed import check_cuda

        check_cuda()
    return device


def build_trainer(overrides: list[str], batch: int, crop: int, out_dir: str, device: str | None = None):
    """A :class:`~fastsr.train.Trainer` for the benchmark recipe with ``overrides`` on
    ``device`` ("cpu", "cuda", or None: CUDA when available)."""
    from fastsr.train import Trainer, load_config

    cfg = load_config(RECIPE, [*overrides, f"data.batch_size={batch}", f"data.crop_size={crop}",
                               f"model.discriminator.input_size={crop}", "train.pretrain_iters=0"])
    return Trainer(cfg, out_dir, data=False, progress=False, device=device)


def fixed_batch(batch: int, crop: int, scale: int = 4):
    """``batch`` HR crops of the sample photographs and their MATLAB-bicubic LR (the same
    for every variant: crop i of training photo i mod their number, with seed i)."""
    import torch

    from fastsr.data import HRImageDataset, sample_images

    photos = sample_images("train")
    ds = HRImageDataset([x for _, x in photos], scale=scale, crop_size=crop, names=[n for n, _ in photos])
    items = [ds[(i % len(ds), i)] for i in range(batch)]
    return torch.stack([it["lr"] for it in items]), torch.stack([it["hr"] for it in items])


def worker(variant: Variant, iters: int, warmup: int, batch: int, crop: int, count_flops: bool,
           device: str = "cpu", extra: tuple[str, ...] = ()) -> dict:
    """Runs in the subprocess: times ``iters`` iterations after ``warmup`` on ``device``.

    The batch is moved to the device (in the Trainer's memory format) once, before timing:
    the iteration excludes the host-to-device copy of its batch, which a data loader with
    pinned memory overlaps with the previous iteration. ``extra``: config overrides applied
    after the variant's own."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer([*variant.config_overrides(), *extra], batch, crop, tmp, device)
        lr, hr = (t.to(trainer.device).contiguous(memory_format=trainer.memory_format)
                  for t in fixed_batch(batch, crop))
        # gan_step.step is the iteration as `fastsr train` runs it: the losses stay on the device
        # (the timer's synchronisation ends each timed call), train_step would add a host read
        timing = time_fn(lambda: trainer.gan_step.step(lr, hr), trainer.device, iters=iters, warmup=warmup)
        flops = None
        if count_flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                trainer.train_step(lr, hr)
            flops = counter.get_total_flops()
    return {"variant": variant.key, "times": list(timing.times_s), "peak_mib": timing.peak_mib,
            "device": timing.device, "flops": flops, "threads": torch.get_num_threads()}


def _run_worker(variant: Variant, args) -> dict:
    cmd = [sys.executable, "-m", "fastsr.bench.iteration", "--worker", variant.key,
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--crop", str(args.crop), "--device", args.device, *(f"--set={o}" for o in args.extra)]
    if args.count_flops and variant.key not in ("7",):  # FLOPs are counted on eager code
        cmd.append("--count-flops")
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **variant.env})
    if out.returncode != 0:
        raise RuntimeError(f"benchmark variant {variant.key} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version (from the kernel module, else ``nvidia-smi``), or None."""
    try:
        m = re.search(r"Kernel Module\s+([\d.]+)", Path("/proc/driver/nvidia/version").read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        from torch.utils import collect_env

        return collect_env.get_nvidia_driver_version(collect_env.run)
    except Exception:  # no nvidia-smi, or its output changed: the report says "unknown"
        return None


def machine_info(device: str = "cpu") -> dict:
    """The host (CPU model, cores, torch threads and version, ISA) and, for ``device``
    "cuda", the GPU (name, compute capability, memory in GiB, CUDA and driver versions),
    with the ``auto`` settings ``fastsr train`` resolves on that device."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from fastsr.train.builders import resolve_bf16, resolve_channels_last, resolve_cuda_graph

    bf16 = resolve_bf16("auto", device)
    info = {"device": device, "cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            # what `fastsr train` chooses on this device with the default `auto` settings
            "train_defaults": {"bf16": bf16, "channels_last": resolve_channels_last("auto", device, bf16),
                               "cuda_graph": resolve_cuda_graph("auto", device)}}
    if device == "cuda":
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(gpu=torch.cuda.get_device_name(idx), gpu_capability=".".join(map(str, (props.major, props.minor))),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    driver=_nvidia_driver(), cudnn=torch.backends.cudnn.version())
    return info


# ----------------------------------------------------------------------------- profile
def profile_variant(key: str, batch: int = 16, crop: int = 96, iters: int = 2, row_limit: int = 25,
                    device: str = "cpu", overrides=()) -> str:
    """Where the time of one iteration of variant ``key`` goes on ``device``: a torch.profiler
    table of self time per op, sorted by CPU time on a CPU and by device time on CUDA (where
    CPU time is the launch cost), over ``iters`` iterations after one warm-up; ``overrides``
    as in :func:`run_benchmark`."""
    import torch

    cuda = device == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer([*_variant(key).config_overrides(), *overrides], batch, crop, tmp, device)
        lr, hr = (t.to(trainer.device).contiguous(memory_format=trainer.memory_format)
                  for t in fixed_batch(batch, crop))
        trainer.train_step(lr, hr)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(iters):
                trainer.train_step(lr, hr)
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=row_limit)
    return f"variant {key} ({_variant(key).label}) on {device}, batch {batch}, {crop} px, {iters} iterations\n{table}"


# ----------------------------------------------------------------------------- inference
#: LR sides of the inference rows per device (CUDA: the sizes of the GPU targets)
INFERENCE_SIZES = {"cpu": (128, 256), "cuda": (256, 512)}
#: timed calls and warm-up calls of each inference row per device
INFERENCE_REPEATS = {"cpu": (5, 1), "cuda": (20, 3)}


def inference_benchmark(sizes=None, repeats: int | None = None, device: str = "cpu") -> list[dict]:
    """NonBN generator (16 blocks, x4) on one LR image on ``device``: eager vs fused vs
    fused+cl+bf16. ``sizes`` default to ``INFERENCE_SIZES[device]``, ``repeats`` (timed
    calls) to ``INFERENCE_REPEATS[device]``.

    One call converts the LR image (already on the device) to the variant's dtype and
    layout, runs G and returns the SR image in float32. The bf16 variant casts the weights
    to bfloat16 once (autocast would re-cast every conv weight on every call). Rows: LR
    side, variant, and :meth:`fastsr.perf.Timing.summary` in seconds (CUDA: peak MiB)."""
    import torch

    from fastsr.models import create

    sizes = sizes or INFERENCE_SIZES[device]
    timed, warm = INFERENCE_REPEATS[device]
    rows = []
    torch.manual_seed(0)
    for size in sizes:
        x = torch.rand(1, 3, size, size).to(device)
        for name, fused, cl, bf16 in (("eager fp32", False, False, False), ("fused fp32", True, False, False),
                                      ("fused+channels_last+bf16", True, True, True)):
            g = create("NonBNResNet", scale=4, fused=fused).eval()
            fmt = torch.channels_last if cl else torch.contiguous_format
            dtype = torch.bfloat16 if bf16 else torch.float32
            g = g.to(device=device, dtype=dtype, memory_format=fmt)
            with torch.inference_mode():
                t = time_fn(lambda g=g, fmt=fmt, dtype=dtype: g(x.to(dtype).contiguous(memory_format=fmt)).float(), device,
                            iters=repeats or timed, warmup=warm)
            rows.append({"size": size, "variant": name, **_row_stats(t)})
            del g
    return rows


def _row_stats(t: Timing) -> dict:
    """A Timing's statistics under the short keys of the report rows (seconds, MiB)."""
    return {"n": t.n, "min": t.min_s, "median": t.median_s, "p20": t.p20_s, "p80": t.p80_s, "peak_mib": t.peak_mib}


# ----------------------------------------------------------------------------- parity
def parity_check(iters: int = 5, batch: int = 4, crop: int = 64, device: str = "cpu") -> dict:
    """Fused vs unfused after ``iters`` iterations from the same seed and batches (fp32):
    max relative difference of the logged losses and, per model (G and the critic), the
    max absolute parameter difference, the max parameter update over the run (the scale it
    compares with), and how many parameters differ by more than 1e-6.

    Fused and unfused round differently (fused epilogues; the critic's tiny late
    convolutions as one GEMM, :class:`fastsr.nn.Conv2d`), and Adam turns a rounding-level
    difference of a near-zero gradient into a step of up to the learning rate, so a few
    parameters differ by about ``lr`` per iteration; the relative difference of the largest
    parameter would mislead (WGAN clipping keeps the critic's weights within 0.01)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for fused in (False, True):
            tr = build_trainer([*_variant("2").config_overrides(), f"model.fused={str(fused).lower()}"],
                               batch, crop, os.path.join(tmp, str(fused)), device)
            start = {m: [p.detach().clone() for p in getattr(tr, m).parameters()] for m in ("G", "D")}
            lr, hr = fixed_batch(batch, crop)
            logs = [tr.train_step(lr, hr) for _ in range(iters)]
            runs[fused] = (logs, tr, start)
        (lu, tu, start), (lf, tf, _) = runs[False], runs[True]
        loss_keys = [k for k in lu[-1] if isinstance(lu[-1][k], float)]
        results["loss_max_rel_diff"] = {
            k: max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(lu, lf)) for k in loss_keys}
        results["params"] = {}
        for m in ("G", "D"):
            pu, pf = list(getattr(tu, m).parameters()), list(getattr(tf, m).parameters())
            results["params"][m] = {
                "max_abs_diff": max((a - b).abs().max().item() for a, b in zip(pu, pf)),
                "max_update": max((a - b).abs().max().item() for a, b in zip(pu, start[m])),
                "differ_1e-6": int(sum(((a - b).abs() > 1e-6).sum().item() for a, b in zip(pu, pf))),
                "count": int(sum(p.numel() for p in pu)),
            }
        results["iters"], results["batch"], results["crop"], results["device"] = iters, batch, crop, device
    return results


# ----------------------------------------------------------------------------- report
def summarize(runs: list[dict], flops: dict) -> list[dict]:
    """One row per variant from the workers' results: statistics of all its timed iterations
    (seconds), the largest peak memory of its rounds (MiB, CUDA; else None), speed-ups of the
    medians vs variants 1 and 2, GFLOP per iteration and GFLOP/s at the median."""
    rows = []
    by = {v.key: [t for r in runs if r["variant"] == v.key for t in r["times"]] for v in VARIANTS}
    stats = {k: Timing.from_times(t) for k, t in by.items() if t}
    med = {k: st.median_s for k, st in stats.items()}
    for v in VARIANTS:
        if v.key not in stats:
            continue
        st = stats[v.key]
        peaks = [r["peak_mib"] for r in runs if r["variant"] == v.key and r.get("peak_mib") is not None]
        f = flops.get(v.key) or flops.get("2")
        rows.append({
            "variant": v.key, "label": v.label, "n": st.n, "min_s": st.min_s, "median_s": st.median_s,
            "p20_s": st.p20_s, "p80_s": st.p80_s, "peak_mib": max(peaks) if peaks else None,
            "speedup_vs_1": med.get("1", float("nan")) / med[v.key],
            "speedup_vs_2": med.get("2", float("nan")) / med[v.key],
            "gflop": f / 1e9 if f else None,
            "gflops_per_s": f / 1e9 / med[v.key] if f else None,
        })
    return rows


def machine_line(m: dict) -> str:
    """The report's description of the machine: the GPU (name, capability, memory, CUDA,
    driver, cuDNN, torch) for a CUDA report, the CPU for a CPU one."""
    defaults = ", ".join(f"{k} {v}" for k, v in m.get("train_defaults", {}).items()) or "unrecorded"
    host = f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch threads"
    if m.get("device") == "cuda":
        return (f"GPU: {m['gpu']} (compute capability {m['gpu_capability']}, {m['gpu_memory_gib']} GiB), "
                f"CUDA {m['cuda']}, driver {m.get('driver') or 'unknown'}, cuDNN {m.get('cudnn') or 'unknown'}, "
                f"torch {m['torch']}; host {host}. `fastsr train` defaults chosen on this GPU: {defaults}.")
    return (f"Machine: {host}, torch {m['torch']} ({m['cpu_capability']}); "
            f"`fastsr train` defaults chosen here: {defaults}.")


def _unit(device: str) -> tuple[str, float]:
    """Time unit of the tables: seconds on a CPU (an iteration takes seconds), milliseconds on CUDA."""
    return ("ms", 1e3) if device == "cuda" else ("s", 1.0)


def _spread(lo: float, hi: float, scale: float) -> str:
    return f"{lo * scale:.3f}-{hi * scale:.3f}"


def markdown(report: dict) -> str:
    """The report as Markdown: the machine (the GPU on CUDA), the settings, the iteration
    table (min, median, p20-p80; on CUDA milliseconds and peak MiB), inference and parity."""
    m = report["machine"]
    s = report["settings"]
    device = s.get("device", m.get("device", "cpu"))
    cuda = device == "cuda"
    unit, scale = _unit(device)
    clock = ("CUDA events around each iteration, one synchronize after the last" if cuda
             else "time.perf_counter around each iteration")
    lines = [
        f"# fastsr per-iteration benchmark on {m['gpu'] if cuda else 'the CPU'} "
        f"({RECIPE}: NonBN G + WGAN critic, L1 + 1e-3 WGAN)",
        "",
        f"{machine_line(m)} Batch {s['batch']}, HR crop {s['crop']} px, x4; "
        f"{s['rounds']} interleaved rounds x {s['iters']} timed iterations (after {s['warmup']} warm-up) per variant, "
        f"each round in a fresh process; {clock}. "
        + (f"Overrides of every variant: {', '.join(f'`{o}`' for o in s['overrides'])}. " if s.get("overrides") else "")
        + "p20-p80: 20th to 80th percentile"
        + ("; peak MiB: largest `torch.cuda.max_memory_allocated` of the timed iterations." if cuda else "."),
        "",
        f"| # | variant | min {unit}/it | median {unit}/it | p20-p80 {unit}/it |" + (" peak MiB |" if cuda else "")
        + " x vs 1 | x vs 2 | GFLOP/it | GFLOP/s |",
        "|---|---|---|---|---|" + ("---|" if cuda else "") + "---|---|---|---|",
    ]
    for r in report["iteration"]:
        g = f"{r['gflop']:.0f}" if r["gflop"] else "-"
        gs = f"{r['gflops_per_s']:.0f}" if r["gflops_per_s"] else "-"
        spread = _spread(r["p20_s"], r["p80_s"], scale) if "p20_s" in r else "-"
        peak = (f" {r['peak_mib']:.0f} |" if r.get("peak_mib") is not None else " - |") if cuda else ""
        lines.append(f"| {r['variant']} | {r['label']} | {r['min_s'] * scale:.3f} | {r['median_s'] * scale:.3f} | "
                     f"{spread} |{peak} {r['speedup_vs_1']:.2f} | {r['speedup_vs_2']:.2f} | {g} | {gs} |")
    if report.get("inference"):
        lines += ["", f"## Inference (NonBN generator, x4, batch 1, {m['gpu'] if cuda else 'CPU'})", "",
                  f"| LR size | variant | min {unit} | median {unit} | p20-p80 {unit} |"
                  + (" peak MiB |" if cuda else "") + " x vs eager |",
                  "|---|---|---|---|---|" + ("---|" if cuda else "") + "---|"]
        eager = {r["size"]: r["median"] for r in report["inference"] if r["variant"] == "eager fp32"}
        for r in report["inference"]:
            spread = _spread(r["p20"], r["p80"], scale) if "p20" in r else "-"
            peak = (f" {r['peak_mib']:.0f} |" if r.get("peak_mib") is not None else " - |") if cuda else ""
            lines.append(f"| {r['size']}x{r['size']} | {r['variant']} | {r['min'] * scale:.3f} | "
                         f"{r['median'] * scale:.3f} | {spread} |{peak} {eager[r['size']] / r['median']:.2f} |")
    if report.get("parity"):
        p = report["parity"]
        losses = ", ".join(f"{k} {v:.1e}" for k, v in p["loss_max_rel_diff"].items())
        lines += ["", f"## Numerical parity (fused vs unfused, fp32, {p.get('device', 'cpu')})", "",
                  f"After {p['iters']} iterations from the same seed and batches (batch {p['batch']}, "
                  f"{p['crop']} px): max relative loss difference {losses}; parameters: "
                  + "; ".join(f"{'G' if m == 'G' else 'critic'} max |difference| {q['max_abs_diff']:.1e} (max update "
                              f"{q['max_update']:.1e}), {q['differ_1e-6']} of {q['count']:,} differ by > 1e-6"
                              for m, q in p["params"].items())
                  + " (Adam turns rounding-level differences of near-zero gradients into steps of up to the "
                  "learning rate)."]
    return "\n".join(lines) + "\n"


def bar_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["iteration"]
    s = report["settings"]
    m = report["machine"]
    device = s.get("device", m.get("device", "cpu"))
    unit, scale = _unit(device)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['variant']}. {r['label']}" for r in rows]
    med = [r["median_s"] * scale for r in rows]
    mins = [r["min_s"] * scale for r in rows]
    ys = list(range(len(rows))[::-1])
    err = None
    if all("p20_s" in r for r in rows):  # p20-p80 as an asymmetric error bar around the median
        err = [[md - r["p20_s"] * scale for md, r in zip(med, rows)],
               [r["p80_s"] * scale - md for md, r in zip(med, rows)]]
    ax.barh(ys, med, xerr=err, color="#4c72b0", ecolor="#999999", label="median (bar: p20-p80)")
    ax.scatter(mins, ys, color="black", marker="|", s=200, label="min", zorder=3)
    ax.set_yticks(ys, labels)
    ax.set_xlabel(f"{'milliseconds' if unit == 'ms' else 'seconds'} per GAN iteration (lower is better)")
    where = m["gpu"] if device == "cuda" else m["cpu"]
    ax.set_title(f"{RECIPE}: batch {s['batch']}, {s['crop']} px HR, x4 — {where}", fontsize=9)
    for y, md in zip(ys, med):
        ax.text(md, y, f" {md:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(med) * 1.12)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_benchmark(variants=None, rounds: int = 3, iters: int = 3, warmup: int = 2, batch: int = 16,
                  crop: int = 96, inference: bool = True, parity: bool = True, count_flops: bool = True,
                  out_dir="benchmarks/results", log=print, device: str | None = None,
                  overrides=(), inference_sizes=None) -> dict:
    """Runs the benchmark on ``device`` and writes ``iteration.json``, ``iteration.md`` and
    ``iteration.png`` to ``out_dir``. Returns the report dict.

    ``device``: "cpu", "cuda", or None for CUDA when available (:func:`resolve_device`).
    ``overrides``: config overrides (``KEY=VALUE``) applied to every variant after its own
    settings (e.g. a smaller generator for a smoke run). ``inference_sizes``: LR sides of the
    inference rows (default :data:`INFERENCE_SIZES` of the device).

    Raises:
        UserError: "cuda" when CUDA is not available; an unknown device or variant.
        RuntimeError: a worker subprocess failed (its stderr's end in the message).
    """
    device = resolve_device(device)
    keys = list(variants or [v.key for v in VARIANTS])
    chosen = [_variant(k) for k in keys]
    args = argparse.Namespace(iters=iters, warmup=warmup, batch=batch, crop=crop, count_flops=count_flops,
                              device=device, extra=list(overrides))
    runs, flops = [], {}
    for rnd in range(rounds):
        for v in chosen:
            args.count_flops = count_flops and rnd == 0
            r = _run_worker(v, args)
            runs.append(r)
            if r.get("flops"):
                flops[v.key] = r["flops"]
            unit, scale = _unit(device)
            log(f"round {rnd + 1}/{rounds} variant {v.key} ({v.label}) on {device}: "
                + ", ".join(f"{t * scale:.3f}" for t in r["times"]) + f" {unit}/it")
    report = {"machine": machine_info(device),
              "settings": {"rounds": rounds, "iters": iters, "warmup": warmup, "batch": batch, "crop": crop,
                           "device": device, "overrides": list(overrides)},
              "iteration": summarize(runs, flops), "raw": runs}
    if inference:
        log("inference ...")
        report["inference"] = inference_benchmark(inference_sizes, device=device)
    if parity:
        log("parity ...")
        report["parity"] = parity_check(device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "iteration.json").write_text(json.dumps(report, indent=2))
    (out / "iteration.md").write_text(markdown(report))
    written = [out / "iteration.json", out / "iteration.md"]
    try:
        import matplotlib  # noqa: F401  (not a dependency of fastsr: the chart is optional)
    except ImportError:
        log("matplotlib is not installed: no chart (pip install matplotlib)")
    else:
        bar_chart(report, out / "iteration.png")
        written.append(out / "iteration.png")
    log(markdown(report))
    log(f"wrote {', '.join(map(str, written))}")
    return report


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastsr.bench.iteration")
    p.add_argument("--worker", required=True)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--count-flops", action="store_true")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--set", dest="extra", action="append", default=[])
    a = p.parse_args(argv)
    res = worker(_variant(a.worker), a.iters, a.warmup, a.batch, a.crop, a.count_flops, a.device, tuple(a.extra))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(_main())

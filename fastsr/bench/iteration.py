"""Per-iteration training benchmark of the EM-distance GAN (Zhang et al. 2019) models.

One iteration is exactly what ``fastsr train`` does per generator update
(:meth:`fastsr.train.Trainer.train_step`): G forward, L1 + 1e-3 WGAN generator loss (eq. 8),
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

Method: every (variant, round) runs in a fresh subprocess (so allocator settings, compile
caches and memory state never leak between variants); rounds interleave the variants
(1..7, 1..7, ...); each subprocess runs ``warmup`` untimed iterations then ``iters`` timed
ones. The report gives min and median seconds per iteration over all timed iterations.
GFLOP per iteration comes from :class:`torch.utils.flop_counter.FlopCounterMode` on one
eager iteration (convolutions and matmuls, forward and backward, from their shapes).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RECIPE = "nonbn_wgan_x4"

_OFF = {"model.fused": False, "train.channels_last": False, "train.bf16": False,
        "train.fused_optimizer": False, "train.tune_allocator": False, "train.compile": False}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    overrides: dict = field(default_factory=dict)
    defaults: bool = False  # start from the recipe's own settings instead of everything off

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
)


def _variant(key: str) -> Variant:
    for v in VARIANTS:
        if v.key == key:
            return v
    raise ValueError(f"unknown variant {key!r}; expected one of {[v.key for v in VARIANTS]}")


def build_trainer(overrides: list[str], batch: int, crop: int, out_dir: str):
    """A :class:`~fastsr.train.Trainer` for the benchmark recipe with ``overrides``."""
    from fastsr.train import Trainer, load_config

    cfg = load_config(RECIPE, [*overrides, f"data.batch_size={batch}", f"data.crop_size={crop}",
                               f"model.discriminator.input_size={crop}", "train.pretrain_iters=0"])
    return Trainer(cfg, out_dir, data=False, progress=False)


def fixed_batch(batch: int, crop: int, scale: int = 4):
    """``batch`` HR crops of the sample photographs and their MATLAB-bicubic LR (the same
    for every variant: crop i of training photo i mod their number, with seed i)."""
    import torch

    from fastsr.data import HRImageDataset, sample_images

    photos = sample_images("train")
    ds = HRImageDataset([x for _, x in photos], scale=scale, crop_size=crop, names=[n for n, _ in photos])
    items = [ds[(i % len(ds), i)] for i in range(batch)]
    return torch.stack([it["lr"] for it in items]), torch.stack([it["hr"] for it in items])


def worker(variant: Variant, iters: int, warmup: int, batch: int, crop: int, count_flops: bool) -> dict:
    """Runs in the subprocess: times ``iters`` iterations after ``warmup``."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(variant.config_overrides(), batch, crop, tmp)
        lr, hr = fixed_batch(batch, crop)
        for _ in range(warmup):
            trainer.train_step(lr, hr)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            trainer.train_step(lr, hr)
            times.append(time.perf_counter() - t0)
        flops = None
        if count_flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                trainer.train_step(lr, hr)
            flops = counter.get_total_flops()
    return {"variant": variant.key, "times": times, "flops": flops, "threads": torch.get_num_threads()}


def _run_worker(variant: Variant, args) -> dict:
    cmd = [sys.executable, "-m", "fastsr.bench.iteration", "--worker", variant.key,
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--batch", str(args.batch),
           "--crop", str(args.crop)]
    if args.count_flops and variant.key not in ("7",):  # FLOPs are counted on eager code
        cmd.append("--count-flops")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark variant {variant.key} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine_info() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from fastsr.train.builders import resolve_bf16, resolve_channels_last

    bf16 = resolve_bf16("auto", "cpu")
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            # what `fastsr train` chooses on this machine with the default `auto` settings
            "train_defaults": {"bf16": bf16, "channels_last": resolve_channels_last("auto", "cpu", bf16)}}


# ----------------------------------------------------------------------------- profile
def profile_variant(key: str, batch: int = 16, crop: int = 96, iters: int = 2, row_limit: int = 25) -> str:
    """Where the time of one iteration of variant ``key`` goes: a torch.profiler table of
    self CPU time per op (averaged over ``iters`` iterations after one warm-up)."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(_variant(key).config_overrides(), batch, crop, tmp)
        lr, hr = fixed_batch(batch, crop)
        trainer.train_step(lr, hr)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                trainer.train_step(lr, hr)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)
    return f"variant {key} ({_variant(key).label}), batch {batch}, {crop} px, {iters} iterations\n{table}"


# ----------------------------------------------------------------------------- inference
def inference_benchmark(sizes=(128, 256), repeats: int = 5) -> list[dict]:
    """NonBN generator (16 blocks, x4) on one LR image: eager vs fused vs fused+cl+bf16.

    The bf16 variant casts the weights to bfloat16 once (autocast would re-cast every conv
    weight on every call) and returns the SR image in float32."""
    import torch

    from fastsr.models import create

    rows = []
    torch.manual_seed(0)
    for size in sizes:
        x = torch.rand(1, 3, size, size)
        for name, fused, cl, bf16 in (("eager fp32", False, False, False), ("fused fp32", True, False, False),
                                      ("fused+channels_last+bf16", True, True, True)):
            g = create("NonBNResNet", scale=4, fused=fused).eval()
            fmt = torch.channels_last if cl else torch.contiguous_format
            dtype = torch.bfloat16 if bf16 else torch.float32
            g = g.to(dtype=dtype, memory_format=fmt)
            times = []
            with torch.inference_mode():
                g(x.to(dtype).contiguous(memory_format=fmt))
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    g(x.to(dtype).contiguous(memory_format=fmt)).float()
                    times.append(time.perf_counter() - t0)
            rows.append({"size": size, "variant": name, "min": min(times), "median": statistics.median(times)})
    return rows


# ----------------------------------------------------------------------------- parity
def parity_check(iters: int = 5, batch: int = 4, crop: int = 64) -> dict:
    """Fused vs unfused after ``iters`` iterations from the same seed and batches (fp32):
    max relative difference of the logged losses and of every parameter of G and the critic."""
    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for fused in (False, True):
            tr = build_trainer([*_variant("2").config_overrides(), f"model.fused={str(fused).lower()}"],
                               batch, crop, os.path.join(tmp, str(fused)))
            lr, hr = fixed_batch(batch, crop)
            logs = [tr.train_step(lr, hr) for _ in range(iters)]
            runs[fused] = (logs, tr)
        (lu, tu), (lf, tf) = runs[False], runs[True]
        loss_keys = [k for k in lu[-1] if isinstance(lu[-1][k], float)]
        results["loss_max_rel_diff"] = {
            k: max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for a, b in zip(lu, lf)) for k in loss_keys}
        worst = 0.0
        for mu, mf in ((tu.G, tf.G), (tu.D, tf.D)):
            for (n, pu), (_, pf) in zip(mu.named_parameters(), mf.named_parameters()):
                d = ((pu - pf).abs().max() / pu.abs().max().clamp_min(1e-12)).item()
                worst = max(worst, d)
        results["param_max_rel_diff"] = worst
        results["iters"], results["batch"], results["crop"] = iters, batch, crop
    return results


# ----------------------------------------------------------------------------- report
def summarize(runs: list[dict], flops: dict) -> list[dict]:
    rows = []
    by = {v.key: [t for r in runs if r["variant"] == v.key for t in r["times"]] for v in VARIANTS}
    med = {k: statistics.median(t) for k, t in by.items() if t}
    for v in VARIANTS:
        t = by.get(v.key)
        if not t:
            continue
        f = flops.get(v.key) or flops.get("2")
        rows.append({
            "variant": v.key, "label": v.label, "n": len(t), "min_s": min(t), "median_s": med[v.key],
            "speedup_vs_1": med.get("1", float("nan")) / med[v.key],
            "speedup_vs_2": med.get("2", float("nan")) / med[v.key],
            "gflop": f / 1e9 if f else None,
            "gflops_per_s": f / 1e9 / med[v.key] if f else None,
        })
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        f"# fastsr per-iteration benchmark ({RECIPE}: NonBN G + WGAN critic, L1 + 1e-3 WGAN)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']} "
        f"({m['cpu_capability']}); `fastsr train` defaults chosen here: "
        f"{', '.join(f'{k} {v}' for k, v in m.get('train_defaults', {}).items()) or 'unrecorded'}. "
        f"Batch {s['batch']}, HR crop {s['crop']} px, x4; "
        f"{s['rounds']} interleaved rounds x {s['iters']} timed iterations (after {s['warmup']} warm-up) per variant, "
        "each round in a fresh process.",
        "",
        "| # | variant | min s/it | median s/it | x vs 1 | x vs 2 | GFLOP/it | GFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["iteration"]:
        g = f"{r['gflop']:.0f}" if r["gflop"] else "-"
        gs = f"{r['gflops_per_s']:.0f}" if r["gflops_per_s"] else "-"
        lines.append(f"| {r['variant']} | {r['label']} | {r['min_s']:.3f} | {r['median_s']:.3f} | "
                     f"{r['speedup_vs_1']:.2f} | {r['speedup_vs_2']:.2f} | {g} | {gs} |")
    if report.get("inference"):
        lines += ["", "## Inference (NonBN generator, x4, batch 1)", "",
                  "| LR size | variant | min s | median s | x vs eager |", "|---|---|---|---|---|"]
        eager = {r["size"]: r["median"] for r in report["inference"] if r["variant"] == "eager fp32"}
        for r in report["inference"]:
            lines.append(f"| {r['size']}x{r['size']} | {r['variant']} | {r['min']:.3f} | {r['median']:.3f} | "
                         f"{eager[r['size']] / r['median']:.2f} |")
    if report.get("parity"):
        p = report["parity"]
        losses = ", ".join(f"{k} {v:.1e}" for k, v in p["loss_max_rel_diff"].items())
        lines += ["", "## Numerical parity (fused vs unfused, fp32)", "",
                  f"After {p['iters']} iterations from the same seed and batches (batch {p['batch']}, "
                  f"{p['crop']} px): max relative loss difference {losses}; max relative parameter "
                  f"difference {p['param_max_rel_diff']:.1e}."]
    return "\n".join(lines) + "\n"


def bar_chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["iteration"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['variant']}. {r['label']}" for r in rows]
    med = [r["median_s"] for r in rows]
    mins = [r["min_s"] for r in rows]
    ys = range(len(rows))[::-1]
    ax.barh(list(ys), med, color="#4c72b0", label="median")
    ax.scatter(mins, list(ys), color="black", marker="|", s=200, label="min", zorder=3)
    ax.set_yticks(list(ys), labels)
    ax.set_xlabel("seconds per GAN iteration (lower is better)")
    s = report["settings"]
    ax.set_title(f"{RECIPE}: batch {s['batch']}, {s['crop']} px HR, x4 — {report['machine']['cpu']}", fontsize=9)
    for y, m in zip(ys, med):
        ax.text(m, y, f" {m:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(med) * 1.12)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_benchmark(variants=None, rounds: int = 3, iters: int = 3, warmup: int = 2, batch: int = 16,
                  crop: int = 96, inference: bool = True, parity: bool = True, count_flops: bool = True,
                  out_dir="benchmarks/results", log=print) -> dict:
    """Runs the benchmark and writes ``iteration.json``, ``iteration.md`` and ``iteration.png``
    to ``out_dir``. Returns the report dict."""
    keys = list(variants or [v.key for v in VARIANTS])
    chosen = [_variant(k) for k in keys]
    args = argparse.Namespace(iters=iters, warmup=warmup, batch=batch, crop=crop, count_flops=count_flops)
    runs, flops = [], {}
    for rnd in range(rounds):
        for v in chosen:
            args.count_flops = count_flops and rnd == 0
            r = _run_worker(v, args)
            runs.append(r)
            if r.get("flops"):
                flops[v.key] = r["flops"]
            log(f"round {rnd + 1}/{rounds} variant {v.key} ({v.label}): "
                + ", ".join(f"{t:.3f}" for t in r["times"]) + " s/it")
    report = {"machine": machine_info(),
              "settings": {"rounds": rounds, "iters": iters, "warmup": warmup, "batch": batch, "crop": crop},
              "iteration": summarize(runs, flops), "raw": runs}
    if inference:
        log("inference ...")
        report["inference"] = inference_benchmark()
    if parity:
        log("parity ...")
        report["parity"] = parity_check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "iteration.json").write_text(json.dumps(report, indent=2))
    (out / "iteration.md").write_text(markdown(report))
    bar_chart(report, out / "iteration.png")
    log(markdown(report))
    log(f"wrote {out / 'iteration.json'}, {out / 'iteration.md'}, {out / 'iteration.png'}")
    return report


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastsr.bench.iteration")
    p.add_argument("--worker", required=True)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--count-flops", action="store_true")
    a = p.parse_args(argv)
    res = worker(_variant(a.worker), a.iters, a.warmup, a.batch, a.crop, a.count_flops)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(_main())

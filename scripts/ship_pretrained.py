"""Turn a finished `fastsr train nonbn_x4` run into the weights shipped in fastsr/weights.

    python -m fastsr train nonbn_x4 --sample-data --iters 8000 --out runs/nonbn_x4 ...
    python scripts/ship_pretrained.py runs/nonbn_x4 --command "<the train command>"

Evaluates the EMA generator of the final checkpoint on the held-back sample photographs
(full images, MATLAB bicubic LR, Y channel, crop_border = 4) against bicubic, prints the
table, and writes fastsr/weights/nonbn_x4.safetensors (float16, the EMA weights as
``params``) with the recipe, command, iterations, timing and validation table as metadata.
"""
import argparse
import json
from pathlib import Path

import torch

from fastsr.evaluate import evaluate, load_generator, sample_pairs
from fastsr.models import export_generator

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run", type=Path)
    p.add_argument("--command", required=True, help="the exact fastsr train command of the run")
    p.add_argument("--name", default="nonbn_x4")
    a = p.parse_args()
    ckpt = a.run / "checkpoints" / "latest.safetensors"
    log = [json.loads(line) for line in (a.run / "log.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in log if "time" in r]
    last = train[-1]
    model, scale = load_generator(ckpt, "params_ema")
    result = evaluate(model, sample_pairs(scale), scale)
    rows, names = result.rows(), result.names
    print(result.table(title=f"x{scale}, Y channel, crop_border={scale}, held-back sample photographs"))
    meta = {
        "recipe": "nonbn_x4", "command": a.command, "iterations": last["iter"],
        "wall_time_s": round(last["time"], 1), "sec_per_iter": round(last["time"] / last["iter"], 4),
        "data": "scikit-image sample photographs, train split (fastsr.data.sample_images('train')); "
                "validation: held-back split " + ", ".join(names),
        "weights": "EMA of G (decay 0.999), stored as float16",
        "validation": rows,
        "validation_conventions": "full images, LR by MATLAB bicubic x4, Y channel (BT.601), crop_border=4, float64",
    }
    out = export_generator(ckpt, ROOT / "fastsr" / "weights" / f"{a.name}.safetensors", "params_ema",
                           torch.float16, meta)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

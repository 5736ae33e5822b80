"""Helpers shared by the CLI and training tests: ``python -m fastsr`` in a subprocess or in-process,
and the tiny recipe they train."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A tiny NonBN + WGAN recipe: 1 residual block, 8 channels, 32 px crops, batch 2.
TINY = ["nonbn_wgan_x4", "--sample-data", "--no-progress", "--num-workers", "0", "--batch-size", "2",
        "--set", "model.generator.num_blocks=1", "--set", "model.generator.channels=8",
        "--set", "model.discriminator={name: SRGANDiscriminator, input_size: 32, num_feat: 4}",
        "--set", "data.crop_size=32", "--set", "data.val_max_images=1", "--set", "data.val_max_side=64",
        "--set", "log.every=1", "--set", "log.val_every=2", "--set", "log.save_every=2"]


# The same tiny recipe as config overrides, for load_config / Trainer and in-process CLI runs.
TINY_OVERRIDES = ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}",
                  "model.discriminator={name: SRGANDiscriminator, input_size: 32, num_feat: 4}", "data.crop_size=32",
                  "data.batch_size=2", "data.num_workers=0", "data.val_max_side=64", "log.every=1",
                  "log.val_every=2", "log.save_every=2"]


def cli_in_process(capsys, *args):
    """``fastsr ARGS`` in this process: (exit code, stdout, stderr)."""
    from fastsr import cli

    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    """Asserts a CLI user error: exit code 2 and one ``fastsr: error:`` line holding every
    needle; returns that line."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fastsr: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def run(*args, check=True, timeout=240):
    p = subprocess.run([sys.executable, "-m", "fastsr", *map(str, args)], capture_output=True, text=True,
                       env=env(), cwd=REPO, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"fastsr {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def losses(out):
    return {r["iter"]: (r["loss_g"], r["loss_d"], r["l_pix"]) for r in read_log(out) if "loss_g" in r}

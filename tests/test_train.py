"""Training through the CLI on the sample photographs: checkpoints, exact resume, DDP, Ctrl-C."""
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from _cli_util import REPO, TINY, env, losses, read_log, run
from fastsr.train import CheckpointError, ConfigError, list_configs, load_config
from fastsr.train.checkpoint import load_generator_weights, load_state, read_metadata


def test_recipes_load_and_override():
    assert {"nonbn_wgan_x4", "srresnet_x4", "srgan_x4", "esrgan_x4", "sharpness", "attentive_began_x4"} <= set(
        list_configs())
    cfg = load_config("nonbn_wgan_x4", ["train.lr_g=2e-4", "loss.gan.clip=0.05"])
    assert cfg["train"]["lr_g"] == 2e-4 and cfg["loss"]["gan"] == {"type": "wgan", "weight": 1e-3, "clip": 0.05}
    assert cfg["model"]["init"] == "normal" and cfg["data"]["batch_size"] == 16
    assert load_config("sharpness")["train"]["d_steps"] == 2
    with pytest.raises(ConfigError, match="train.lrg"):
        load_config("nonbn_wgan_x4", ["train.lrg=1"])
    with pytest.raises(ConfigError, match="nope"):
        load_config("nope")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run("train", *TINY, "--iters", "4", "--out", out)
    return out


def test_train_writes_checkpoints_and_log(full_run):
    ck = full_run / "checkpoints"
    meta = read_metadata(ck / "latest.safetensors")
    assert meta["iteration"] == 4 and meta["scale"] == 4 and meta["generator"]["name"] == "NonBNResNet"
    sd = load_generator_weights(ck / "latest.safetensors")
    assert any(k.endswith("weight") for k in sd)
    st = load_state(ck / "latest.state.pt")
    assert st["iteration"] == 4 and st["discriminator"] is not None and "rng" in st
    assert (ck / "g_0000002.safetensors").is_file()
    # WGAN clipping keeps every critic weight in [-0.01, 0.01]
    assert max(v.abs().max().item() for k, v in st["discriminator"].items()
               if k.endswith("weight") or k.endswith("bias")) <= 0.01 + 1e-7
    log = read_log(full_run)
    assert [r["iter"] for r in log if "loss_g" in r] == [1, 2, 3, 4]
    val = [r for r in log if "val_psnr" in r]
    assert [r["iter"] for r in val] == [2, 4] and val[0]["val_psnr_bicubic"] > 20
    assert not list(ck.glob("*.tmp"))


def test_resume_continues_exactly(full_run, tmp_path):
    out = tmp_path / "resumed"
    run("train", *TINY, "--iters", "2", "--out", out)
    run("train", *TINY, "--iters", "4", "--out", out, "--resume")
    full, resumed = losses(full_run), losses(out)
    assert resumed.keys() == {1, 2, 3, 4}
    for it in (3, 4):
        assert resumed[it] == full[it], (it, resumed[it], full[it])
    a = load_generator_weights(full_run / "checkpoints" / "latest.safetensors")
    b = load_generator_weights(out / "checkpoints" / "latest.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    p = run("train", *TINY, "--iters", "2", "--out", tmp_path / "none", "--resume", check=False)
    assert p.returncode == 2 and "nothing to resume" in p.stderr and "Traceback" not in p.stderr


def test_ddp_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "fastsr", "train", *TINY, "--iters", "2", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=REPO, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    log = read_log(out)
    assert [r["iter"] for r in log if "loss_g" in r] == [1, 2]  # rank 0 alone logs
    assert read_metadata(out / "checkpoints" / "latest.safetensors")["iteration"] == 2
    assert p.stdout.count("finished at iteration 2") == 1


def test_sigint_saves_and_exits(tmp_path):
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "fastsr", "train", *TINY, "--iters", "10000", "--out", str(out),
           "--set", "log.save_every=100000", "--set", "log.val_every=100000"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "log.jsonl").is_file() and len((out / "log.jsonl").read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    it = read_metadata(out / "checkpoints" / "latest.safetensors")["iteration"]
    assert it >= 2 and load_state(out / "checkpoints" / "latest.state.pt")["iteration"] == it

"""Training through the CLI on the sample photographs: checkpoints, exact resume, DDP, Ctrl-C."""
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from _cli_util import REPO, TINY, env, losses, read_log, run
from fastsr.train import ConfigError, list_configs, load_config
from fastsr.models.checkpoint import load_generator_weights, read_metadata
from fastsr.train.checkpoint import load_state


def test_recipes_load_and_override():
    assert {"nonbn_wgan_x4", "srresnet_x4", "srgan_x4", "esrgan_x4", "sharpness", "attentive_began_x4"} <= set(
        list_configs())
    cfg = load_config("nonbn_wgan_x4", ["train.lr_g=2e-4", "loss.gan.clip_value=0.05"])
    assert cfg["train"]["lr_g"] == 2e-4 and cfg["loss"]["gan"] == {"type": "wgan", "weight": 1e-3, "clip_value": 0.05}
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


def test_resume_continues_with_the_runs_own_config(tmp_path):
    import yaml

    out = tmp_path / "run"
    run("train", *TINY, "--iters", "2", "--set", "train.lr_g=3e-5", "--out", out)
    # the recipe's lr_g is not the run's: a resume that names only the recipe keeps the run's
    p = run("train", *TINY, "--iters", "3", "--out", out, "--resume", "--print-config")
    assert yaml.safe_load(p.stdout)["train"]["lr_g"] == 3e-5
    p = run("train", *TINY, "--iters", "3", "--out", out, "--resume")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["lr_g"] == 3e-5 and cfg["train"]["iters"] == 3
    assert "train.iters 2 -> 3" in p.stderr
    changes = [r for r in read_log(out) if "config_changes" in r]
    assert changes == [{"iter": 2, "config_changes": {"train.iters": [2, 3]}}]
    assert max(losses(out)) == 3
    # another recipe cannot resume this run
    other = ["srgan_x4", *TINY[1:]]
    p = run("train", *other, "--iters", "4", "--out", out, "--resume", check=False)
    assert p.returncode == 2 and "trained with config 'nonbn_wgan_x4', not 'srgan_x4'" in p.stderr
    assert "Traceback" not in p.stderr


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


# ---------------------------------------------------------------------------- in-process Trainer
# Every recipe with a tiny generator / discriminator, on 3 small photographs (2 train, 1 held back).
from fastsr.train import Trainer, train  # noqa: E402
from fastsr.train.trainer import native_bf16, resolve_bf16  # noqa: E402
from fastsr.train.builders import resolve_channels_last  # noqa: E402

_TINY_MODELS = {
    "nonbn_wgan_x4": ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}",
                      "model.discriminator={name: WGANCritic, input_size: 64, num_feat: 1}", "data.crop_size=64"],
    "nonbn_corpus_x4": ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}", "data.crop_size=32"],
    "srresnet_x4": ["model.generator={name: SRResNet, num_blocks: 1, channels: 8, bn: true}", "data.crop_size=32"],
    "srgan_x4": ["model.generator={name: SRResNet, num_blocks: 1, channels: 8, bn: true}",
                 "model.discriminator={name: SRGANDiscriminator, input_size: 32, num_feat: 4}", "data.crop_size=32"],
    "esrgan_x4": ["model.generator={name: RRDBNet, num_block: 1, num_feat: 8, num_grow_ch: 4}",
                  "model.discriminator={name: SRGANDiscriminator, input_size: 32, num_feat: 4}", "data.crop_size=32"],
    "sharpness": ["model.generator={name: SharpnessGenerator, num_blocks: 1, channels: 8}",
                  "model.discriminator={name: SharpnessDiscriminator, input_size: 24, num_feat: 4}"],
    "attentive_began_x4": ["model.generator={name: AttentiveGenerator, channels: 8, num_steps: 1, num_rdb: 1, "
                           "rdb_layers: 1, growth: 4, num_mapping: 1}",
                           "model.discriminator={name: BEGANDiscriminator, input_size: 32, num_feat: 4, hidden: 8}",
                           "data.crop_size=32"],
}
_SMALL_RUN = ["train.iters=2", "data.batch_size=2", "data.num_workers=0", "data.val_max_side=64",
              "log.every=1", "log.val_every=2", "log.save_every=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def vgg19_weights(tmp_path_factory):
    """A randomly initialised VGG19 (torchvision layout) for the perceptual / texture losses."""
    from safetensors.torch import save_file

    from fastsr.losses import VGG19Features

    path = tmp_path_factory.mktemp("vgg") / "vgg19.safetensors"
    torch.manual_seed(0)
    save_file(VGG19Features().state_dict(), str(path))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTSR_VGG19_WEIGHTS", str(path))
        yield path


def _cfg(recipe, *extra):
    return load_config(recipe, [*_TINY_MODELS[recipe], *_SMALL_RUN, *extra])


def _log(out):
    return read_log(out)


@pytest.mark.parametrize("recipe", sorted(_TINY_MODELS))
def test_every_recipe_trains(recipe, photos, tmp_path):
    summary = train(_cfg(recipe), tmp_path, data_dir=photos, progress=False)
    assert summary["status"] == "finished" and summary["iteration"] == 2
    assert summary["val_psnr_bicubic"] > 15 and math.isfinite(summary["val_psnr"])
    rec = [r for r in _log(tmp_path) if "loss_g" in r]
    assert [r["iter"] for r in rec] == [1, 2]
    cfg = load_config(recipe)
    if cfg["loss"]["gan"]:
        assert all("loss_d" in r and "l_gan" in r for r in rec)
    for key in ("perceptual", "texture"):
        assert all((f"l_{key}" in r) == bool(cfg["loss"][key]) for r in rec)
    assert all(math.isfinite(v) for r in rec for v in r.values() if isinstance(v, float))
    assert read_metadata(tmp_path / "checkpoints" / "latest.safetensors")["iteration"] == 2


def test_recipes_use_the_loss_constructors(vgg19_weights):
    """The recipes' loss sections build the real fastsr.losses classes with the papers' settings."""
    from fastsr import losses as L
    from fastsr import nn as fnn
    from fastsr.train import builders

    srgan = builders.build_feature_losses(load_config("srgan_x4"))
    (name, vgg54, w), = srgan
    assert name == "perceptual" and w == 1.0 and vgg54.layer_weights == {"relu5_4": 1.0}
    assert vgg54.criterion == "l2" and vgg54.feature_scale == pytest.approx(1 / 12.75)
    assert builders.build_gan_loss(load_config("srgan_x4"))[1] == 1e-3
    esr = load_config("esrgan_x4")
    (_, pl, w), = builders.build_feature_losses(esr)
    assert pl.layer_weights == {"conv5_4": 1.0} and pl.criterion == "l1" and w == 1.0
    gan, gw = builders.build_gan_loss(esr)
    assert isinstance(gan, L.RelativisticGANLoss) and gw == 5e-3
    pix, pw = builders.build_pixel_loss(esr)
    assert isinstance(pix, fnn.L1Loss) and pw == 1e-2
    sh = load_config("sharpness")
    feats = {n: m for n, m, _ in builders.build_feature_losses(sh)}
    assert set(feats["perceptual"].layer_weights) == {"pool2", "pool5"} and isinstance(feats["texture"], L.TextureLoss)
    assert isinstance(builders.build_gan_loss(sh)[0], L.VanillaGANLoss) and sh["train"]["d_steps"] == 2
    assert isinstance(builders.build_gan_loss(load_config("attentive_began_x4"))[0], L.BEGANLoss)
    wgan, _ = builders.build_gan_loss(load_config("nonbn_wgan_x4"))
    assert isinstance(wgan, L.WGANLoss) and wgan.clip_value == 0.01
    assert isinstance(builders.build_pixel_loss(load_config("srresnet_x4"))[0], torch.nn.MSELoss)
    ssim_loss, w = builders.build_pixel_loss(load_config("nonbn_x4", ["loss.pixel={type: ssim, alpha: 0.84, weight: 2}"]))
    assert isinstance(ssim_loss, L.SSIML1Loss) and ssim_loss.alpha == 0.84 and w == 2.0 and ssim_loss.ssim.fused
    unfused, _ = builders.build_pixel_loss(load_config("nonbn_x4", ["loss.pixel={type: ssim}", "model.fused=false"]))
    assert not unfused.ssim.fused
    # a wrong constructor argument is a ConfigError naming the section
    with pytest.raises(ConfigError, match="loss.perceptual"):
        builders.build_feature_losses(load_config("esrgan_x4", ["loss.perceptual.layers={conv5_4: 1}"]))
    with pytest.raises(ConfigError, match="loss.gan"):
        builders.build_gan_loss(load_config("nonbn_wgan_x4", ["loss.gan.clip=0.1"]))
    with pytest.raises(ConfigError, match="loss.gan.type"):
        builders.build_gan_loss(load_config("nonbn_wgan_x4", ["loss.gan.type=wgan2"]))


def _bench_trainer(recipe, *extra, tmp):
    cfg = _cfg(recipe, *extra)
    tr = Trainer(cfg, tmp, data=False, progress=False, device="cpu")
    s, c = cfg["scale"], cfg["data"]["crop_size"]
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, c, c, generator=g)
    return tr, torch.rand(2, 3, c // s, c // s, generator=g), hr


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, args, out: calls.append((args[0], out)))
    return calls


def test_one_generator_forward_per_iteration(tmp_path):
    """sharpness: d_steps 2 -> G runs once; its BatchNorm discriminator runs once in the G
    step and once per D step, each time on the joint batch cat(hr, sr)."""
    tr, lr, hr = _bench_trainer("sharpness", tmp=tmp_path)
    assert tr.d_joint_batch  # the sharpness discriminator has BatchNorm
    g_calls, d_calls = _count_calls(tr.G), _count_calls(tr.D)
    logs = tr.train_step(lr, hr)
    assert len(g_calls) == 1 and len(d_calls) == 1 + 2
    assert tr.iteration == 1 and {"loss_g", "loss_d", "l_pix", "l_gan", "l_perceptual", "l_texture"} <= set(logs)
    assert all(st["step"].item() == 2 for st in tr.opt_d.state.values())  # two D updates
    assert all(st["step"].item() == 1 for st in tr.opt_g.state.values())
    # the D steps see HR and G's SR batch (detached) of the G step, not a second G forward
    n = hr.shape[0]
    for call in d_calls:
        assert torch.equal(call[0][:n].float(), hr.float())
    assert torch.equal(d_calls[1][0][n:].float(), g_calls[0][1].detach().float())


def test_ragan_generator_step_sees_real_output(tmp_path):
    tr, lr, hr = _bench_trainer("esrgan_x4", tmp=tmp_path)
    g_calls, d_calls = _count_calls(tr.G), _count_calls(tr.D)
    tr.train_step(lr, hr)
    # G step: D(hr) and D(sr) (relativistic); D step: D(hr), D(sr.detach()) -- each pair as
    # one joint batch, since ESRGAN's VGG-style discriminator has BatchNorm
    assert len(g_calls) == 1
    if tr.d_joint_batch:
        assert len(d_calls) == 2 and all(c[0].shape[0] == 2 * hr.shape[0] for c in d_calls)
    else:
        assert len(d_calls) == 4
    tr.d_joint_batch = False
    d_calls.clear()
    tr.train_step(lr, hr)
    assert len(d_calls) == 4


def test_data_false_trainer_for_benchmarks(tmp_path):
    from fastsr.perf import allocator_tuned

    tr, lr, hr = _bench_trainer("nonbn_wgan_x4", tmp=tmp_path)
    assert tr.train_set is None and tr.val_pairs == [] and not list(tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="train_step"):
        tr.fit()
    logs = tr.train_step(lr, hr)
    assert set(logs) >= {"loss_g", "loss_d", "l_pix", "l_gan", "wasserstein"} and tr.iteration == 1
    # recommended defaults: fused Adam, allocator tuned, channels_last with bf16 on a CPU
    assert tr.opt_g.defaults["fused"] and tr.opt_d.defaults["fused"]
    assert allocator_tuned() or not sys.platform.startswith("linux")
    assert tr.channels_last is tr.bf16
    tr, _, _ = _bench_trainer("nonbn_wgan_x4", "train.channels_last=true", tmp=tmp_path)
    assert tr.memory_format == torch.channels_last
    conv = next(m for m in tr.G.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    tr2, _, _ = _bench_trainer("nonbn_wgan_x4", "train.fused_optimizer=false", "train.channels_last=false",
                               tmp=tmp_path)
    assert not tr2.opt_g.defaults["fused"] and tr2.memory_format == torch.contiguous_format


def test_channels_last_follows_the_hardware():
    assert resolve_channels_last(True, "cpu", False) is True and resolve_channels_last(False, "cuda", True) is False
    assert resolve_channels_last("auto", "cpu", True) and not resolve_channels_last("auto", "cpu", False)
    assert resolve_channels_last("auto", "cuda", False)
    with pytest.raises(ConfigError, match="train.channels_last"):
        resolve_channels_last("yes", "cpu", False)
    with pytest.raises(ConfigError, match="train.channels_last"):
        load_config("nonbn_x4", ["train.channels_last=maybe"])


def test_bf16_option(tmp_path):
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cpu") is False
    assert resolve_bf16("auto", "cpu") == native_bf16("cpu")
    with pytest.raises(ConfigError, match="train.bf16"):
        resolve_bf16("yes", "cpu")
    for flag, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        tr, lr, hr = _bench_trainer("srgan_x4", f"train.bf16={str(flag).lower()}", tmp=tmp_path / str(flag))
        g_calls = _count_calls(tr.G)
        logs = tr.train_step(lr, hr)
        assert tr.bf16 is flag and g_calls[0][1].dtype == dtype
        assert all(math.isfinite(v) for v in logs.values())
        assert all(p.dtype == torch.float32 for p in tr.G.parameters())  # master weights stay fp32


def test_compile_option(tmp_path):
    # the trainer's wiring (G and D compiled, same losses); inductor itself is covered by the
    # models' and ops' compile tests -- aot_eager traces the same graphs without the codegen time
    tr, lr, hr = _bench_trainer("srgan_x4", "train.compile={backend: aot_eager}", "train.bf16=false",
                                tmp=tmp_path / "c")
    assert hasattr(tr.G_train, "_orig_mod") and hasattr(tr.D_train, "_orig_mod")
    ref, _, _ = _bench_trainer("srgan_x4", "train.bf16=false", tmp=tmp_path / "e")
    a, b = tr.train_step(lr, hr), ref.train_step(lr, hr)
    for k in ("loss_g", "l_perceptual", "l_gan", "loss_d"):
        assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5), k


def test_compile_accepts_a_mode(monkeypatch):
    from fastsr.train import builders
    from fastsr.train.config import COMPILE_MODES, compile_kwargs

    assert compile_kwargs(None) is None and compile_kwargs(False) is None and compile_kwargs({}) is None
    assert compile_kwargs(True) == {}
    assert compile_kwargs({"backend": "aot_eager"}) == {"backend": "aot_eager"}
    for mode in COMPILE_MODES:
        cfg = load_config("nonbn_x4", [f"train.compile={mode}"])
        assert cfg["train"]["compile"] == mode and compile_kwargs(mode) == {"mode": mode}
    for bad in ("fast", "reduce_overhead", "0", 1, [1]):
        with pytest.raises(ConfigError, match=r"train\.compile must be .*reduce-overhead"):
            load_config("nonbn_x4", [f"train.compile={bad}"])
    # the mode string reaches torch.compile as its `mode`, for G and both Ds
    seen = []
    monkeypatch.setattr(builders.torch, "compile", lambda m, **kw: seen.append(kw) or m)
    G, D = torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(1, 1, 1)
    assert builders.compile_models(G, D, D, {"compile": "max-autotune"}) == (G, D, D)
    assert seen == [{"mode": "max-autotune"}] * 3
    assert builders.compile_models(G, D, D, {"compile": False}) == (G, D, D) and len(seen) == 3
    monkeypatch.undo()
    # an argument torch.compile refuses is a ConfigError naming the key
    with pytest.raises(ConfigError, match="train.compile"):
        builders.compile_models(G, D, D, {"compile": {"mode": "warp-speed"}})


def test_compile_reduce_overhead_trains(tmp_path):
    """reduce-overhead (CUDA graphs on CUDA; on a CPU Inductor as in the default mode) runs a
    train step of a tiny generator and gives the eager losses."""
    tr, lr, hr = _bench_trainer("srresnet_x4", "train.compile=reduce-overhead", "train.bf16=false",
                                tmp=tmp_path / "c")
    assert hasattr(tr.G_train, "_orig_mod")
    ref, _, _ = _bench_trainer("srresnet_x4", "train.bf16=false", tmp=tmp_path / "e")
    a, b = tr.train_step(lr, hr), ref.train_step(lr, hr)
    for k in ("loss_g", "l_pix"):
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k


def test_ema_of_generator(tmp_path):
    tr, lr, hr = _bench_trainer("srresnet_x4", "train.ema_decay=0.5", tmp=tmp_path)
    g0 = {k: v.detach().clone() for k, v in tr.G.named_parameters()}
    tr.train_step(lr, hr)
    g1, e1 = dict(tr.G.named_parameters()), dict(tr.G_ema.named_parameters())
    moved = [k for k in g0 if not torch.equal(g0[k], g1[k])]
    assert moved
    for k in moved:
        torch.testing.assert_close(e1[k], (g0[k] + g1[k]) / 2)
    tr.save(1)
    sd = load_generator_weights(tmp_path / "checkpoints" / "latest.safetensors", "params_ema")
    assert torch.equal(sd[moved[0]], e1[moved[0]].detach().cpu())


def test_wgan_gp(tmp_path):
    tr, lr, hr = _bench_trainer("nonbn_wgan_x4", "loss.gan={type: wgan_gp, weight: 1.0e-3, gp_weight: 10.0}",
                                tmp=tmp_path)
    logs = tr.train_step(lr, hr)
    assert logs["gradient_penalty"] > 0 and math.isfinite(logs["loss_d"])
    assert max(p.abs().max().item() for p in tr.D.parameters()) > 0.01  # no weight clipping


def test_began_k_t_saved_and_resumed(photos, tmp_path):
    extra = ["train.iters=3", "log.save_every=2", "log.val_every=100"]
    full = train(_cfg("attentive_began_x4", *extra), tmp_path / "full", data_dir=photos, progress=False)
    assert full["iteration"] == 3
    train(_cfg("attentive_began_x4", *extra, "train.iters=2"), tmp_path / "res", data_dir=photos, progress=False)
    st = load_state(tmp_path / "res" / "checkpoints" / "latest.state.pt")
    k2 = st["gan"]["k"].item()
    assert k2 > 0  # k_0 = 0; gamma L(x) > L(G(z)) at the start raises it
    assert [r for r in _log(tmp_path / "res") if r.get("iter") == 2 and "k_t" in r]
    with pytest.warns(UserWarning, match="train.iters 2 -> 3"):  # the library says what changed at resume
        train(_cfg("attentive_began_x4", *extra), tmp_path / "res", data_dir=photos, progress=False, resume=True)
    full_log = {r["iter"]: r for r in _log(tmp_path / "full") if "loss_g" in r}
    res_log = {r["iter"]: r for r in _log(tmp_path / "res") if "loss_g" in r}
    for key in ("loss_g", "loss_d", "k_t", "convergence"):
        assert res_log[3][key] == full_log[3][key], key
    k_full = load_state(tmp_path / "full" / "checkpoints" / "latest.state.pt")["gan"]["k"]
    k_res = load_state(tmp_path / "res" / "checkpoints" / "latest.state.pt")["gan"]["k"]
    assert torch.equal(k_full, k_res) and k_full.item() != k2


def test_pretraining_then_adversarial_and_init_from(photos, tmp_path):
    # SRResNet (MSE) -> weights -> SRGAN --init-from those weights
    train(_cfg("srresnet_x4", "train.iters=1"), tmp_path / "pre", data_dir=photos, progress=False)
    w = tmp_path / "pre" / "checkpoints" / "latest.safetensors"
    tr = Trainer(_cfg("srgan_x4", "train.pretrain_iters=1"), tmp_path / "gan", data_dir=photos, progress=False,
                 init_from=w)
    src = load_generator_weights(w)
    assert all(torch.equal(v.cpu(), src[k]) for k, v in tr.G.state_dict().items())
    d0 = {k: v.clone() for k, v in tr.D.state_dict().items()}
    d_calls = _count_calls(tr.D)
    c = 32
    lr, hr = torch.rand(2, 3, c // 4, c // 4), torch.rand(2, 3, c, c)
    logs = tr.train_step(lr, hr)  # iteration 0 < pretrain_iters: MSE only, D untouched
    assert set(logs) == {"l_pix", "loss_g"} and not d_calls
    assert all(torch.equal(v, tr.D.state_dict()[k]) for k, v in d0.items())
    logs = tr.train_step(lr, hr)  # adversarial phase
    # D calls: G step + D step, each on the joint batch (SRGAN's D has BatchNorm); 3 if separate
    assert {"loss_d", "l_gan", "l_perceptual"} <= set(logs) and "l_pix" not in logs
    assert len(d_calls) == (2 if tr.d_joint_batch else 3)


def test_batchnorm_critic_sees_real_and_fake_in_one_batch():
    """With BatchNorm on 1x1 maps (the EM paper's critic), separate real/fake batches make
    E[D(HR)] - E[D(SR)] vanish; the trainer joins them (train.d_joint_batch: auto)."""
    import tempfile

    from fastsr.bench.iteration import fixed_batch
    from fastsr.train import Trainer, load_config

    lr, hr = fixed_batch(4, 64)
    signal = {}
    for joint in ("false", "auto"):
        cfg = load_config("nonbn_wgan_x4", ["data.batch_size=4", "data.crop_size=64", "model.discriminator.input_size=64",
                                            "model.generator.num_blocks=2", "model.generator.channels=16",
                                            "train.bf16=false", f"train.d_joint_batch={joint}"])
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer(cfg, tmp, data=False, progress=False)
            assert tr.d_joint_batch is (joint == "auto")
            sizes = []
            hook = tr.D.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
            logs = [tr.train_step(lr, hr) for _ in range(12)]
            hook.remove()
            assert set(sizes) == ({8} if joint == "auto" else {4})
            signal[joint] = sum(abs(l["wasserstein"]) for l in logs[-4:])
    assert signal["auto"] > 20 * signal["false"], signal


def _tiny_psnr_trainer(tmp_path):
    """``(trainer(*overrides), lr, hr)``: a factory of one-block nonbn_x4 trainers on the CPU
    and a fixed 32 px batch."""
    tiny = ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}", "data.crop_size=32", *_SMALL_RUN]

    def trainer(*extra):
        return Trainer(load_config("nonbn_x4", [*tiny, *extra]), tmp_path, data=False, progress=False, device="cpu")

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    return trainer, torch.rand(2, 3, 8, 8, generator=g), hr


def test_lr_consistency_term(tmp_path):
    trainer, lr, hr = _tiny_psnr_trainer(tmp_path)
    tr = trainer("loss.lr_consistency={weight: 2.0}")
    fn, w = tr.lr_consistency
    assert w == 2.0 and fn.scale == 4
    logs = tr.train_step(lr, hr)
    assert logs["loss_g"] == pytest.approx(logs["l_pix"] + 2.0 * logs["l_lr"], rel=1e-5) and logs["l_lr"] > 0
    off = trainer()
    assert off.lr_consistency is None and "l_lr" not in off.train_step(lr, hr)
    for extra, match in ((["loss.lr_consistency={weight: -1}"], "loss.lr_consistency.weight"),
                         (["loss.lr_consistency={weigth: 1}"], "loss.lr_consistency"),
                         (["data.degradation=bicubic_blur", "loss.lr_consistency={weight: 1}"], "data.degradation")):
        with pytest.raises(ConfigError, match=match):
            trainer(*extra)


def test_checkerboard_term(tmp_path):
    trainer, lr, hr = _tiny_psnr_trainer(tmp_path)
    tr = trainer("loss.checkerboard={weight: 0.5, block: 16}")
    fn, w = tr.checkerboard
    assert w == 0.5 and fn.scale == 4 and fn.block == 16
    logs = tr.train_step(lr, hr)
    assert logs["loss_g"] == pytest.approx(logs["l_pix"] + 0.5 * logs["l_checker"], rel=1e-5) and logs["l_checker"] > 0
    off = trainer()
    assert off.checkerboard is None and "l_checker" not in off.train_step(lr, hr)
    for extra, match in ((["loss.checkerboard={weight: -1}"], "loss.checkerboard.weight"),
                         (["loss.checkerboard={weight: 1, size: 3}"], "loss.checkerboard"),
                         (["loss.checkerboard={block: 6}"], "block must be a multiple"),
                         (["loss.checkerboard={block: 64}"], "larger than data.crop_size")):
        with pytest.raises(ConfigError, match=match):
            trainer(*extra)


@pytest.mark.parametrize("fused", [True, False])
def test_model_fused_reaches_the_discriminator(fused):
    from fastsr.train.builders import build_discriminator

    cfg = load_config("nonbn_wgan_x4", [f"model.fused={str(fused).lower()}"])
    d = build_discriminator(cfg)
    assert d.fused is fused and all(m.fused is fused for m in d.convs)
    cfg = load_config("nonbn_wgan_x4", ["model.discriminator={name: WGANCritic, input_size: 96, fused: false}"])
    assert build_discriminator(cfg).fused is False  # the discriminator's own setting wins


def test_random_shift_moves_every_tensor_by_one_offset():
    from fastsr.train.step import random_shift

    x = torch.arange(2 * 3 * 7 * 9, dtype=torch.float32).reshape(2, 3, 7, 9).requires_grad_(True)
    y = -x.detach()
    seen = set()
    for seed in range(40):
        a, b = random_shift((x, y), 4, generator=torch.Generator().manual_seed(seed))
        assert a.shape == x.shape and torch.equal(b, -a)
        dy, dx = int(a[0, 0, 0, 0].item()) // 9, int(a[0, 0, 0, 0].item()) % 9
        assert 0 <= dy < 4 and 0 <= dx < 4
        seen.add((dy, dx))
        torch.testing.assert_close(a[..., :7 - dy, :9 - dx], x[..., dy:, dx:])
        if dy:  # the rows moved in from the bottom are mirrored: row 7 - 1 + k reads row 7 - 1 - k
            torch.testing.assert_close(a[..., 7 - dy, :9 - dx], x[..., 5, dx:])
    assert len(seen) > 8  # the offsets vary
    a.sum().backward()  # differentiable: each input pixel counted as often as it is read
    assert x.grad.sum().item() == a.numel()
    with pytest.raises(ValueError, match="max_shift must be in"):
        random_shift((x,), 7)
    with pytest.raises(ValueError, match="share H and W"):
        random_shift((x, x[..., 1:]), 2)


def test_d_shift_shows_the_critic_shifted_pairs(tmp_path):
    """train.d_shift: every D call (G step and D step) sees real and fake moved by the same
    offset; 0 leaves them as they are; a shift not below the crop is refused."""
    tr, lr, hr = _bench_trainer("nonbn_wgan_x4", "train.d_shift=4", "train.d_joint_batch=true", tmp=tmp_path)
    seen = []
    tr.D.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().float()))
    torch.manual_seed(1)
    for _ in range(3):
        tr.train_step(lr, hr)
    n, h, w = hr.shape[0], *hr.shape[-2:]
    offsets = []
    for batch in seen:
        real, fake = batch[:n], batch[n:]
        offsets.append([(dy, dx) for dy in range(4) for dx in range(4)
                        if torch.equal(real[..., :h - dy, :w - dx], hr[..., dy:, dx:])])
        assert len(offsets[-1]) == 1 and fake.shape == real.shape, offsets  # one offset, for both
    assert len(seen) == 6  # per iteration: the G step and one D step
    assert any(o != [(0, 0)] for o in offsets), offsets
    with pytest.raises(Exception, match="train.d_shift must be below data.crop_size"):
        _cfg("nonbn_wgan_x4", "train.d_shift=96")

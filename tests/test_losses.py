"""fastsr.losses: the SSIM + L1 mix, perceptual/texture (random VGG19 through a file), GAN
losses; the deprecated single-term pixel losses that moved to fastsr.nn."""
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode

import fastsr.nn as fnn
from fastsr import losses
from fastsr.losses import (
    BEGANLoss,
    PerceptualLoss,
    SSIML1Loss,
    TextureLoss,
    VGG19Features,
    build_gan_loss,
    gradient_penalty,
    gram_patches,
    load_vgg19_state_dict,
)
from fastsr.ops import ssim as ssim_op

KINDS = ["vanilla", "lsgan", "wgan", "wgan-gp", "hinge", "ragan"]


# ====================================================================== SSIM + L1 mix
def test_ssim_l1_loss_values():
    sr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    s = ssim_op(sr, hr, data_range=1.0, impl="reference").mean()
    l1 = (sr - hr).abs().mean()
    torch.testing.assert_close(SSIML1Loss()(sr, hr), 1 - s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(SSIML1Loss(alpha=0.84)(sr, hr), 0.84 * (1 - s) + 0.16 * l1, rtol=1e-5, atol=1e-6)
    assert SSIML1Loss()(hr, hr).item() == pytest.approx(0.0, abs=1e-6)
    assert SSIML1Loss(alpha=0.0)(sr, hr).item() == pytest.approx(l1.item(), rel=1e-6)


def test_ssim_l1_loss_errors():
    with pytest.raises(ValueError, match="shape"):
        SSIML1Loss(alpha=0.5)(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="alpha"):
            SSIML1Loss(alpha=bad)
    with pytest.raises(ValueError, match="data_range"):
        SSIML1Loss(data_range=0.0)


class _FastsrOps(TorchDispatchMode):
    """Records the fastsr custom ops that run (by name) under this mode."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name.startswith("fastsr::"):
            self.names.add(name.split("::")[1].split(".")[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("make", [lambda fused: SSIML1Loss(alpha=0.5, fused=fused),
                                  lambda fused: losses_ssim_deprecated(alpha=0.5, fused=fused)])
def test_ssim_l1_loss_unfused_runs_no_fused_kernel(make):
    """fused=False means the references for both terms: no fastsr op runs, the L1 included."""
    sr, hr = torch.rand(2, 3, 16, 16, requires_grad=True), torch.rand(2, 3, 16, 16)
    with _FastsrOps() as fused_run:
        make(True)(sr, hr).backward()
    assert {"ssim", "l1_loss"} <= fused_run.names  # the recorder sees the fused ops
    with _FastsrOps() as plain_run:
        plain = make(False)(sr, hr)
        plain.backward()
    assert plain_run.names == set()
    torch.testing.assert_close(plain, make(True)(sr, hr), rtol=1e-5, atol=1e-6)


def test_ssim_l1_loss_fused_flag_reaches_both_terms():
    loss = SSIML1Loss(alpha=0.5)
    loss.fused = False
    assert not loss.ssim.fused and not loss.l1.fused and not loss.fused
    loss.fused = True
    assert loss.ssim.fused and loss.l1.fused


def losses_ssim_deprecated(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return losses.SSIMLoss(**kw)


# ====================================================================== deprecated pixel losses
@pytest.mark.parametrize("name,instead", [("L1Loss", "fastsr.nn.L1Loss"), ("CharbonnierLoss", "eps="),
                                          ("MSELoss", "torch.nn.MSELoss"), ("SSIMLoss", "SSIML1Loss")])
def test_moved_pixel_losses_warn(name, instead):
    with pytest.warns(DeprecationWarning, match=instead):
        getattr(losses, name)
    with pytest.warns(DeprecationWarning, match=name):
        exec(f"from fastsr.losses import {name}", {})
    with pytest.raises(AttributeError, match="NoSuchLoss"):
        losses.NoSuchLoss


def test_moved_pixel_losses_keep_their_old_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        L1Loss, MSELoss, CharbonnierLoss, SSIMLoss = (losses.L1Loss, losses.MSELoss, losses.CharbonnierLoss,
                                                      losses.SSIMLoss)
    sr = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    hr = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    d = sr - hr
    assert L1Loss(2.0)(sr, hr).item() == pytest.approx(2 * d.abs().mean().item())
    assert isinstance(L1Loss(), fnn.L1Loss) and isinstance(CharbonnierLoss(), fnn.L1Loss)
    assert MSELoss(loss_weight=2.0)(sr, hr).item() == pytest.approx(2 * d.square().mean().item())
    ch = CharbonnierLoss(eps=1e-3, reduction="sum", loss_weight=3.0)(sr, hr).item()
    assert ch == pytest.approx(3 * sum(math.sqrt(v * v + 1e-6) for v in d.flatten().tolist()))
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert SSIMLoss(alpha=0.84, loss_weight=2.0)(a, b).item() == pytest.approx(
        2 * SSIML1Loss(alpha=0.84)(a, b).item(), rel=1e-6)
    for cls in (L1Loss, MSELoss, CharbonnierLoss, SSIMLoss):
        with pytest.raises(ValueError, match="shape"):
            cls()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))
        with pytest.raises(TypeError, match="loss_weight"):
            cls(loss_weight="1")
    with pytest.raises(ValueError, match="reduction"):
        MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="eps"):
        CharbonnierLoss(eps=0)


# ====================================================================== VGG19 / perceptual
@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    """A randomly initialised VGG19 (He init, so deep features keep their scale) saved as
    safetensors (features-only keys) and as a torchvision-style full-model .pth."""
    torch.manual_seed(0)
    vgg = VGG19Features()
    for m in vgg.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.normal_(m.bias, std=0.1)
    d = tmp_path_factory.mktemp("vgg")
    st = d / "vgg19.safetensors"
    save_file(vgg.state_dict(), str(st))
    pth = d / "vgg19-full.pth"
    full = {f"features.{k}": v for k, v in vgg.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's full file has a classifier
    torch.save(full, str(pth))
    return vgg.eval(), st, pth


@pytest.fixture
def no_default_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTSR_VGG19_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_vgg19_layout_matches_torchvision_names():
    sd = VGG19Features().state_dict()
    conv_idx = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]  # torchvision vgg19().features
    assert list(sd) == [f"{i}.{p}" for i in conv_idx for p in ("weight", "bias")]
    assert sd["34.weight"].shape == (512, 512, 3, 3) and sd["0.weight"].shape == (64, 3, 3, 3)
    assert losses.LAYER_NAMES[34] == "conv5_4" and losses.LAYER_NAMES[35] == "relu5_4"
    assert losses.LAYER_NAMES[9] == "pool2" and losses.LAYER_NAMES[36] == "pool5"


def test_weights_round_trip_equal_features(vgg_files, no_default_weights, monkeypatch):
    vgg, st, pth = vgg_files
    x = torch.rand(1, 3, 32, 32)
    layers = ["relu2_2", "conv5_4", "relu5_4", "pool5"]
    with torch.no_grad():
        want = vgg.extract(x, layers)
        a = PerceptualLoss(weights=st).vgg.extract(x, layers)
        monkeypatch.setenv("FASTSR_VGG19_WEIGHTS", str(pth))  # env variable, torchvision .pth
        b = PerceptualLoss().vgg.extract(x, layers)
    for name in layers:
        assert torch.equal(a[name], want[name]) and torch.equal(b[name], want[name])
    assert want["pool5"].shape == (1, 512, 1, 1) and want["relu2_2"].shape == (1, 128, 16, 16)
    # conv5_4 is before the activation (ESRGAN): it has negative values; relu5_4 = relu(conv5_4)
    assert (want["conv5_4"] < 0).any()
    assert torch.equal(want["relu5_4"], F.relu(want["conv5_4"]))


def test_missing_weights_error(no_default_weights, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="FASTSR_VGG19_WEIGHTS") as e:
        PerceptualLoss()
    assert "never downloads" in str(e.value) and "weights=" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PerceptualLoss(weights=tmp_path / "nope.pth")
    monkeypatch.setenv("FASTSR_VGG19_WEIGHTS", str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="does not name a file"):
        TextureLoss()


def test_wrong_weights_file(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3)}, str(bad))
    with pytest.raises(ValueError, match="missing keys"):
        load_vgg19_state_dict(bad)
    sd = VGG19Features().state_dict()
    sd["0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(sd, str(bad))
    with pytest.raises(ValueError, match="0.weight has shape"):
        load_vgg19_state_dict(bad)


def test_perceptual_loss_frozen_and_gradients(vgg_files):
    vgg, st, _ = vgg_files
    loss_fn = PerceptualLoss({"relu1_2": 1.0, "pool2": 0.5}, criterion="l2", weights=st)
    loss_fn.train()
    assert not loss_fn.vgg.training
    assert all(not p.requires_grad for p in loss_fn.parameters())
    sr = torch.rand(1, 3, 16, 16, requires_grad=True)
    hr = torch.rand(1, 3, 16, 16)
    loss = loss_fn(sr, hr)
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())
    # the value is the weighted sum over layers of the MSE of ImageNet-normalised features
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fs = vgg.extract((sr - mean) / std, ["relu1_2", "pool2"])
        fh = vgg.extract((hr - mean) / std, ["relu1_2", "pool2"])
    want = F.mse_loss(fs["relu1_2"], fh["relu1_2"]) + 0.5 * F.mse_loss(fs["pool2"], fh["pool2"])
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=0)
    # SRGAN rescaling: features * 1/12.75 -> an l2 loss 12.75^2 times smaller
    srgan = PerceptualLoss({"relu1_2": 1.0, "pool2": 0.5}, criterion="l2", feature_scale=losses.SRGAN_FEATURE_SCALE,
                           weights=st)
    torch.testing.assert_close(srgan(sr, hr).detach() * 12.75**2, want, rtol=1e-5, atol=0)
    # inputs in [-1, 1] are mapped to [0, 1] first
    m11 = PerceptualLoss({"relu1_2": 1.0, "pool2": 0.5}, criterion="l2", weights=st, input_range=(-1, 1))
    torch.testing.assert_close(m11(sr * 2 - 1, hr * 2 - 1).detach(), want, rtol=1e-5, atol=0)


def test_perceptual_errors(vgg_files):
    _, st, _ = vgg_files
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        PerceptualLoss({"conv6_1": 1.0}, weights=st)
    with pytest.raises(ValueError, match="criterion"):
        PerceptualLoss(criterion="l3", weights=st)
    loss_fn = PerceptualLoss("relu1_2", weights=st)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 8))
    with pytest.raises(ValueError, match="RGB"):
        loss_fn(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(TypeError, match="floating"):
        loss_fn(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


# ====================================================================== texture
def test_gram_patches_against_loop():
    f = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    g = gram_patches(f, 4)  # 2 x 2 whole tiles; the 9th row is dropped
    assert g.shape == (2, 4, 3, 3)
    k = 0
    for i in range(2):
        for j in range(2):
            tile = f[1, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].reshape(3, 16)
            torch.testing.assert_close(g[1, k], tile @ tile.T / (3 * 16))
            k += 1


def test_texture_loss(vgg_files):
    vgg, st, _ = vgg_files
    tex = TextureLoss({"relu1_1": 1.0, "relu2_1": 2.0}, patch_size=8, weights=st)
    sr = torch.rand(1, 3, 16, 24, requires_grad=True)
    hr = torch.rand(1, 3, 16, 24)
    loss = tex(sr, hr)
    loss.backward()
    assert sr.grad.abs().sum() > 0
    assert tex(hr, hr).item() == 0.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fs = vgg.extract((sr - mean) / std, ["relu1_1", "relu2_1"])
        fh = vgg.extract((hr - mean) / std, ["relu1_1", "relu2_1"])
    want = 0.0
    for name, w, p in (("relu1_1", 1.0, 8), ("relu2_1", 2.0, 4)):  # relu2_1 has stride 2
        a, b = fs[name][0], fh[name][0]
        C, H, W = a.shape
        per_tile = []
        for i in range(H // p):
            for j in range(W // p):
                ta = a[:, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(C, -1)
                tb = b[:, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(C, -1)
                per_tile.append(((ta @ ta.T - tb @ tb.T) / (C * p * p)).square().sum())
        want += w * torch.stack(per_tile).mean()
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="multiple of the stride"):
        TextureLoss({"relu3_1": 1.0}, patch_size=6, weights=st)
    with pytest.raises(ValueError, match="smaller than one patch"):
        tex(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))


# ====================================================================== GAN losses
def _toy(real=0.3, fake=0.6, n=4):  # inside (0, 1): the LSGAN targets
    r = torch.full((n, 1), real, requires_grad=True)
    f = torch.full((n, 1), fake, requires_grad=True)
    return r, f


@pytest.mark.parametrize("kind", KINDS)
def test_gan_sign_and_gradient_direction(kind):
    gan = build_gan_loss(kind)
    critic = nn.Linear(1, 1)
    imgs = dict(real=torch.rand(4, 1), fake=torch.rand(4, 1), critic=critic)
    # discriminator: a confident, correct D has a lower loss than a wrong one
    good = gan.discriminator_loss(torch.full((4, 1), 3.0), torch.full((4, 1), -3.0), **imgs)
    bad = gan.discriminator_loss(torch.full((4, 1), -3.0), torch.full((4, 1), 3.0), **imgs)
    assert good.dim() == 0 and good < bad
    # gradient: raise the real score, lower the fake score
    r, f = _toy()
    gan.discriminator_loss(r, f, **imgs).backward()
    assert (r.grad < 0).all() and (f.grad > 0).all()
    # generator: raise the fake score
    r, f = _toy()
    gan.generator_loss(f, r).backward()
    assert (f.grad < 0).all()
    if kind == "ragan":  # and lower the real one relative to it
        assert (r.grad > 0).all()
    # the generator loss falls as the fake logits rise
    assert gan.generator_loss(torch.full((4, 1), 2.0), torch.zeros(4, 1)) < gan.generator_loss(
        torch.full((4, 1), -2.0), torch.zeros(4, 1)
    )


def test_gan_known_values():
    z = torch.zeros(5)
    assert build_gan_loss("vanilla").discriminator_loss(z, z).item() == pytest.approx(2 * math.log(2))
    assert build_gan_loss("vanilla").generator_loss(z).item() == pytest.approx(math.log(2))
    assert build_gan_loss("lsgan").discriminator_loss(z + 1, z).item() == 0.0
    assert build_gan_loss("lsgan").generator_loss(z).item() == pytest.approx(0.5)
    assert build_gan_loss("hinge").discriminator_loss(z + 2, z - 2).item() == 0.0
    assert build_gan_loss("hinge").discriminator_loss(z, z).item() == pytest.approx(2.0)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    w = build_gan_loss("wgan")
    assert w.discriminator_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)  # E[D(G)] - E[D(HR)], eq. 9
    assert w.last_stats["wasserstein"].item() == pytest.approx(2.5)
    assert w.generator_loss(fake).item() == pytest.approx(0.5)  # -E[D(G)], eq. 8
    ra = build_gan_loss("ragan")
    want = -F.logsigmoid(real - fake.mean()).mean() - F.logsigmoid(-(fake - real.mean())).mean()
    assert ra.discriminator_loss(real, fake).item() == pytest.approx(want.item())


def test_gan_errors():
    with pytest.raises(ValueError, match="unknown kind"):
        build_gan_loss("wgan_div")
    assert isinstance(build_gan_loss("WGAN_GP"), losses.WGANGPLoss)
    ra = build_gan_loss("ragan")
    with pytest.raises(ValueError, match="same shape"):
        ra.discriminator_loss(torch.zeros(4), torch.zeros(3))
    with pytest.raises(ValueError, match="real_out"):
        ra.generator_loss(torch.zeros(4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        build_gan_loss("vanilla").discriminator_loss([0.0], torch.zeros(1))
    with pytest.raises(ValueError, match="critic="):
        build_gan_loss("wgan-gp").discriminator_loss(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(nn.Identity(), torch.zeros(2, 3), torch.zeros(2, 4))


def test_wgan_weight_clipping():
    critic = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    with torch.no_grad():
        for p in critic.parameters():
            p.uniform_(-1, 1)
    build_gan_loss("wgan", clip_value=0.05).post_discriminator_step(critic)
    assert all(p.abs().max() <= 0.05 for p in critic.parameters())
    assert any(p.abs().max() == 0.05 for p in critic.parameters())
    before = [p.clone() for p in critic.parameters()]
    build_gan_loss("hinge").post_discriminator_step(critic)  # a no-op for the other kinds
    assert all(torch.equal(a, b) for a, b in zip(before, critic.parameters()))


def test_wgan_gp_penalty_linear_critic():
    torch.manual_seed(0)
    real, fake = torch.rand(6, 3, 4, 4, dtype=torch.float64), torch.rand(6, 3, 4, 4, dtype=torch.float64)
    w = torch.randn(3 * 4 * 4, dtype=torch.float64)

    def linear(scale):
        lin = nn.Linear(48, 1, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(scale * w / w.norm())
        return nn.Sequential(nn.Flatten(), lin)

    assert gradient_penalty(linear(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-20)  # 1-Lipschitz
    assert gradient_penalty(linear(2.0), real, fake).item() == pytest.approx(1.0, abs=1e-12)  # (2 - 1)^2
    # the penalty trains the critic: it has a gradient w.r.t. the critic's weights
    critic = linear(3.0)
    gan = build_gan_loss("wgan-gp")
    loss = gan.discriminator_loss(critic(real), critic(fake), real=real, fake=fake, critic=critic)
    loss.backward()
    assert gan.last_stats["gradient_penalty"].item() == pytest.approx(4.0, abs=1e-12)
    wd = w / w.norm()
    # d/dW of [E C(fake) - E C(real) + 10 (|W| - 1)^2] with |W| = 3: 10 * 2 * 2 * W/|W| + (mean fake - mean real)
    expected = (fake - real).flatten(1).mean(0) + 40.0 * wd
    torch.testing.assert_close(critic[1].weight.grad[0], expected, rtol=1e-10, atol=1e-12)


def test_began_k_update_clamp_and_state_dict():
    gan = BEGANLoss(gamma=0.5, lambda_k=0.1, k_init=0.2)
    real, fake = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    real_out = real + 0.4  # L(x) = 0.4
    fake_out = torch.full_like(fake, 0.1, requires_grad=True)  # L(G(z)) = 0.1
    loss = gan.discriminator_loss(real_out, fake_out, real=real, fake=fake)
    assert loss.item() == pytest.approx(0.4 - 0.2 * 0.1)  # uses k_t = 0.2
    k1 = 0.2 + 0.1 * (0.5 * 0.4 - 0.1)
    assert gan.k.item() == pytest.approx(k1)  # k_{t+1}
    assert gan.last_stats["convergence"].item() == pytest.approx(0.4 + abs(0.5 * 0.4 - 0.1))
    assert gan.last_stats["k"].item() == pytest.approx(0.2)
    loss.backward()  # D is pushed to reconstruct fakes worse: gradient of -k L(G) w.r.t. D(G) is -k * sign
    assert (fake_out.grad < 0).all()
    # generator: L(G(z)), lowered by reconstructing better
    fo = torch.full_like(fake, 0.1, requires_grad=True)
    assert gan.generator_loss(fo, fake=fake).item() == pytest.approx(0.1)
    # clamping to [0, 1]
    gan.update_k(torch.tensor(100.0), torch.tensor(0.0))
    assert gan.k.item() == 1.0
    gan.update_k(torch.tensor(0.0), torch.tensor(100.0))
    assert gan.k.item() == 0.0
    # eval mode does not move k; state_dict round trip continues it
    gan.update_k(torch.tensor(0.5), torch.tensor(0.0))  # k = 0.025
    gan.eval()
    gan.discriminator_loss(real_out, fake_out.detach(), real=real, fake=fake)
    assert gan.k.item() == pytest.approx(0.025)
    sd = gan.state_dict()
    assert set(sd) == {"k"}
    resumed = BEGANLoss(gamma=0.5, lambda_k=0.1)
    resumed.load_state_dict(sd)
    assert resumed.k.item() == pytest.approx(0.025)
    resumed.discriminator_loss(real_out, fake_out.detach(), real=real, fake=fake)
    assert resumed.k.item() == pytest.approx(0.025 + 0.1 * (0.5 * 0.4 - 0.1))
    with pytest.raises(ValueError, match="image's shape"):
        gan.generator_loss(torch.zeros(2, 3, 4, 4), fake=torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="real=/fake="):
        gan.discriminator_loss(real_out, fake_out)
    with pytest.raises(ValueError, match="gamma"):
        BEGANLoss(gamma=0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kw", [{}, {"eps": 1e-3}])
def test_pixel_losses_fused_equals_unfused(kw, reduction):
    sr = torch.rand(2, 3, 9, 11, requires_grad=True)
    hr = torch.rand(2, 3, 9, 11)
    fused = fnn.L1Loss(reduction=reduction, fused=True, **kw)
    plain = fnn.L1Loss(reduction=reduction, fused=False, **kw)
    a, b = fused(sr, hr), plain(sr, hr)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    ga, = torch.autograd.grad(a.sum(), sr)
    gb, = torch.autograd.grad(b.sum(), sr)
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- LR consistency
def test_lr_consistency_is_mse_of_the_bicubic_downsampled_sr():
    from fastsr.data import degrade, imresize

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 32, 40, generator=g)
    lr = degrade(hr, 4)
    loss = losses.LRConsistencyLoss(4)
    assert loss(hr, lr).item() < 1e-12  # HR is consistent with its own LR
    sr = torch.rand(2, 3, 32, 40, generator=g)
    want = F.mse_loss(imresize(sr, 0.25), lr)
    assert loss(sr, lr).item() == pytest.approx(want.item(), rel=1e-5)
    assert loss(sr.contiguous(memory_format=torch.channels_last), lr).item() == pytest.approx(want.item(), rel=1e-5)
    # a uniform offset of d survives the (mean-preserving) bicubic downsampling: loss d^2
    assert loss(hr + 0.01, lr).item() == pytest.approx(1e-4, rel=1e-3)
    x = sr[:1, :1, :8, :12].double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: loss(t, lr[:1, :1, :2, :3].double()), (x,))


def test_lr_consistency_errors():
    with pytest.raises(ValueError, match="scale"):
        losses.LRConsistencyLoss(1)
    loss = losses.LRConsistencyLoss(2)
    with pytest.raises(ValueError, match="times 2"):
        loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 3, 4))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        loss(torch.rand(3, 8, 8), torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        loss(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.rand(1, 3, 4, 4))


# ---------------------------------------------------------------- checkerboard
def test_checkerboard_loss_is_the_energy_of_a_repeated_pattern():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 64, 96, generator=g, dtype=torch.float64)
    loss = losses.CheckerboardLoss(4)
    assert loss.block == 32 and loss(hr, hr).item() == 0.0
    q = torch.randn(3, 4, 4, generator=g, dtype=torch.float64) / 255  # a pattern repeated in every cell
    want = (255 * q - (255 * q).mean((-2, -1), keepdim=True)).pow(2).mean()
    assert loss(hr + q.repeat(1, 16, 24), hr).item() == pytest.approx(want.item(), rel=1e-9)
    # an error without a pattern (white noise of variance v) keeps about v * scale^2 / block^2
    noise = torch.randn(2, 3, 64, 96, generator=g, dtype=torch.float64) / 255
    assert 0.3 * 16 / 1024 < loss(hr + noise, hr).item() < 3 * 16 / 1024
    # ... and a smooth ramp almost nothing (the Hann window)
    ramp = torch.linspace(0, 20, 96, dtype=torch.float64).expand(2, 3, 64, 96) / 255
    assert loss(hr + ramp, hr).item() < 1e-3
    assert loss(hr.float(), hr.float() + 0.1).dtype == torch.float32
    # max_gradient: only the flat blocks of hr count (here the left one)
    flat = torch.cat([torch.full((1, 3, 32, 32), 0.5, dtype=torch.float64), hr[:1, :, :32, :32]], dim=-1)
    grid = q.repeat(1, 8, 16)[None]
    masked = losses.CheckerboardLoss(4, max_gradient=1.0)
    assert masked(flat + grid, flat).item() == pytest.approx(want.item(), rel=1e-9)
    both = flat + grid
    both[..., 32:] = flat[..., 32:] + 5 * grid[..., 32:]  # a stronger grid on the busy block: not counted
    assert masked(both, flat).item() == pytest.approx(want.item(), rel=1e-9)
    assert masked(hr + q.repeat(1, 16, 24), hr).item() == 0.0  # no flat block in random hr
    small = losses.CheckerboardLoss(2, block=4)
    xs = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: small(t, hr[:1, :1, :8, :8]), (xs,))


def test_checkerboard_loss_errors():
    with pytest.raises(ValueError, match="scale"):
        losses.CheckerboardLoss(1)
    with pytest.raises(ValueError, match="block must be a multiple"):
        losses.CheckerboardLoss(4, block=6)
    with pytest.raises(ValueError, match="max_gradient must be"):
        losses.CheckerboardLoss(4, max_gradient=-1)
    loss = losses.CheckerboardLoss(2)
    with pytest.raises(ValueError, match="one shape"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 30))
    with pytest.raises(ValueError, match="smaller than one block"):
        loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(TypeError, match="hr must be a floating-point"):
        loss(torch.rand(1, 3, 32, 32), torch.zeros(1, 3, 32, 32, dtype=torch.uint8))

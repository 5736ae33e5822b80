"""Config -> objects: models, losses, optimisers, data and device settings of a training run.

The only place the trainer and CLI name models and losses. Models come from
``fastsr.models.create(name, **kwargs)``; losses from ``fastsr.nn`` / ``fastsr.losses``. A
config section's keys other than ``type`` / ``weight`` / ``name`` are passed to the
constructor unchanged, so the recipes use the constructors' own argument names; a wrong one
is a :class:`ConfigError` naming the section. The values themselves are checked by
:mod:`fastsr.train.config`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from fastsr import losses as L
from fastsr import models
from fastsr import nn as fnn
from fastsr._deprecation import moved_names
from fastsr.data import HRImageDataset, degrade, list_images, read_image, sample_images
from fastsr.errors import UserError
from fastsr.perf import native_bf16
from fastsr.train.config import ConfigError, check_losses, check_model, compile_kwargs, gan_loss_key

__all__ = ["generator_spec", "build_generator", "build_discriminator", "init_weights", "build_pixel_loss",
           "build_lr_consistency_loss",
           "build_feature_losses", "build_gan_loss", "build_optimizer", "build_scheduler", "build_ema",
           "compile_models", "build_datasets", "make_val_pairs", "native_bf16", "resolve_bf16",
           "resolve_cuda_graph", "hold_lr_in_tensor", "portable_state"]


# ---------------------------------------------------------------------------- models
def generator_spec(cfg: dict) -> dict:
    """``{"name": ..., **kwargs}`` that rebuilds the generator (stored in its weight files)."""
    check_model(cfg)
    spec = dict(cfg["model"]["generator"])
    spec.setdefault("scale", cfg["scale"])
    spec.setdefault("fused", cfg["model"].get("fused", True))
    return spec


def _construct(cls, spec: dict, key: str):
    """``cls(**spec)``; a wrong or missing argument or value becomes a ConfigError naming ``key``."""
    try:
        return cls(**spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    except FileNotFoundError as e:  # the VGG19 weights of the perceptual / texture losses
        raise ConfigError(f"{key}: {e}") from None


def _create(spec: dict, key: str) -> nn.Module:
    spec = dict(spec)
    name = spec.pop("name")
    return _construct(lambda **kw: models.create(name, **kw), spec, f"{key} {name!r}")


def build_generator(spec: dict) -> nn.Module:
    """The generator of a :func:`generator_spec` (or of a weight file's metadata)."""
    return _create(spec, "model.generator")


def build_discriminator(cfg: dict) -> nn.Module | None:
    """The discriminator of ``model.discriminator`` (``fused`` follows ``model.fused``), or
    None when it is null."""
    check_model(cfg)
    spec = cfg["model"].get("discriminator")
    if not spec:
        return None
    spec = dict(spec)
    spec.setdefault("fused", cfg["model"].get("fused", True))
    return _create(spec, "model.discriminator")


def init_weights(module: nn.Module, method: str) -> None:
    """``model.init``: ``default`` keeps PyTorch's initialisation, ``normal`` is N(0, 0.02)."""
    if method not in ("default", "normal"):
        raise ConfigError(f"model.init must be 'default' or 'normal', got {method!r}")
    if method == "normal":
        models.init_weights(module, method="normal", std=0.02)


# ---------------------------------------------------------------------------- losses
#: ``loss.pixel.type`` -> (constructor, defaults, follows ``model.fused``)
_PIXEL = {
    "l1": (fnn.L1Loss, {}, True),
    "charbonnier": (fnn.L1Loss, {"eps": 1e-3}, True),
    "mse": (torch.nn.MSELoss, {}, False),
    "ssim": (L.SSIML1Loss, {}, True),
}


def build_pixel_loss(cfg: dict):
    """``(module(sr, hr) -> scalar, weight)`` from ``loss.pixel``, or None when it is null.

    ``loss.pixel = {type: l1 | mse | charbonnier | ssim, weight: w, **kwargs}``; the module
    is :class:`fastsr.nn.L1Loss` (``l1``; ``charbonnier`` with ``eps``, default 1e-3 as
    LapSRN), ``torch.nn.MSELoss`` or :class:`fastsr.losses.SSIML1Loss` (``alpha``: alpha
    (1 - SSIM) + (1 - alpha) L1, 0.84 in Zhao et al. 2017) built with ``kwargs``;
    ``weight`` is applied by the trainer. The fused losses follow ``model.fused``.
    """
    check_losses(cfg)
    spec = cfg["loss"].get("pixel")
    if not spec:
        return None
    spec = dict(spec)
    kind = spec.pop("type", "l1")
    weight = float(spec.pop("weight", 1.0))
    cls, defaults, follows_fused = _PIXEL[kind]
    spec = {**defaults, **spec}
    if follows_fused:
        spec.setdefault("fused", bool(cfg["model"].get("fused", True)))
    return _construct(cls, spec, "loss.pixel"), weight


def build_lr_consistency_loss(cfg: dict):
    """``(LRConsistencyLoss(scale), weight)`` from ``loss.lr_consistency = {weight: w}``, or
    None when it is null or its weight is 0."""
    check_losses(cfg)
    spec = cfg["loss"].get("lr_consistency")
    if not spec or float(spec.get("weight", 1.0)) == 0.0:
        return None
    return L.LRConsistencyLoss(int(cfg["scale"])), float(spec.get("weight", 1.0))


def build_feature_losses(cfg: dict) -> list:
    """``[(name, module, weight)]`` for ``loss.perceptual`` and ``loss.texture``.

    Each section is ``{weight: w, **kwargs}`` with the constructor arguments of
    :class:`fastsr.losses.PerceptualLoss` (``layer_weights``, ``criterion``,
    ``feature_scale``, ``weights``, ``input_range``, ``ceil_mode``) or
    :class:`fastsr.losses.TextureLoss` (``layer_weights``, ``patch_size``, ``weights``,
    ``input_range``). The VGG19 weights come from ``weights`` or ``$FASTSR_VGG19_WEIGHTS``
    (never downloaded); a missing file is a ConfigError saying so.
    """
    out = []
    for key, cls in (("perceptual", L.PerceptualLoss), ("texture", L.TextureLoss)):
        spec = cfg["loss"].get(key)
        if not spec:
            continue
        spec = dict(spec)
        weight = float(spec.pop("weight", 1.0))
        out.append((key, _construct(cls, spec, f"loss.{key}"), weight))
    return out


def build_gan_loss(cfg: dict):
    """``(fastsr.losses.GANLoss, weight)`` from ``loss.gan``, or None when it is null.

    ``loss.gan = {type: kind, weight: w, **kwargs}``: ``kind`` one of
    ``fastsr.losses.GAN_LOSSES`` (vanilla, lsgan, wgan, wgan-gp (or wgan_gp), hinge, ragan,
    began), ``kwargs`` its constructor arguments (wgan: ``clip_value``; wgan-gp:
    ``gp_weight``; began: ``gamma``, ``lambda_k``, ``k_init``). ``weight`` is the
    adversarial weight of the generator loss, applied by the trainer.
    """
    spec = cfg["loss"].get("gan")
    if not spec:
        return None
    spec = dict(spec)
    key = gan_loss_key(spec.pop("type", None))
    weight = float(spec.pop("weight", 1e-3))
    return _construct(L.GAN_LOSSES[key], spec, "loss.gan"), weight


# ---------------------------------------------------------------------------- optimisation
def build_optimizer(params, lr: float, train_cfg: dict) -> torch.optim.Optimizer:
    """``train.optimizer`` (adam | adamw | rmsprop) with ``lr``, ``weight_decay``, ``betas``;
    Adam/AdamW with ``fused=True`` when ``train.fused_optimizer``."""
    t = train_cfg
    kind = t.get("optimizer", "adam")
    kw = dict(lr=float(lr), weight_decay=float(t["weight_decay"]))
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(params, betas=tuple(t["betas"]), fused=bool(t.get("fused_optimizer", True)) or None, **kw)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, **kw)
    raise ConfigError(f"train.optimizer must be adam, adamw or rmsprop, got {kind!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict):
    """MultiStepLR at the absolute iterations ``train.lr_steps``, factor ``train.lr_gamma``."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(train_cfg["lr_steps"] or []),
                                                train_cfg["lr_gamma"])


def hold_lr_in_tensor(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Make ``optimizer`` replayable inside a CUDA graph (the trainer's graph-ready mode).

    Each param group's ``lr`` becomes a 0-d float32 tensor on its parameters' device: a
    captured optimiser kernel reads the learning rate from that memory, and torch's LR
    schedulers write a tensor ``lr`` in place (``fill_`` in
    ``torch.optim.lr_scheduler._update_param_group_val``), so MultiStepLR's decay reaches
    the replays. ``capturable`` sets Adam/AdamW's ``capturable`` flag (CUDA only: its
    bookkeeping stays on the device) and moves the ``step`` counters of existing state to
    the parameters' device. Call it after loading a state dict too (loading replaces the
    groups' values).

    Raises:
        ConfigError: ``capturable`` for an optimiser without that option.
    """
    for group in optimizer.param_groups:
        if capturable and "capturable" not in group:
            raise ConfigError(f"train.cuda_graph: {type(optimizer).__name__} has no capturable mode")
        dev = group["params"][0].device
        lr = group["lr"]
        group["lr"] = (lr.detach().clone() if isinstance(lr, torch.Tensor) else torch.tensor(float(lr))) \
            .to(device=dev, dtype=torch.float32).reshape(())
        if "capturable" in group:
            group["capturable"] = bool(capturable)
        if capturable:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if isinstance(st.get("step"), torch.Tensor):
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


def _plain(value):
    """A tensor learning rate as a float (one host read, at save time), other values as is."""
    return float(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def portable_state(optimizer: torch.optim.Optimizer, scheduler) -> tuple[dict, dict]:
    """``(optimizer.state_dict(), scheduler.state_dict())`` with the learning rates as
    floats and ``capturable`` off, so a checkpoint written with ``train.cuda_graph`` on loads
    anywhere (:func:`hold_lr_in_tensor` turns them back after loading)."""
    osd = optimizer.state_dict()
    osd["param_groups"] = [{**g, **{k: _plain(g[k]) for k in ("lr", "initial_lr") if k in g},
                            **({"capturable": False} if "capturable" in g else {})} for g in osd["param_groups"]]
    ssd = dict(scheduler.state_dict())
    for k in ("base_lrs", "_last_lr"):
        if isinstance(ssd.get(k), list):
            ssd[k] = [_plain(v) for v in ssd[k]]
    return osd, ssd


def build_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode, to hold its exponential moving average."""
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def compile_models(G_train, D_train, D, train_cfg: dict):
    """``train.compile``: ``(G_train, D_train, D_frozen)`` compiled with torch.compile's
    keyword arguments (``true`` = its defaults, a mode string = ``{mode: ...}``, see
    :func:`fastsr.train.config.compile_kwargs`), or unchanged (``D_frozen = D``) when off.

    Raises:
        ConfigError: a ``train.compile`` value or argument torch.compile does not accept.
    """
    ckw = compile_kwargs(train_cfg.get("compile"))
    if ckw is None:
        return G_train, D_train, D
    try:
        G_train = torch.compile(G_train, **ckw)
        if D is not None:
            return G_train, torch.compile(D_train, **ckw), torch.compile(D, **ckw)
    except (TypeError, RuntimeError) as e:  # torch.compile is lazy: these are argument errors
        raise ConfigError(f"train.compile: {e}") from None
    return G_train, D_train, D


# ---------------------------------------------------------------------------- devices
def resolve_channels_last(setting, device, bf16: bool) -> bool:
    """``train.channels_last`` -> on/off: ``true``/``false`` force it; ``"auto"`` = on for CUDA
    (cuDNN's NHWC convolutions) and, on a CPU, only together with bf16 autocast. Measured on
    the 2-core CPUs of this project (one GAN iteration, batch 16, 96 px): fused fp32 NCHW 2.349
    s vs channels_last 2.394 s on an AMD EPYC with AVX512-BF16 (fp32 NHWC 2 % slower; with bf16
    NHWC is the fast layout, 1.58 s), and NHWC 9 % slower in fp32 on an Intel Xeon without bf16.
    """
    if isinstance(setting, bool):
        return setting
    if setting == "auto":
        return torch.device(device).type == "cuda" or bool(bf16)
    raise ConfigError(f"train.channels_last must be true, false or auto, got {setting!r}")


def resolve_cuda_graph(setting, device, *, distributed: bool = False, compiled: bool = False,
                       optimizer: str = "adam", models=()) -> bool:
    """``train.cuda_graph`` -> on/off: whether each training phase's iteration is captured
    and replayed as a CUDA graph (:class:`fastsr.graphs.GraphedStep`).

    ``"auto"`` = on when all of these hold, else off:

    * ``device`` is CUDA (graphs are a CUDA feature);
    * one process: DDP all-reduces gradients from autograd hooks with host-side bucket
      bookkeeping, which a captured backward does not replay;
    * ``train.compile`` off: torch.compile's guards run Python on every call, outside
      anything a replay repeats (its ``mode="reduce-overhead"`` brings its own graphs);
    * ``train.optimizer`` is adam or adamw, which fastsr builds ``capturable`` (their step
      counters and bias corrections live on the device). ``rmsprop`` is built as torch's
      plain RMSprop, whose capturable mode fastsr does not set up or test, so it stays eager;
    * no module of ``models`` sets ``data_dependent_control_flow = True`` (a forward that
      branches on tensor values records only the branch taken at capture; none of fastsr's
      models does).

    ``True`` forces it on and ``False`` off.

    Raises:
        ConfigError: ``True`` where it cannot work (not a CUDA device, DDP, ``train.compile``,
            rmsprop, a model with data-dependent control flow), naming ``train.cuda_graph``
            and the reason; any value other than true, false, auto.
    """
    if not isinstance(setting, bool) and setting != "auto":
        raise ConfigError(f"train.cuda_graph must be true, false or auto, got {setting!r}")
    if setting is False:
        return False
    dynamic = [type(m).__name__ for root in models if root is not None for m in root.modules()
               if getattr(m, "data_dependent_control_flow", False)]
    reasons = []
    if torch.device(device).type != "cuda":
        reasons.append(f"the device is {torch.device(device).type}, CUDA graphs need a CUDA device")
    if distributed:
        reasons.append("training runs in several processes (DDP)")
    if compiled:
        reasons.append("train.compile is on")
    if optimizer not in ("adam", "adamw"):
        reasons.append(f"train.optimizer is {optimizer} (only adam and adamw are built capturable)")
    if dynamic:
        reasons.append(f"{dynamic[0]} has data-dependent control flow")
    if setting is True and reasons:
        raise ConfigError(f"train.cuda_graph is true but {'; '.join(reasons)}: use auto or false")
    return not reasons


def resolve_bf16(setting, device) -> bool:
    """``train.bf16`` -> on/off: ``true``/``false`` force it, ``"auto"`` = :func:`native_bf16`.

    Raises:
        ConfigError: any other value.
    """
    if isinstance(setting, bool):
        return setting
    if setting == "auto":
        return native_bf16(device)
    raise ConfigError(f"train.bf16 must be true, false or auto, got {setting!r}")


# ---------------------------------------------------------------------------- data
def _centre_crop(img: torch.Tensor, side: int | None, scale: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    th, tw = (min(h, side), min(w, side)) if side else (h, w)
    th, tw = th - th % scale, tw - tw % scale
    top, left = (h - th) // 2, (w - tw) // 2
    return img[:, top:top + th, left:left + tw].contiguous()


def make_val_pairs(images, cfg: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``[(name, lr, hr)]`` validation pairs: HR centre-cropped to ``data.val_max_side``,
    mod-cropped to ``scale``, LR by the training degradation."""
    scale, d = cfg["scale"], cfg["data"]
    out = []
    for name, hr in images[: d.get("val_max_images") or None]:
        hr = _centre_crop(hr, d.get("val_max_side"), scale)
        lr = degrade(hr, scale, d["degradation"], d["blur_factor"])
        out.append((name, lr, hr))
    return out


def build_datasets(cfg: dict, data_dir=None, val_dir=None, with_val: bool = True):
    """``(train_set, val_pairs)`` of a run.

    ``data_dir`` None: the sample photographs' train split, validated on their validation
    split. Else the images under ``data_dir`` (recursive); validation on ``val_dir`` or, when
    it is None, on the last 10 % (at most ``data.val_max_images``) of the sorted files,
    which are then excluded from training. ``with_val=False`` returns no validation pairs.

    Raises:
        ConfigError: no image under ``data_dir``; a ``data`` value the datasets refuse.
        DataError: unusable images (:class:`fastsr.errors.DataError`).
        FileNotFoundError: a missing folder.
    """
    try:
        return _datasets(cfg, data_dir, val_dir, with_val)
    except UserError:
        raise
    except ValueError as e:  # a data.* value the datasets refuse
        raise ConfigError(f"data: {e}") from None


def _datasets(cfg: dict, data_dir, val_dir, with_val: bool):
    d, scale = cfg["data"], int(cfg["scale"])
    ds_kw = dict(scale=scale, crop_size=d["crop_size"], augment=d["augment"], degradation=d["degradation"],
                 blur_factor=d["blur_factor"], small_images=d["small_images"], cache=d["cache"])
    if data_dir is None:
        train_imgs = sample_images("train")
        train_set = HRImageDataset([x for _, x in train_imgs], names=[n for n, _ in train_imgs], **ds_kw)
        val_images = sample_images("val") if with_val else []
    else:
        files = list_images(data_dir)
        if not files:
            raise ConfigError(f"no images found under {data_dir}")
        held = []
        if val_dir is None and len(files) >= 2:
            n_val = min(max(1, len(files) // 10), int(d.get("val_max_images") or 8))
            files, held = files[:-n_val], files[-n_val:]
        train_set = HRImageDataset(files, names=[p.stem for p in files], **ds_kw)
        if val_dir is not None:
            held = list_images(val_dir)
        val_images = [(p.stem, read_image(p)) for p in held] if with_val else []
    return train_set, make_val_pairs(val_images, cfg)


__getattr__ = moved_names(__name__, {"psnr_ssim": "fastsr.evaluate:y_psnr_ssim"})

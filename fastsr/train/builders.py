"""Config -> objects: models, losses, optimisers, data of a training run (:func:`build_run`).

The only place the trainer and CLI name models and losses. Models come from
``fastsr.models.create(name, **kwargs)``; losses from ``fastsr.nn`` / ``fastsr.losses``. A
config section's keys other than ``type`` / ``weight`` / ``name`` are passed to the
constructor unchanged, so the recipes use the constructors' own argument names; a wrong one
is a :class:`ConfigError` naming the section. The values themselves are checked by
:mod:`fastsr.train.schema`: every builder takes a :class:`~fastsr.train.schema.Config`
(or a config dict, which it parses first).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from fastsr import losses as L
from fastsr import models
from fastsr import nn as fnn
from fastsr._deprecation import moved_names
from fastsr.data import HRImageDataset, degrade, list_images, read_image, sample_images
from fastsr.errors import ConfigError, DataError, UserError
from fastsr.evaluate import min_hr_side
from fastsr.models.registry import check_kwargs
from fastsr.train.schema import (Config, Resolved, TrainConfig, check_key, compile_kwargs, defaults, native_bf16,
                                 parse, resolve_bf16, resolve_channels_last, resolve_cuda_graph)

__all__ = ["generator_spec", "build_generator", "build_discriminator", "init_weights", "build_pixel_loss",
           "build_lr_consistency_loss", "build_checkerboard_loss",
           "build_feature_losses", "build_gan_loss", "build_optimizer", "build_scheduler", "build_ema",
           "compile_models", "build_datasets", "make_val_pairs", "native_bf16", "resolve_bf16",
           "resolve_cuda_graph", "hold_lr_in_tensor", "portable_state", "resolve_channels_last", "Run",
           "build_models", "build_run", "wrap_models"]


def _train_section(train_cfg) -> TrainConfig:
    """A ``train`` section as a :class:`TrainConfig` (a dict is merged over the defaults' and checked)."""
    if isinstance(train_cfg, TrainConfig):
        return train_cfg
    return parse({"train": dict(train_cfg)}).train if isinstance(train_cfg, dict) else parse(train_cfg).train


# ---------------------------------------------------------------------------- models
def generator_spec(cfg: Config | dict) -> dict:
    """``{"name": ..., **kwargs}`` that rebuilds the generator (stored in its weight files)."""
    c = parse(cfg)
    spec = dict(c.model.generator)
    spec.setdefault("scale", c.scale)
    spec.setdefault("fused", c.model.fused)
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
    try:
        check_kwargs(name, spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    return _construct(lambda **kw: models.create(name, **kw), spec, f"{key} {name!r}")


def build_generator(spec: dict) -> nn.Module:
    """The generator of a :func:`generator_spec` (or of a weight file's metadata)."""
    return _create(spec, "model.generator")


def build_discriminator(cfg: Config | dict) -> nn.Module | None:
    """The discriminator of ``model.discriminator`` (``fused`` follows ``model.fused``), or
    None when it is null."""
    c = parse(cfg)
    if c.model.discriminator is None:
        return None
    spec = dict(c.model.discriminator)
    spec.setdefault("fused", c.model.fused)
    return _create(spec, "model.discriminator")


def init_weights(module: nn.Module, method: str) -> None:
    """``model.init``: ``default`` keeps PyTorch's initialisation, ``normal`` is N(0, 0.02).

    Raises:
        ConfigError: another ``method``.
    """
    _init(module, check_key("model.init", method))


def _init(module: nn.Module, method: str) -> None:
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


def build_pixel_loss(cfg: Config | dict):
    """``(module(sr, hr) -> scalar, weight)`` from ``loss.pixel``, or None when it is null.

    ``loss.pixel = {type: l1 | mse | charbonnier | ssim, weight: w, **kwargs}``; the module
    is :class:`fastsr.nn.L1Loss` (``l1``; ``charbonnier`` with ``eps``, default 1e-3 as
    LapSRN), ``torch.nn.MSELoss`` or :class:`fastsr.losses.SSIML1Loss` (``alpha``: alpha
    (1 - SSIM) + (1 - alpha) L1, 0.84 in Zhao et al. 2017) built with ``kwargs``;
    ``weight`` is applied by the trainer. The fused losses follow ``model.fused``.
    """
    c = parse(cfg)
    term = c.loss.pixel
    if term is None:
        return None
    cls, ctor_defaults, follows_fused = _PIXEL[term.type]
    spec = {**ctor_defaults, **term.kwargs}
    if follows_fused:
        spec.setdefault("fused", c.model.fused)
    return _construct(cls, spec, "loss.pixel"), term.weight


def build_lr_consistency_loss(cfg: Config | dict):
    """``(LRConsistencyLoss(scale), weight)`` from ``loss.lr_consistency = {weight: w}``, or
    None when it is null or its weight is 0."""
    c = parse(cfg)
    term = c.loss.lr_consistency
    if term is None or term.weight == 0.0:
        return None
    return L.LRConsistencyLoss(c.scale), term.weight


def build_checkerboard_loss(cfg: Config | dict):
    """``(CheckerboardLoss(scale, block), weight)`` from ``loss.checkerboard = {weight: w,
    block: b}``, or None when it is null or its weight is 0.

    Raises:
        ConfigError: a ``block`` the loss refuses, or larger than ``data.crop_size``.
    """
    c = parse(cfg)
    term = c.loss.checkerboard
    if term is None or term.weight == 0.0:
        return None
    loss = _construct(L.CheckerboardLoss, {"scale": c.scale, **term.kwargs}, "loss.checkerboard")
    if loss.block > c.data.crop_size:
        raise ConfigError(f"loss.checkerboard.block={loss.block} is larger than data.crop_size={c.data.crop_size}")
    return loss, term.weight


def build_feature_losses(cfg: Config | dict) -> list:
    """``[(name, module, weight)]`` for ``loss.perceptual`` and ``loss.texture``.

    Each section is ``{weight: w, **kwargs}`` with the constructor arguments of
    :class:`fastsr.losses.PerceptualLoss` (``layer_weights``, ``criterion``,
    ``feature_scale``, ``weights``, ``input_range``, ``ceil_mode``) or
    :class:`fastsr.losses.TextureLoss` (``layer_weights``, ``patch_size``, ``weights``,
    ``input_range``). The VGG19 weights come from ``weights`` or ``$FASTSR_VGG19_WEIGHTS``
    (never downloaded); a missing file is a ConfigError saying so.
    """
    c, out = parse(cfg), []
    for key, cls in (("perceptual", L.PerceptualLoss), ("texture", L.TextureLoss)):
        term = getattr(c.loss, key)
        if term is not None:
            out.append((key, _construct(cls, dict(term.kwargs), f"loss.{key}"), term.weight))
    return out


def build_gan_loss(cfg: Config | dict):
    """``(fastsr.losses.GANLoss, weight)`` from ``loss.gan``, or None when it is null.

    ``loss.gan = {type: kind, weight: w, **kwargs}``: ``kind`` one of
    ``fastsr.losses.GAN_LOSSES`` (vanilla, lsgan, wgan, wgan-gp (or wgan_gp), hinge, ragan,
    began), ``kwargs`` its constructor arguments (wgan: ``clip_value``; wgan-gp:
    ``gp_weight``; began: ``gamma``, ``lambda_k``, ``k_init``). ``weight`` is the
    adversarial weight of the generator loss, applied by the trainer.
    """
    term = parse(cfg).loss.gan
    if term is None:
        return None
    return _construct(L.GAN_LOSSES[term.type], dict(term.kwargs), "loss.gan"), term.weight


# ---------------------------------------------------------------------------- optimisation
def build_optimizer(params, lr: float, train_cfg: TrainConfig | dict) -> torch.optim.Optimizer:
    """``train.optimizer`` (adam | adamw | rmsprop) with ``lr``, ``weight_decay``, ``betas``;
    Adam/AdamW with ``fused=True`` when ``train.fused_optimizer``."""
    t = _train_section(train_cfg)
    kw = dict(lr=float(lr), weight_decay=t.weight_decay)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, **kw)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(params, betas=t.betas, fused=bool(t.fused_optimizer) or None, **kw)


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: TrainConfig | dict):
    """MultiStepLR at the absolute iterations ``train.lr_steps``, factor ``train.lr_gamma``."""
    t = _train_section(train_cfg)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(t.lr_steps), t.lr_gamma)


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


def compile_models(G_train, D_train, D, train_cfg: TrainConfig | dict):
    """``train.compile``: ``(G_train, D_train, D_frozen)`` compiled with torch.compile's
    keyword arguments (``true`` = its defaults, a mode string = ``{mode: ...}``, see
    :func:`fastsr.train.schema.compile_kwargs`), or unchanged (``D_frozen = D``) when off.
    ``train_cfg``: the ``train`` section, or a dict holding its ``compile`` value.

    Raises:
        ConfigError: a ``train.compile`` value or argument torch.compile does not accept.
    """
    ckw = train_cfg.compile if isinstance(train_cfg, TrainConfig) else compile_kwargs(train_cfg["compile"])
    if ckw is None:
        return G_train, D_train, D
    try:
        G_train = torch.compile(G_train, **ckw)
        if D is not None:
            return G_train, torch.compile(D_train, **ckw), torch.compile(D, **ckw)
    except (TypeError, RuntimeError) as e:  # torch.compile is lazy: these are argument errors
        raise ConfigError(f"train.compile: {e}") from None
    return G_train, D_train, D


# ---------------------------------------------------------------------------- data
def _centre_crop(img: torch.Tensor, side: int | None, scale: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    th, tw = (min(h, side), min(w, side)) if side else (h, w)
    th, tw = th - th % scale, tw - tw % scale
    top, left = (h - th) // 2, (w - tw) // 2
    return img[:, top:top + th, left:left + tw].contiguous()


def make_val_pairs(images, cfg: Config | dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``[(name, lr, hr)]`` validation pairs, at most ``data.val_max_images``: HR
    centre-cropped to ``data.val_max_side``, mod-cropped to ``scale``, LR by the training
    degradation. Images then under :func:`fastsr.evaluate.min_hr_side` on a side (too small
    for SSIM's window after the ``crop_border``) are left out, with a warning naming them,
    and the next ones taken instead.

    Raises:
        DataError: every image is that small (the run would fail at its first validation).
    """
    c = parse(cfg)
    d, out, small = c.data, [], []
    for name, hr in images:
        if d.val_max_images is not None and len(out) == d.val_max_images:
            break
        hr = _centre_crop(hr, d.val_max_side, c.scale)
        if min(hr.shape[-2:]) < min_hr_side(c.scale):
            small.append(f"{name} {tuple(hr.shape[-2:])}")
            continue
        out.append((name, degrade(hr, c.scale, d.degradation, d.blur_factor), hr))
    if small:
        what = (f"validation image(s) under {min_hr_side(c.scale)} px on a side after the crop to "
                f"data.val_max_side={d.val_max_side} and to a multiple of scale={c.scale} (SSIM's 11 x 11 window "
                f"after crop_border={c.scale})")
        if not out:
            raise DataError(f"all {len(small)} {what}: {', '.join(small[:5])}")
        warnings.warn(f"leaving out {len(small)} {what}: {', '.join(small[:5])}", UserWarning, stacklevel=2)
    return out


def build_datasets(cfg: Config | dict, data_dir=None, val_dir=None, with_val: bool = True):
    """``(train_set, val_pairs)`` of a run.

    ``data_dir`` None: the sample photographs' train split, validated on their validation
    split (or on ``val_dir`` when given). Else the images under ``data_dir`` (recursive); validation on ``val_dir`` or, when
    it is None, on the last 10 % (at most ``data.val_max_images``) of the sorted files,
    which are then excluded from training. ``with_val=False`` returns no validation pairs.

    Raises:
        ConfigError: no image under ``data_dir`` or ``val_dir``; a ``data`` value the
            datasets refuse.
        DataError: unusable images (:class:`fastsr.errors.DataError`), validation images
            all too small to measure (:func:`make_val_pairs`).
        FileNotFoundError: a missing folder.
    """
    try:
        return _datasets(parse(cfg), data_dir, val_dir, with_val)
    except UserError:
        raise
    except ValueError as e:  # a data.* value the datasets refuse
        raise ConfigError(f"data: {e}") from None


def _datasets(c: Config, data_dir, val_dir, with_val: bool):
    d = c.data
    ds_kw = dict(scale=c.scale, crop_size=d.crop_size, augment=d.augment, degradation=d.degradation,
                 blur_factor=d.blur_factor, small_images=d.small_images, cache=d.cache)
    if data_dir is None:
        train_imgs = sample_images("train")
        train_set = HRImageDataset([x for _, x in train_imgs], names=[n for n, _ in train_imgs], **ds_kw)
        if val_dir is not None:
            val_images = _read_val_images(val_dir) if with_val else []
        else:
            val_images = sample_images("val") if with_val else []
    else:
        files = list_images(data_dir)
        if not files:
            raise ConfigError(f"no images found under {data_dir}")
        held = []
        if val_dir is None and len(files) >= 2:
            n_val = min(max(1, len(files) // 10), d.val_max_images or defaults()["data"]["val_max_images"])
            files, held = files[:-n_val], files[-n_val:]
        train_set = HRImageDataset(files, names=[p.stem for p in files], **ds_kw)
        if val_dir is not None:
            val_images = _read_val_images(val_dir) if with_val else []
        else:
            val_images = [(p.stem, read_image(p)) for p in held] if with_val else []
    return train_set, make_val_pairs(val_images, c)


def _read_val_images(val_dir) -> list:
    """The images under ``val_dir``; a folder without any is a ConfigError (not a run that
    silently skips validation)."""
    files = list_images(val_dir)
    if not files:
        raise ConfigError(f"no images found under the validation folder {val_dir}")
    return [(p.stem, read_image(p)) for p in files]


# ---------------------------------------------------------------------------- the run
@dataclass
class Run:
    """The objects of one training run (:func:`build_run`): the generator ``G`` (its spec
    ``g_spec``, its EMA copy ``G_ema`` or None), the discriminator ``D`` (or None), the
    losses (``pixel``, ``lr_consistency`` and ``checkerboard`` as ``(module, weight)`` or None, ``features`` as
    ``[(name, module, weight)]``, ``gan`` and ``gan_weight``), the optimisers and LR
    schedulers, and after :func:`wrap_models` the modules the updates call: ``G_train`` /
    ``D_train`` (DDP and torch.compile wrappers) and ``D_frozen`` (D in the generator step)."""

    g_spec: dict
    G: nn.Module
    D: nn.Module | None
    G_ema: nn.Module | None
    pixel: tuple | None
    lr_consistency: tuple | None
    checkerboard: tuple | None
    features: list
    gan: nn.Module | None
    gan_weight: float
    opt_g: torch.optim.Optimizer
    sched_g: object
    opt_d: torch.optim.Optimizer | None = None
    sched_d: object = None
    G_train: nn.Module | None = None
    D_train: nn.Module | None = None
    D_frozen: nn.Module | None = None


def build_models(cfg: Config | dict) -> tuple[dict, nn.Module, nn.Module | None]:
    """``(generator spec, G, D)`` of ``model``, initialised per ``model.init``, then G's
    sub-pixel convolutions by ICNR when ``model.icnr`` (and G has any:
    :func:`fastsr.models.init_icnr`), on the CPU.

    Raises:
        ConfigError: a constructor argument the model does not take or of another type
            (:func:`fastsr.models.registry.check_kwargs`) or value; a generator whose scale
            is not the config's ``scale``; a discriminator whose ``input_size`` is not
            ``data.crop_size``.
    """
    c = parse(cfg)
    g_spec = generator_spec(c)
    G, D = build_generator(g_spec), build_discriminator(c)
    g_scale = getattr(G, "scale", c.scale)
    if g_scale != c.scale:
        raise ConfigError(f"model.generator: {g_spec['name']} is built for scale {g_scale} (model.generator.scale) "
                          f"but the config's scale is {c.scale} (the data is made for it): set the two alike")
    d_size = getattr(D, "input_size", None)
    if d_size is not None and d_size != c.data.crop_size:
        raise ConfigError(f"model.discriminator: {type(D).__name__} is built for input_size={d_size} but it sees the "
                          f"HR crops of data.crop_size={c.data.crop_size}: set the two alike")
    for m in (G, D):
        if m is not None:
            _init(m, c.model.init)
    if c.model.icnr and models.has_subpixel_convs(G):
        models.init_icnr(G)
    return g_spec, G, D


def build_run(cfg: Config | dict, resolved: Resolved, G: nn.Module, D: nn.Module | None, g_spec: dict) -> Run:
    """The :class:`Run` of built models (:func:`build_models`): G and D moved to the device
    in the resolved memory format, the losses built and moved there, the EMA of G when
    ``train.ema_decay`` > 0, and the optimisers and schedulers of G and D."""
    c = parse(cfg)
    dev, t = resolved.device, c.train
    for m in (G, D):
        if m is not None:
            m.to(dev, memory_format=resolved.memory_format)
    pixel, features = build_pixel_loss(c), build_feature_losses(c)
    gan, gan_weight = build_gan_loss(c) or (None, 0.0)
    for m in [m for _, m, _ in features] + [pixel[0] if pixel else None, gan]:
        if m is not None:
            m.to(dev)
    opt_g = build_optimizer(G.parameters(), t.lr_g, t)
    run = Run(g_spec, G, D, build_ema(G) if t.ema_decay else None, pixel, build_lr_consistency_loss(c),
              build_checkerboard_loss(c), features, gan, gan_weight, opt_g, build_scheduler(opt_g, t))
    if D is not None:
        run.opt_d = build_optimizer(D.parameters(), t.lr_d, t)
        run.sched_d = build_scheduler(run.opt_d, t)
    return run


def wrap_models(run: Run, cfg: Config | dict, distributed: bool) -> Run:
    """Fill ``run.G_train`` / ``D_train`` / ``D_frozen``: DistributedDataParallel when
    ``distributed``, then torch.compile per ``train.compile`` (:func:`compile_models`). Call
    it after loading weights into the bare models."""
    G_train, D_train = run.G, run.D
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = next(run.G.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        G_train = DDP(run.G, device_ids=ids)
        if run.D is not None:
            D_train = DDP(run.D, device_ids=ids)
    run.G_train, run.D_train, run.D_frozen = compile_models(G_train, D_train, run.D, parse(cfg).train)
    return run


__getattr__ = moved_names(__name__, {"psnr_ssim": "fastsr.evaluate:y_psnr_ssim"})

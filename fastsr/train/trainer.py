"""The GAN super-resolution training loop (pixel pretraining, adversarial phase, DDP).

One iteration = one generator update. In the adversarial phase each iteration first makes
``train.d_steps`` discriminator updates on the current batch (the SR images are made once,
without gradients), then one generator update with
``l_G = w_pix * pixel + sum w * feature + w_gan * adversarial``. The first
``train.pretrain_iters`` iterations use the pixel loss only (MSE when ``loss.pixel`` is null,
SRGAN's SRResNet-MSE initialisation). LRs follow MultiStepLR at absolute iterations.

Reproducibility: seeded torch/numpy/random; the data stream depends only on the seed and the
iteration (:class:`fastsr.data.IterationBatchSampler`), so ``--resume`` replays exactly the
batches an uninterrupted run would see, and the RNG states are restored from the checkpoint.

Multi-process (torchrun): G and D are wrapped in DistributedDataParallel; every process takes
``batch_size / world`` of each global batch; rank 0 alone validates, logs and saves. In the
generator step D is called unwrapped with frozen parameters (no gradient sync needed); the
WGAN-GP penalty also calls D unwrapped (DDP does not support double backward) -- its
parameter gradients then reach DDP's reducer in the same backward pass as the main loss.

Ctrl-C (SIGINT) or SIGTERM: the loop stops at the next iteration boundary, saves a checkpoint
and returns ``status="interrupted"``; a second Ctrl-C aborts at once without saving.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fastsr.data import (HRFolderDataset, HRImageDataset, IterationBatchSampler, degrade, imresize, list_images,
                         sample_images)
from fastsr.train import builders
from fastsr.train.checkpoint import (CheckpointError, load_generator_weights, load_state, read_metadata, rng_state,
                                     save_generator, save_state, set_rng_state)
from fastsr.train.config import ConfigError, dump_config
from fastsr.train.distributed import DistInfo, barrier, cleanup_distributed, init_distributed

__all__ = ["Trainer", "train", "make_val_pairs"]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _centre_crop(img: torch.Tensor, side: int | None, scale: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    if side:
        th, tw = min(h, side), min(w, side)
    else:
        th, tw = h, w
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


class _Stop:
    """SIGINT/SIGTERM -> stop at the next iteration boundary; a second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class Trainer:
    """Builds everything from a config and runs :meth:`fit`. See the module docstring.

    Args:
        cfg: a config from :func:`fastsr.train.load_config`.
        out_dir: run folder (``config.yaml``, ``log.jsonl``, ``checkpoints/``).
        data_dir: HR image folder (recursive); ``None`` uses :func:`fastsr.data.sample_images`.
        val_dir: HR folder of validation images; default: held-back images (the sample
            photos' validation split, or the last 10 % (at most ``data.val_max_images``)
            of a data folder's sorted files, which are then excluded from training).
        resume: continue from ``out_dir/checkpoints/latest.*``.
        init_from: generator weights (fastsr safetensors) to start from (e.g. SRGAN from a
            trained SRResNet); ignored when resuming.
        device: "cpu" | "cuda" | None (auto).
        progress: show a tqdm bar on rank 0.
    """

    def __init__(self, cfg: dict, out_dir, data_dir=None, val_dir=None, resume: bool = False,
                 init_from=None, device: str | None = None, progress: bool = True):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.dist: DistInfo = init_distributed(device)
        dev = self.dist.device
        t, d = cfg["train"], cfg["data"]
        self.scale = int(cfg["scale"])
        _seed_all(int(t["seed"]))
        if t.get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.total = int(t["iters"])
        self.pretrain = int(t.get("pretrain_iters") or 0)
        if self.total < 1:
            raise ConfigError(f"train.iters must be >= 1, got {self.total}")

        # --- data
        ds_kw = dict(scale=self.scale, crop_size=d["crop_size"], augment=d["augment"], degradation=d["degradation"],
                     blur_factor=d["blur_factor"], small_images=d["small_images"], cache=d["cache"])
        if data_dir is None:
            train_imgs = sample_images("train")
            self.train_set = HRImageDataset([x for _, x in train_imgs], names=[n for n, _ in train_imgs], **ds_kw)
            val_images = sample_images("val")
        else:
            files = list_images(data_dir)
            if not files:
                raise ConfigError(f"no images found under {data_dir}")
            held = []
            if val_dir is None and len(files) >= 2:
                n_val = min(max(1, len(files) // 10), int(d.get("val_max_images") or 8))
                files, held = files[:-n_val], files[-n_val:]
            self.train_set = HRImageDataset(files, names=[p.stem for p in files], **ds_kw)
            if val_dir is not None:
                held = list_images(val_dir)
            from fastsr.data import read_image

            val_images = [(p.stem, read_image(p)) for p in held]
        self.val_pairs = make_val_pairs(val_images, cfg) if self.dist.is_main else []

        # --- models
        self.g_spec = builders.generator_spec(cfg)
        self.G = builders.build_generator(self.g_spec)
        self.D = builders.build_discriminator(cfg)
        init = cfg["model"].get("init", "default")
        builders.init_weights(self.G, init)
        if self.D is not None:
            builders.init_weights(self.D, init)
        self.pixel = builders.build_pixel_loss(cfg)
        self.features = builders.build_feature_losses(cfg)
        gan = builders.build_gan_objective(cfg)
        self.gan, self.gan_weight = gan if gan else (None, 0.0)
        if self.gan is not None and self.D is None:
            raise ConfigError("loss.gan is set but model.discriminator is null")
        if self.D is not None and self.gan is None:
            raise ConfigError("model.discriminator is set but loss.gan is null")
        if self.pixel is None and not self.features and self.gan is None:
            raise ConfigError("no loss configured (loss.pixel, loss.perceptual, loss.texture, loss.gan all null)")
        self.memory_format = torch.channels_last if t.get("channels_last") else torch.contiguous_format
        self.G.to(dev, memory_format=self.memory_format)
        if self.D is not None:
            self.D.to(dev, memory_format=self.memory_format)
        for _, m, _ in self.features:
            m.to(dev)
        self.ema_decay = float(t.get("ema_decay") or 0.0)
        self.G_ema = None
        if self.ema_decay > 0:
            self.G_ema = copy.deepcopy(self.G).eval()
            for p in self.G_ema.parameters():
                p.requires_grad_(False)

        # --- optimisers and schedulers
        self.opt_g = self._optimizer(self.G.parameters(), t["lr_g"])
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, list(t["lr_steps"] or []), t["lr_gamma"])
        self.opt_d = self.sched_d = None
        if self.D is not None:
            self.opt_d = self._optimizer(self.D.parameters(), t["lr_d"])
            self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, list(t["lr_steps"] or []), t["lr_gamma"])

        self.start_iter = 0
        self.ckpt_dir = self.out / "checkpoints"
        if resume:
            self._load(self.ckpt_dir)
        elif init_from is not None:
            self.G.load_state_dict(load_generator_weights(init_from, "params"))
            if self.G_ema is not None:
                self.G_ema.load_state_dict(self.G.state_dict())

        # --- wrappers
        self.G_train, self.D_train = self.G, self.D
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dev.index] if dev.type == "cuda" else None
            self.G_train = DDP(self.G, device_ids=ids)
            if self.D is not None:
                self.D_train = DDP(self.D, device_ids=ids)
        if t.get("compile"):
            self.G_train = torch.compile(self.G_train)
        self.autocast = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if t.get("bf16")
                         else contextlib.nullcontext())

    def _optimizer(self, params, lr):
        t = self.cfg["train"]
        kind = t.get("optimizer", "adam")
        if kind == "adam":
            return torch.optim.Adam(params, lr=float(lr), betas=tuple(t["betas"]), weight_decay=t["weight_decay"])
        if kind == "rmsprop":
            return torch.optim.RMSprop(params, lr=float(lr), weight_decay=t["weight_decay"])
        raise ConfigError(f"train.optimizer must be adam or rmsprop, got {kind!r}")

    # ------------------------------------------------------------------ checkpoints
    def save(self, iteration: int) -> None:
        """Write G weights (+EMA) and the full training state of ``iteration`` (rank 0)."""
        if not self.dist.is_main:
            return
        meta = {"iteration": iteration, "scale": self.scale, "generator": self.g_spec,
                "config": self.cfg.get("name", "")}
        ema = self.G_ema.state_dict() if self.G_ema is not None else None
        if self.cfg["log"].get("keep_weights", True):
            save_generator(self.ckpt_dir / f"g_{iteration:07d}.safetensors", self.G.state_dict(), ema, meta)
        save_generator(self.ckpt_dir / "latest.safetensors", self.G.state_dict(), ema, meta)
        state = {
            "iteration": iteration,
            "discriminator": self.D.state_dict() if self.D is not None else None,
            "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "sched_d": self.sched_d.state_dict() if self.sched_d is not None else None,
            "gan": self.gan.state_dict() if self.gan is not None else None,
            "rng": rng_state(),
        }
        save_state(self.ckpt_dir / "latest.state.pt", state)

    def _load(self, ckpt_dir: Path) -> None:
        wpath, spath = ckpt_dir / "latest.safetensors", ckpt_dir / "latest.state.pt"
        if not wpath.is_file():
            raise CheckpointError(f"nothing to resume: {wpath} not found")
        meta = read_metadata(wpath)
        state = load_state(spath)
        if int(meta.get("iteration", -1)) != int(state["iteration"]):
            raise CheckpointError(f"{wpath} (iteration {meta.get('iteration')}) and {spath} (iteration "
                                  f"{state['iteration']}) do not match")
        self.G.load_state_dict(load_generator_weights(wpath, "params"))
        if self.G_ema is not None:
            try:
                self.G_ema.load_state_dict(load_generator_weights(wpath, "params_ema"))
            except CheckpointError:
                self.G_ema.load_state_dict(self.G.state_dict())
        if self.D is not None:
            if state.get("discriminator") is None:
                raise CheckpointError(f"{spath} holds no discriminator but the config has one")
            self.D.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.gan is not None and state.get("gan"):
            self.gan.load_state_dict(state["gan"])
        set_rng_state(state["rng"])
        self.start_iter = int(state["iteration"])

    # ------------------------------------------------------------------ steps
    def _d_step(self, lr, hr) -> dict:
        with torch.no_grad(), self.autocast:
            fake = self.G_train(lr)
        fake = fake.detach().to(hr.dtype).contiguous(memory_format=self.memory_format)
        logs = {}
        for p in self.D.parameters():
            p.requires_grad_(True)
        for _ in range(int(self.cfg["train"]["d_steps"])):
            self.opt_d.zero_grad(set_to_none=True)
            with self.autocast:
                loss, logs = self._d_loss(hr, fake)
            loss.backward()
            self._clip(self.D)
            self.opt_d.step()
            self.gan.after_d_step(self.D)
            logs["loss_d"] = loss.item()
        return logs

    def _d_loss(self, hr, fake):
        # main terms through the DDP wrapper; the WGAN-GP double backward through the bare D
        return self.gan.d_loss(self.D_train, hr, fake, gp_module=self.D)

    def _clip(self, module) -> None:
        c = float(self.cfg["train"].get("grad_clip") or 0.0)
        if c > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), c)

    def _g_step(self, lr, hr, adversarial: bool) -> dict:
        self.opt_g.zero_grad(set_to_none=True)
        logs = {}
        with self.autocast:
            sr = self.G_train(lr)
            total = 0.0
            if self.pixel is not None or not adversarial:
                fn, w = self.pixel if self.pixel is not None else (torch.nn.functional.mse_loss, 1.0)
                l_pix = fn(sr.float(), hr.float())
                total = total + w * l_pix
                logs["l_pix"] = l_pix.item()
            if adversarial:
                for name, mod, w in self.features:
                    l_f = mod(sr.float(), hr.float())
                    total = total + w * l_f
                    logs[f"l_{name}"] = l_f.item()
                for p in self.D.parameters():
                    p.requires_grad_(False)
                l_gan, extra = self.gan.g_loss(self.D, hr, sr)
                total = total + self.gan_weight * l_gan
                logs["l_gan"] = l_gan.item()
                logs.update(extra)
        total.backward()
        self._clip(self.G)
        self.opt_g.step()
        logs["loss_g"] = float(total.item())
        if self.G_ema is not None:
            self._update_ema()
        return logs

    @torch.no_grad()
    def _update_ema(self) -> None:
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.lerp_(p.detach(), 1.0 - self.ema_decay)
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict:
        """Mean Y-channel PSNR/SSIM (crop_border=scale) of G (EMA when kept) and bicubic."""
        if not self.val_pairs:
            return {}
        model = self.G_ema if self.G_ema is not None else self.G
        was_training = model.training
        model.eval()
        ps, ss, pb, sb = [], [], [], []
        dev = self.dist.device
        for _, lr, hr in self.val_pairs:
            with self.autocast:
                sr = model(lr[None].to(dev, memory_format=self.memory_format)).float().clamp(0, 1)
            p, s = builders.psnr_ssim(sr, hr[None], self.scale)
            ps += p
            ss += s
            if not hasattr(self, "_bicubic"):
                bic = imresize(lr[None], float(self.scale)).clamp(0, 1) if self.scale > 1 else lr[None]
                p, s = builders.psnr_ssim(bic, hr[None], self.scale)
                pb += p
                sb += s
        if pb:
            self._bicubic = (sum(pb) / len(pb), sum(sb) / len(sb))
        model.train(was_training)
        return {"val_psnr": sum(ps) / len(ps), "val_ssim": sum(ss) / len(ss),
                "val_psnr_bicubic": self._bicubic[0], "val_ssim_bicubic": self._bicubic[1]}

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def fit(self) -> dict:
        """Train from ``start_iter`` to ``train.iters``. Returns a summary dict with ``status``
        ("finished" | "interrupted"), ``iteration``, ``seconds``, ``sec_per_iter`` and the last
        validation metrics."""
        cfg, t, lg = self.cfg, self.cfg["train"], self.cfg["log"]
        dev = self.dist.device
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump_config(cfg))
            if self.start_iter == 0 and (self.out / "log.jsonl").exists():
                (self.out / "log.jsonl").unlink()
        sampler = IterationBatchSampler(len(self.train_set), int(cfg["data"]["batch_size"]), int(t["seed"]),
                                        self.start_iter, self.total, self.dist.rank, self.dist.world)
        nw = int(cfg["data"]["num_workers"])
        loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=nw, pin_memory=dev.type == "cuda",
                            generator=torch.Generator().manual_seed(int(t["seed"])),
                            multiprocessing_context="fork" if nw > 0 and sys.platform == "linux" else None)
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=self.total, initial=self.start_iter, desc=cfg.get("name", "train"), unit="it",
                       dynamic_ncols=True, file=sys.stderr)
        it = self.start_iter
        status, last_val = "finished", {}
        t0 = time.perf_counter()
        self.G_train.train()
        if self.D is not None:
            self.D_train.train()
        with _Stop() as stop:
            batches = iter(loader)
            while it < self.total:
                if stop.requested:
                    status = "interrupted"
                    break
                try:
                    batch = next(batches)
                except RuntimeError:
                    if stop.requested:  # a DataLoader worker died of the same Ctrl-C
                        status = "interrupted"
                        break
                    raise
                lr = batch["lr"].to(dev, non_blocking=True).contiguous(memory_format=self.memory_format)
                hr = batch["hr"].to(dev, non_blocking=True).contiguous(memory_format=self.memory_format)
                adversarial = self.gan is not None and it >= self.pretrain
                logs = {}
                if adversarial:
                    logs.update(self._d_step(lr, hr))
                logs.update(self._g_step(lr, hr, adversarial))
                self.sched_g.step()
                if self.sched_d is not None:
                    self.sched_d.step()
                it += 1
                if not all(math.isfinite(v) for v in logs.values() if isinstance(v, float)):
                    raise FloatingPointError(f"non-finite loss at iteration {it}: {logs}")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss_g", "loss_d", "l_pix")})
                if it % int(lg["every"]) == 0 or it == self.total:
                    self._log({"iter": it, "phase": "gan" if adversarial else "pixel",
                               "lr_g": self.opt_g.param_groups[0]["lr"], **logs,
                               "time": round(time.perf_counter() - t0, 3)})
                if it % int(lg["val_every"]) == 0 or it == self.total:
                    if self.dist.is_main:
                        last_val = self.validate()
                        self._log({"iter": it, **last_val})
                        if bar is not None:
                            bar.write(f"iter {it}: val PSNR {last_val['val_psnr']:.2f} dB "
                                      f"(bicubic {last_val['val_psnr_bicubic']:.2f}), SSIM {last_val['val_ssim']:.4f}")
                    barrier(self.dist)
                if it % int(lg["save_every"]) == 0 or it == self.total:
                    self.save(it)
                    barrier(self.dist)
            if status == "interrupted":
                self.save(it)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        done = it - self.start_iter
        return {"status": status, "iteration": it, "seconds": seconds,
                "sec_per_iter": seconds / done if done else float("nan"), **last_val}

    def close(self) -> None:
        cleanup_distributed(self.dist)


def train(cfg: dict, out_dir, **kwargs) -> dict:
    """Build a :class:`Trainer` and run it; returns :meth:`Trainer.fit`'s summary."""
    trainer = Trainer(cfg, out_dir, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()

"""The parts of the training wing: the typed config (each value checked once, in one place,
naming its key; defaults only in _defaults.yaml), the resolved ``auto`` settings, the public
GANStep that benchmarks and tests drive, and the one-line error of ``--device cuda`` without
CUDA."""
import dataclasses
import typing

import pytest
import torch

from fastsr import cli
from fastsr.errors import ConfigError
from fastsr.train import GANStep, Trainer, builders, load_config, schema
from fastsr.train.config import dump_config
from fastsr.train.step import read_back

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}",
        "model.discriminator={name: WGANCritic, input_size: 64, num_feat: 1}", "data.crop_size=64",
        "data.batch_size=2", "train.bf16=false", "train.pretrain_iters=1"]


def _keys(cls=schema.Config, prefix=""):
    """The dotted keys of the schema's fields."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out += _keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_each_value_is_checked_once_per_trainer(monkeypatch, tmp_path):
    cfg = load_config("nonbn_wgan_x4", TINY)
    seen = []
    real = schema.check_value
    monkeypatch.setattr(schema, "check_value", lambda key, *a: (seen.append(key), real(key, *a))[1])
    Trainer(cfg, tmp_path, data=False, progress=False, device="cpu")
    assert sorted(seen) == sorted(_keys()), [k for k in set(seen) if seen.count(k) > 1]


def test_the_schema_types_the_values_and_names_bad_keys():
    c = schema.parse(load_config("nonbn_wgan_x4", ["train.iters=1e3", "loss.gan.type=WGAN"]))
    assert c.train.iters == 1000 and c.train.betas == (0.9, 0.999) and c.train.compile is None
    assert c.loss.gan == schema.LossTerm(1e-3, {"clip_value": 0.01}, "wgan") and c.loss.perceptual is None
    assert c.model.discriminator["name"] == "WGANCritic" and c.log.keep_weights is True
    for key, value, needle in (("train.optimizer", "sgd", "train.optimizer must be one of adam, adamw, rmsprop"),
                               ("train.d_joint_batch", "yes", "train.d_joint_batch must be one of auto, true"),
                               ("model.init", "xavier", "model.init must be one of default, normal"),
                               ("data.num_workers", -1, "data.num_workers must be a non-negative integer"),
                               ("loss.pixel", {"type": "l3"}, "loss.pixel.type must be one of"),
                               ("loss.gan", {"type": "wgan", "weight": "x"}, "loss.gan.weight must be a number")):
        with pytest.raises(ConfigError, match=needle):
            schema.check_key(key, value)
    assert schema.check_key("train.lr_g", "2e-4") == 2e-4
    with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
        schema.parse({"train": {"nope": 1}})
    with pytest.raises(ConfigError, match="train must be a mapping, got 5"):
        schema.parse({"train": 5})


def test_defaults_live_in_the_yaml_only(tmp_path):
    """A run folder's config.yaml of an earlier release, without keys added since, loads with
    the defaults' values; a dict with only some sections is completed the same way."""
    cfg = load_config("nonbn_wgan_x4")
    for key in ("cuda_graph", "channels_last", "ema_decay"):
        del cfg["train"][key]
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    old = load_config(str(tmp_path / "config.yaml"))
    ref = schema.defaults()["train"]
    assert all(old["train"][k] == ref[k] for k in ("cuda_graph", "channels_last", "ema_decay"))
    c = schema.parse({"scale": 2, "data": {"crop_size": 48}})
    assert c.scale == 2 and c.data.batch_size == schema.defaults()["data"]["batch_size"]


def test_resolve_decides_each_auto_once():
    c = schema.parse(load_config("nonbn_wgan_x4", ["train.bf16=auto", "train.channels_last=auto"]))
    G, D = builders.build_models(c)[1:]
    r = schema.resolve(c, "cpu", models=(G, D))
    assert r.bf16 == schema.native_bf16("cpu") and r.channels_last == r.bf16
    assert r.cuda_graph is False and "CUDA graphs need a CUDA device" in r.cuda_graph_off[0]
    assert r.d_joint_batch  # the WGAN critic has BatchNorm
    assert r.memory_format == (torch.channels_last if r.channels_last else torch.contiguous_format)
    off = schema.resolve(schema.parse(load_config("nonbn_wgan_x4", ["train.cuda_graph=false"])), "cpu", models=(G, D))
    assert off.cuda_graph is False and off.cuda_graph_off == ()


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 64, 64, generator=g)


def test_gan_step_is_the_iteration(tmp_path):
    """GANStep.step: one iteration, the losses as 0-d device tensors (no read-back), the
    pixel phase first, then the adversarial one; built from the parts, it trains exactly like
    the Trainer's."""
    cfg = load_config("nonbn_wgan_x4", TINY)
    tr = Trainer(cfg, tmp_path, data=False, progress=False, device="cpu")
    step = tr.gan_step
    assert isinstance(step, GANStep) and step.phase.name == "pixel"
    logs = step.step(*_batch(0))
    assert set(logs) == {"l_pix", "loss_g"} and all(v.dim() == 0 and v.dtype == torch.float32 for v in logs.values())
    assert step.iteration == tr.iteration == 1 and step.phase.name == "adversarial"
    logs = read_back(step.step(*_batch(1)))[0]
    assert {"loss_d", "l_gan", "wasserstein"} <= set(logs) and tr.iteration == 2
    # the same run from the public parts
    torch.manual_seed(cfg["train"]["seed"])
    c = schema.parse(cfg)
    g_spec, G, D = builders.build_models(c)
    resolved = schema.resolve(c, "cpu", models=(G, D))
    run = builders.wrap_models(builders.build_run(c, resolved, G, D, g_spec), c, distributed=False)
    mine = GANStep(run, c, resolved)
    torch.manual_seed(cfg["train"]["seed"])
    ref = Trainer(cfg, tmp_path, data=False, progress=False, device="cpu")
    for i in range(2):
        a, b = read_back(mine.step(*_batch(i)))[0], ref.train_step(*_batch(i))
        assert a == pytest.approx(b, rel=1e-6)
    for p, q in zip(run.G.parameters(), ref.G.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
def test_train_on_cuda_without_cuda_is_one_line(tmp_path, capsys):
    code = cli.main(["train", "nonbn_x4", "--device", "cuda", "--iters", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--device cuda: CUDA is not available" in err[0], err
    assert "Traceback" not in "\n".join(err)

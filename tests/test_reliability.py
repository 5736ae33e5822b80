"""Nothing is silently wrong, nothing is lost, every user error is one line: config values,
run folders, consistent saves, resumed logs, errors while training, checkpoints of another
architecture or with NaN weights, unreadable evaluation images, full or read-only disks.

The CLI runs in-process (``fastsr.cli.main``) on tiny models and three 96 px photographs."""
import errno
import json
import math
import os

import pytest
import torch

from helpers import truncate_images_after
from _cli_util import TINY_OVERRIDES, cli_in_process, one_line_error
from fastsr import cli
from fastsr.errors import CheckpointError, ConfigError, NonFiniteLossError, UserError
from fastsr.models.checkpoint import load_generator_weights, read_metadata, save_generator
from fastsr.train import GANStep, Trainer, list_configs, load_config, train
from fastsr.train.checkpoint import load_state

# NonBN generator (1 block, 8 channels) + WGAN critic on 32 px crops, batch 2, saves every 2
TINY = TINY_OVERRIDES


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*extra):
    return load_config("nonbn_wgan_x4", [*TINY, *extra])


_cli = cli_in_process


def _cli_train(capsys, photos, out, *args):
    sets = [x for s in TINY for x in ("--set", s)]
    return _cli(capsys, "train", "nonbn_wgan_x4", "--data", photos, "--no-progress", "--out", out, *sets, *args)


_one_line_error = one_line_error


def _log_iters(out):
    return [json.loads(line)["iter"] for line in (out / "log.jsonl").read_text().splitlines()
            if "loss_g" in json.loads(line)]


# ---------------------------------------------------------------------------- config values
@pytest.mark.parametrize("override,needle", [
    ("train.ema_decay=2", "train.ema_decay must be a finite number in [0, 1) or null, got 2"),
    ("train.ema_decay=-0.1", "train.ema_decay"),
    ("data.batch_size=2.5", "data.batch_size must be a positive integer, got 2.5"),
    ("train.iters=2.7", "train.iters must be a positive integer, got 2.7"),
    ("log.every=0", "log.every must be a positive integer, got 0"),
    ("log.save_every=-1", "log.save_every"),
    ("data.batch_size=abc", "data.batch_size must be a positive integer, got 'abc'"),
    ("train.lr_g=abc", "train.lr_g must be a finite number > 0, got 'abc'"),
    ("train.lr_d=.nan", "train.lr_d"),
    ("train.lr_g=.inf", "train.lr_g"),
    ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
    ("data.crop_size=30", "data.crop_size must be a multiple of scale=4"),
    ("train.betas=[0.9, 1.5]", "train.betas"),
    ("train.lr_steps=[10.5]", "train.lr_steps"),
    ("data.augment=1", "data.augment"),
])
def test_config_values_checked_at_load(override, needle, capsys):
    with pytest.raises(ConfigError) as e:
        load_config("nonbn_wgan_x4", [override])
    assert needle in str(e.value)
    code, _, err = _cli(capsys, "train", "nonbn_wgan_x4", "--set", override, "--print-config")
    _one_line_error(code, err, needle)


def test_config_numbers_are_normalised():
    cfg = load_config("nonbn_x4", ["train.iters=1e5", "data.batch_size=8.0", "train.lr_g=2e-4"])
    assert cfg["train"]["iters"] == 100000 and isinstance(cfg["train"]["iters"], int)
    assert cfg["data"]["batch_size"] == 8 and isinstance(cfg["data"]["batch_size"], int)
    assert cfg["train"]["lr_g"] == 2e-4
    for recipe in list_configs():
        load_config(recipe)  # every shipped recipe passes its own checks


def test_train_help_lists_every_recipe(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for recipe in list_configs():
        assert recipe in text, recipe
    assert "nonbn_x4" in text and "--overwrite" in text


# ---------------------------------------------------------------------------- run folders
@pytest.fixture(scope="module")
def run4(photos, tmp_path_factory):
    """A finished 4-iteration run (saves at 2 and 4)."""
    out = tmp_path_factory.mktemp("run4")
    train(_cfg("train.iters=4"), out, data_dir=photos, progress=False)
    return out


def test_refuses_a_non_empty_run_folder(photos, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = _cli_train(capsys, photos, out, "--iters", "2")
    _one_line_error(code, err, str(out), "--resume", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    with pytest.raises(UserError, match="not empty"):
        Trainer(_cfg("train.iters=2"), out, data_dir=photos, progress=False)
    code, _, err = _cli_train(capsys, photos, out / "notes.txt", "--iters", "2")
    _one_line_error(code, err, "notes.txt")  # a file as --out


def test_overwrite_replaces_the_earlier_run(photos, tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg("train.iters=4"), out, data_dir=photos, progress=False)
    (out / "notes.txt").write_text("mine")
    assert (out / "checkpoints" / "g_0000004.safetensors").is_file()
    code, _, err = _cli_train(capsys, photos, out, "--iters", "2", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "g_0000002.safetensors", "latest.safetensors", "latest.state.pt"]  # no stale g_0000004
    assert _log_iters(out) == [1, 2] and (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- consistent saves, resumed logs
def test_resume_after_a_kill_between_the_writes_of_a_save(run4, photos, tmp_path):
    """The weights file of the save before and the state of the last save (a kill between
    the two renames), plus an orphan temporary file: resume continues from the state."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    for name in ("latest.state.pt", "log.jsonl", "config.yaml"):
        src = run4 / ("checkpoints" if name.endswith(".pt") else "") / name
        (out / ("checkpoints" if name.endswith(".pt") else "") / name).write_bytes(src.read_bytes())
    old = run4 / "checkpoints" / "g_0000002.safetensors"
    (out / "checkpoints" / "latest.safetensors").write_bytes(old.read_bytes())
    orphan = out / "checkpoints" / ".latest.state.pt.x1y2.tmp"
    orphan.write_bytes(b"half a file")
    tr = Trainer(_cfg("train.iters=6"), out, data_dir=photos, progress=False, resume=True)
    assert tr.start_iter == 4 and not orphan.exists()
    full = load_generator_weights(run4 / "checkpoints" / "latest.safetensors")
    assert all(torch.equal(v.cpu(), full[k]) for k, v in tr.G.state_dict().items())
    assert read_metadata(out / "checkpoints" / "latest.safetensors")["iteration"] == 4  # repaired
    tr.fit()
    assert _log_iters(out) == [1, 2, 3, 4, 5, 6]


def test_resumed_log_continues_from_the_checkpoint(photos, tmp_path, monkeypatch):
    """Iteration 3 is logged, then the process dies before its save: the resumed run's log
    holds every iteration once."""
    out = tmp_path / "run"
    real_save = Trainer.save

    def dying_save(self, iteration):
        if iteration == 3:
            raise SystemExit("killed")
        real_save(self, iteration)

    monkeypatch.setattr(Trainer, "save", dying_save)
    with pytest.raises(SystemExit):
        train(_cfg("train.iters=3"), out, data_dir=photos, progress=False)
    monkeypatch.setattr(Trainer, "save", real_save)
    assert _log_iters(out) == [1, 2, 3]
    train(_cfg("train.iters=4"), out, data_dir=photos, progress=False, resume=True)
    assert _log_iters(out) == [1, 2, 3, 4]


# ---------------------------------------------------------------------------- stopping on errors
def test_error_between_iterations_saves_a_checkpoint(photos, tmp_path, capsys, monkeypatch):
    truncate_images_after(monkeypatch, 6)  # iterations 1-3 read fine
    out = tmp_path / "run"
    code, _, err = _cli_train(capsys, photos, out, "--iters", "10", "--set", "log.save_every=100",
                              "--set", "log.val_every=100")
    _one_line_error(code, err, "truncated", "iteration 3", "checkpoint saved", "--resume")
    assert read_metadata(out / "checkpoints" / "latest.safetensors")["iteration"] == 3
    assert load_state(out / "checkpoints" / "latest.state.pt")["iteration"] == 3


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(photos, tmp_path, capsys, monkeypatch):
    real_step = GANStep.step  # what fit runs: the losses stay on the device

    def step(self, lr, hr):
        logs = real_step(self, lr, hr)
        if self.iteration == 3:  # the update of iteration 3 diverges
            with torch.no_grad():
                for p in self.run.G.parameters():
                    p.fill_(float("nan"))
            logs["loss_g"] = torch.full_like(logs["loss_g"], float("nan"))
        return logs

    monkeypatch.setattr(GANStep, "step", step)
    out = tmp_path / "run"
    code, _, err = _cli_train(capsys, photos, out, "--iters", "6")
    _one_line_error(code, err, "non-finite loss at iteration 3", "loss_g=nan", "iteration 2")
    assert read_metadata(out / "checkpoints" / "latest.safetensors")["iteration"] == 2
    st = load_state(out / "checkpoints" / "latest.state.pt")
    assert st["iteration"] == 2 and all(v.isfinite().all() for v in st["generator"].values())
    assert not (out / "checkpoints" / "g_0000003.safetensors").exists()
    with pytest.raises(NonFiniteLossError) as e:
        train(_cfg("train.iters=6"), tmp_path / "api", data_dir=photos, progress=False)
    assert isinstance(e.value, FloatingPointError)


@pytest.mark.parametrize("code_,name", [(errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only")])
def test_full_or_read_only_disk_is_one_line(photos, tmp_path, capsys, monkeypatch, code_, name):
    import fastsr.models.checkpoint as ck

    real_fsync, calls = os.fsync, []

    def fail_after(n):
        def fsync(fd):
            calls.append(fd)
            if len(calls) > n:
                raise OSError(code_, name)
            return real_fsync(fd)
        return fsync

    # the run folder's config.yaml (written first, atomically: --resume reads it) ...
    monkeypatch.setattr(ck.os, "fsync", fail_after(0))
    out = tmp_path / "cfg"
    code, _, err = _cli_train(capsys, photos, out, "--iters", "2")
    _one_line_error(code, err, name, str(out / "config.yaml"))
    assert not list(out.glob(".*.tmp")) and not (out / "config.yaml").exists()
    # ... and the checkpoints after it
    calls.clear()
    monkeypatch.setattr(ck.os, "fsync", fail_after(1))
    out = tmp_path / "run"
    code, _, err = _cli_train(capsys, photos, out, "--iters", "2")
    _one_line_error(code, err, name, str(out / "checkpoints"))
    assert not list((out / "checkpoints").glob(".*.tmp"))  # the temporary file is gone


# ---------------------------------------------------------------------------- checkpoints of another architecture
def test_checkpoint_of_another_architecture(run4, photos, tmp_path, capsys):
    ck = run4 / "checkpoints" / "latest.safetensors"
    wide = ["--set", "model.generator.channels=16"]
    code, _, err = _cli_train(capsys, photos, tmp_path / "a", "--iters", "2", "--init-from", ck, *wide)
    _one_line_error(code, err, str(ck), "does not fit")
    res = tmp_path / "res"
    res.mkdir()
    (res / "checkpoints").mkdir()
    for f in ("latest.safetensors", "latest.state.pt"):
        (res / "checkpoints" / f).write_bytes((run4 / "checkpoints" / f).read_bytes())
    code, _, err = _cli_train(capsys, photos, res, "--iters", "6", "--resume", *wide)
    _one_line_error(code, err, "latest.state.pt", "does not fit")
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(_cfg("train.iters=6", "model.generator.channels=16"), res, data_dir=photos, progress=False,
                resume=True)
    # a generator file whose metadata names another size than its weights
    meta = read_metadata(ck)
    meta.pop("format")
    bad = tmp_path / "bad.safetensors"
    save_generator(bad, load_generator_weights(ck), None, {**meta, "generator": {**meta["generator"], "channels": 16}})
    code, _, err = _cli(capsys, "eval", "--checkpoint", bad, "--data", photos, "--weights", "params")
    _one_line_error(code, err, "bad.safetensors", "does not fit")


# ---------------------------------------------------------------------------- eval
def test_eval_crop_must_be_positive(run4, photos, tmp_path, capsys):
    code, _, err = _cli(capsys, "eval", "--checkpoint", run4 / "checkpoints" / "latest.safetensors", "--data",
                        photos, "--crop", "-5", "--save-images", tmp_path)
    _one_line_error(code, err, "--crop", "-5")


def test_eval_save_images_into_a_file_is_one_line(run4, photos, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = _cli(capsys, "eval", "--checkpoint", run4 / "checkpoints" / "latest.safetensors", "--data",
                        photos, "--save-images", tmp_path / "afile")
    _one_line_error(code, err, "afile")


def test_eval_skips_unreadable_images_with_one_warning(run4, photos, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    good = sorted(photos.iterdir())
    for p in good:
        (data / p.name).write_bytes(p.read_bytes())
    (data / "empty.png").write_bytes(b"")
    raw = good[0].read_bytes()
    (data / "truncated.png").write_bytes(raw[: len(raw) // 2])
    code, out, err = _cli(capsys, "eval", "--checkpoint", run4 / "checkpoints" / "latest.safetensors",
                          "--data", data)
    assert code == 0, err
    warning = [line for line in err.splitlines() if "unreadable" in line]
    assert len(warning) == 1 and "2 unreadable" in warning[0]
    assert "empty.png" in warning[0] and "truncated.png" in warning[0]
    rows = [line.split()[0] for line in out.splitlines()[3:-2]]
    assert sorted(rows) == sorted(p.stem for p in good)
    assert all(math.isfinite(float(v)) for v in out.splitlines()[-1].split()[1:])


def test_eval_refuses_nan_weights(run4, photos, tmp_path, capsys):
    ck = run4 / "checkpoints" / "latest.safetensors"
    meta = read_metadata(ck)
    meta.pop("format")
    sd = {k: torch.full_like(v, float("nan")) for k, v in load_generator_weights(ck).items()}
    save_generator(tmp_path / "nan.safetensors", sd, None, meta)
    code, out, err = _cli(capsys, "eval", "--checkpoint", tmp_path / "nan.safetensors", "--data", photos)
    _one_line_error(code, err, "nan.safetensors", "NaN")
    assert "Mean" not in out

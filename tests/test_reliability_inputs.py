"""Bad inputs end in one clear line: odd checkpoint contents (zero-size tensors, keys that are
not strings, oddly nested state dicts), generator files with bad metadata, scale mismatches,
validation images too small to measure, and damaged training states on ``--resume``.

API calls raise a UserError (or ValueError / TypeError) naming the file or argument and what
was expected; the CLI prints ``fastsr: error: ...`` on one line. Tiny models, in-process."""
import json
import warnings

import pytest
import torch
from safetensors.torch import save_file

from _cli_util import TINY_OVERRIDES, cli_in_process, one_line_error
from fastsr.errors import CheckpointError, ConfigError, DataError, UserError
from fastsr.evaluate import evaluate
from fastsr.models import create, load, load_generator, load_state_dict
from fastsr.models.checkpoint import load_generator_weights, read_metadata, save_generator
from fastsr.models.community import UnknownCheckpointError
from fastsr.models import registry
from fastsr.train import Trainer, load_config, train

TINY = TINY_OVERRIDES

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*extra):
    return load_config("nonbn_wgan_x4", [*TINY, *extra])


_cli = cli_in_process


_one_line_error = one_line_error


@pytest.fixture(scope="module")
def run2(photos, tmp_path_factory):
    """A finished 2-iteration run (saved at 2)."""
    out = tmp_path_factory.mktemp("run2")
    train(_cfg("train.iters=2"), out, data_dir=photos, progress=False)
    return out


@pytest.fixture(scope="module")
def msr_sd():
    return create("MSRResNet", scale=4, num_feat=8, num_block=1).state_dict()


# ---------------------------------------------------------------------------- checkpoint contents
@pytest.mark.parametrize("case,needle", [
    ("zero_size_all", "14 zero-size tensor(s)"),
    ("zero_size_one", "1 zero-size tensor(s) (conv_first.weight (0, 3, 3, 3))"),
    ("int_keys", "2 keys that are not strings (parameter names): 1 (int), 2 (int)"),
    ("tuple_key", "keys that are not strings (parameter names): (1, 2) (tuple)"),
    ("mixed_keys", "1 keys that are not strings"),
    ("int_keys_in_params", "keys that are not strings"),
    ("params_list", "no tensors found"),
    ("params_none", "no tensors found"),
    ("none_values", "no tensors found"),
    ("scalars", "too few dimensions"),
])
def test_odd_checkpoint_contents(msr_sd, tmp_path, capsys, case, needle):
    sd = msr_sd
    obj = {
        "zero_size_all": lambda: {k: v[:0] for k, v in sd.items()},
        "zero_size_one": lambda: {**sd, "conv_first.weight": sd["conv_first.weight"][:0]},
        "int_keys": lambda: {1: torch.zeros(3), 2: torch.zeros(3)},
        "tuple_key": lambda: {(1, 2): torch.zeros(3)},
        "mixed_keys": lambda: {**sd, 1: torch.zeros(3)},
        "int_keys_in_params": lambda: {"params": {7: torch.zeros(3)}},
        "params_list": lambda: {"params": list(sd.values())},
        "params_none": lambda: {"params": None},
        "none_values": lambda: {k: None for k in sd},
        "scalars": lambda: {k: torch.tensor(1.0) for k in sd},
    }[case]()
    path = tmp_path / f"{case}.pth"
    torch.save(obj, path)
    with pytest.raises(UnknownCheckpointError) as e:
        load(path)
    assert needle in str(e.value) and path.name in str(e.value)
    code, _, err = _cli(capsys, "export", "--checkpoint", path, "-o", tmp_path / "m.onnx")
    _one_line_error(code, err, needle)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("checkpoint,key,error,needle", [
    ({1: torch.zeros(1)}, None, ValueError, "1 keys that are not strings (parameter names): 1 (int)"),
    ("none_values", None, ValueError, "14 entries that are not tensors: 'conv_first.weight' (NoneType)"),
    ({"params": [1, 2]}, None, ValueError, "entries that are not tensors: 'params' (list)"),
    ({"params": None}, "params", TypeError, "checkpoint['params'] must be a mapping (a state dict), got NoneType"),
])
def test_load_state_dict_names_odd_contents(msr_sd, checkpoint, key, error, needle):
    if checkpoint == "none_values":
        checkpoint = {k: None for k in msr_sd}
    model = create("MSRResNet", scale=4, num_feat=8, num_block=1)
    with pytest.raises(error) as e:
        load_state_dict(model, checkpoint, key=key)
    assert needle in str(e.value)


def test_load_state_dict_of_a_damaged_file(tmp_path):
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"junk")
    model = create("MSRResNet", scale=4, num_feat=8, num_block=1)
    with pytest.raises(ValueError, match="cannot read .*junk.pth with torch.load"):
        load_state_dict(model, bad)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_state_dict(model, tmp_path / "missing.pth")


# ---------------------------------------------------------------------------- generator-file metadata
def _generator_file(run2, path, **meta_over):
    ck = run2 / "checkpoints" / "latest.safetensors"
    meta = read_metadata(ck)
    meta.pop("format")
    save_generator(path, load_generator_weights(ck), None, {**meta, **meta_over})
    return path


@pytest.mark.parametrize("scale,needle", [
    (0, "its 'scale' metadata must be a positive integer, got 0"),
    (-1, "must be a positive integer, got -1"),
    ("abc", "must be a positive integer, got 'abc'"),
    (3.5, "must be a positive integer, got 3.5"),
    (True, "must be a positive integer, got True"),
    ([4], "must be a positive integer, got [4]"),
    (10**30, f"its 'scale' metadata ({10**30}) is not the scale of the NonBNResNet"),
    (2, "its 'scale' metadata (2) is not the scale of the NonBNResNet its 'generator' metadata builds (4)"),
])
def test_generator_file_scale_metadata(run2, photos, tmp_path, capsys, scale, needle):
    path = _generator_file(run2, tmp_path / "g.safetensors", scale=scale)
    for fn in (lambda: load_generator(path, "params"), lambda: load(path)):
        with pytest.raises(CheckpointError) as e:
            fn()
        assert needle in str(e.value) and "g.safetensors" in str(e.value)
    for weights in ("auto", "params"):
        code, out, err = _cli(capsys, "eval", "--checkpoint", path, "--data", photos, "--weights", weights)
        _one_line_error(code, err, needle)
        assert "Mean" not in out


def test_generator_file_without_scale_metadata_has_its_models_scale(run2, tmp_path):
    ck = run2 / "checkpoints" / "latest.safetensors"
    meta = read_metadata(ck)
    spec = {k: v for k, v in meta["generator"].items() if k != "scale"}
    path = tmp_path / "g.safetensors"
    save_file({f"params.{k}": v for k, v in load_generator_weights(ck).items()}, str(path),
              metadata={"format": "fastsr", "generator": json.dumps(spec)})
    assert load_generator(path, "params")[1] == 4
    assert load(path)[1].scale == 4


@pytest.mark.parametrize("generator,needle", [
    ({"name": "Nope"}, "unknown model 'Nope'"),
    ({"name": 5}, "unknown model 5"),
    ({"num_blocks": 1}, "unknown model None"),
    (["NonBNResNet"], "its 'generator' metadata must be a JSON object"),
    ("NonBNResNet", "its 'generator' metadata must be a JSON object"),
    ({"name": "NonBNResNet", "num_blocks": 1, "channels": 8, "bogus": 1},
     "NonBNResNet takes no argument 'bogus'; it takes: scale, num_blocks, channels"),
    ({"name": "NonBNResNet", "num_blocks": 1, "channels": "abc"},
     "NonBNResNet: channels must be an integer (default 64), got 'abc'"),
    ({"name": "NonBNResNet", "num_blocks": 2.5, "channels": 8}, "num_blocks must be an integer (default 16), got 2.5"),
    ({"name": "NonBNResNet", "num_blocks": 1, "channels": 8, "prelu_shared": "yes"},
     "prelu_shared must be true or false"),
    ({"name": "NonBNResNet", "num_blocks": 10**9, "channels": 8}, "refusing to build it"),
    ({"name": "RRDBNet", "num_block": 10**9}, "refusing to build it"),
    ({"name": "NonBNResNet", "num_blocks": 1, "channels": 10**9}, "cannot be built"),
])
def test_generator_file_spec_metadata(run2, photos, tmp_path, capsys, generator, needle):
    path = _generator_file(run2, tmp_path / "g.safetensors", generator=generator)
    for fn in (lambda: load_generator(path, "params"), lambda: load(path)):
        with pytest.raises(CheckpointError) as e:
            fn()
        assert needle in str(e.value) and "g.safetensors" in str(e.value)
    code, _, err = _cli(capsys, "eval", "--checkpoint", path, "--data", photos)
    _one_line_error(code, err, needle)


def test_generator_metadata_that_is_not_json(run2, tmp_path):
    ck = run2 / "checkpoints" / "latest.safetensors"
    path = tmp_path / "g.safetensors"
    save_file({f"params.{k}": v for k, v in load_generator_weights(ck).items()}, str(path),
              metadata={"format": "fastsr", "generator": "{not json", "scale": "4"})
    for fn in (lambda: load_generator(path, "params"), lambda: load(path)):
        with pytest.raises(CheckpointError, match="must be a JSON object .*got '{not json'"):
            fn()


def test_check_kwargs():
    registry.check_kwargs("EDSR", {"res_scale": 0.1, "img_range": 255, "rgb_mean": [0.4, 0.4, 0.4], "num_block": 2})
    with pytest.raises(TypeError, match="scale must be an integer"):
        registry.check_kwargs("NonBNResNet", {"scale": 4.0})
    with pytest.raises(ValueError, match="unknown model"):
        registry.check_kwargs(["NonBNResNet"], {})


# ---------------------------------------------------------------------------- scale mismatches
def test_generator_scale_must_be_the_configs(photos, tmp_path, capsys):
    with pytest.raises(ConfigError, match="NonBNResNet is built for scale 2 .* the config's scale is 4"):
        Trainer(_cfg("train.iters=2", "model.generator.scale=2"), tmp_path / "a", data_dir=photos, progress=False)
    code, _, err = _cli(capsys, "train", "nonbn_wgan_x4", "--data", photos, "--out", tmp_path / "b",
                        *[x for s in TINY for x in ("--set", s)], "--set", "model.generator.scale=2", "--iters", "1")
    _one_line_error(code, err, "model.generator.scale")
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_init_from_a_generator_of_another_scale(run2, photos, tmp_path):
    ck = run2 / "checkpoints" / "latest.safetensors"
    with pytest.raises(CheckpointError, match="holds a generator for scale 4 but the config's scale is 2"):
        Trainer(load_config("nonbn_wgan_x4", [*TINY, "scale=2", "train.iters=2"]), tmp_path / "a",
                data_dir=photos, progress=False, init_from=ck)


def test_model_argument_of_the_wrong_type_in_a_config(photos, tmp_path):
    with pytest.raises(ConfigError, match="model.generator: NonBNResNet: channels must be an integer"):
        Trainer(_cfg("train.iters=2", "model.generator.channels=abc"), tmp_path / "a", data_dir=photos,
                progress=False)


@pytest.mark.parametrize("override,needle", [
    ("loss.pixel.weight=abc", "loss.pixel.weight must be a number >= 0, got 'abc'"),
    ("loss.gan.weight=[1]", "loss.gan.weight must be a number >= 0, got [1]"),
    ("loss.pixel=abc", "loss.pixel must be null or a mapping"),
    ("loss.gan.clip_value=abc", "clip_value must be a number > 0 or None, got 'abc'"),
])
def test_loss_overrides_of_the_wrong_type(photos, tmp_path, capsys, override, needle):
    code, _, err = _cli(capsys, "train", "nonbn_wgan_x4", "--data", photos, "--out", tmp_path / "a",
                        *[x for s in TINY for x in ("--set", s)], "--set", override, "--iters", "1")
    _one_line_error(code, err, needle)


# ---------------------------------------------------------------------------- validation images
def _images(folder, sides):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for name, (h, w) in sides.items():
        x = (torch.rand(h, w, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(x).save(folder / f"{name}.png")
    return folder


def test_validation_images_all_too_small_are_refused_before_training(photos, tmp_path, capsys):
    val = _images(tmp_path / "val", {"a_line": (1, 300), "b_tiny": (3, 3), "c_small": (12, 12)})
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"all 3 validation image\(s\) under 19 px on a side.*a_line \(0, 64\)"):
        Trainer(_cfg("train.iters=2"), out, data_dir=photos, val_dir=val, progress=False)
    code, _, err = _cli(capsys, "train", "nonbn_wgan_x4", "--data", photos, "--val-data", val, "--out", tmp_path / "c",
                        *[x for s in TINY for x in ("--set", s)], "--iters", "2", "--no-progress")
    _one_line_error(code, err, "validation image(s) under 19 px")
    assert not (tmp_path / "c" / "checkpoints").exists()


def test_too_small_validation_images_are_left_out(photos, tmp_path):
    val = _images(tmp_path / "val", {"a_line": (1, 300), "b_ok": (20, 24), "c_ok": (40, 40)})
    with pytest.warns(UserWarning, match=r"leaving out 1 validation image\(s\) .*a_line"):
        tr = Trainer(_cfg("train.iters=2", "data.val_max_images=1"), tmp_path / "run", data_dir=photos,
                     val_dir=val, progress=False)
    assert [name for name, _, _ in tr.val_pairs] == ["b_ok"]  # the cap counts the usable images
    summary = tr.fit()
    assert summary["status"] == "finished" and summary["iteration"] == 2 and "val_psnr" in summary


def test_sample_data_validates_on_the_val_folder(tmp_path):
    val = _images(tmp_path / "val", {"mine": (40, 40)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = Trainer(_cfg("train.iters=2"), tmp_path / "run", val_dir=val, progress=False)
    assert [name for name, _, _ in tr.val_pairs] == ["mine"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images found under the validation folder"):
        Trainer(_cfg("train.iters=2"), tmp_path / "run2", val_dir=tmp_path / "empty", progress=False)


def test_evaluate_names_an_image_too_small_to_measure():
    model = create("NonBNResNet", num_blocks=1, channels=8)
    pairs = [("tiny", torch.rand(3, 4, 4), torch.rand(3, 16, 16))]
    with pytest.raises(ValueError, match=r"evaluate: tiny: the HR image is \(16, 16\), under the 19 px"):
        evaluate(model, pairs, 4)


# ---------------------------------------------------------------------------- damaged training states
def _state_case(case, st):
    if case == "list":
        return [1, 2]
    st = dict(st)
    if case.startswith("iteration="):
        st["iteration"] = eval(case.split("=", 1)[1])  # noqa: S307 -- test literals only
    elif case.startswith("no_"):
        st.pop(case[3:])
    elif case == "generator_list":
        st["generator"] = [1, 2]
    elif case == "generator_tensor":
        st["generator"] = torch.zeros(2)
    elif case == "generator_int_keys":
        st["generator"] = {1: torch.zeros(1)}
    elif case == "opt_g_none":
        st["opt_g"] = None
    elif case == "rng_damaged":
        st["rng"] = {"torch": 1}
    return st


@pytest.mark.parametrize("case,needle", [
    ("iteration='abc'", "its iteration must be an integer >= 0, got 'abc'"),
    ("iteration=-3", "its iteration must be an integer >= 0, got -3"),
    ("iteration=2.5", "got 2.5"),
    ("iteration=None", "got None"),
    ("iteration=[2]", "got [2]"),
    ("no_iteration", "got None"),
    ("list", "holds a list, not a training state"),
    ("generator_list", "expected a state dict (a mapping of parameter names to tensors), got list"),
    ("generator_tensor", "got Tensor"),
    ("generator_int_keys", "keys that are not strings"),
    ("opt_g_none", "its optimiser / scheduler state does not fit"),
    ("no_rng", "its RNG state is missing or damaged"),
    ("rng_damaged", "its RNG state is missing or damaged"),
    ("truncated", "(damaged, truncated or of another format?)"),
    ("empty", "(damaged, truncated or of another format?): EOFError"),
])
def test_resume_from_a_damaged_state(run2, photos, tmp_path, capsys, case, needle):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    for f in ("latest.safetensors", "latest.state.pt"):
        (out / "checkpoints" / f).write_bytes((run2 / "checkpoints" / f).read_bytes())
    spath = out / "checkpoints" / "latest.state.pt"
    if case in ("truncated", "empty"):
        raw = spath.read_bytes()
        spath.write_bytes(raw[: len(raw) // 2] if case == "truncated" else b"")
    else:
        torch.save(_state_case(case, torch.load(spath, weights_only=True)), spath)
    with pytest.raises(CheckpointError) as e:
        Trainer(_cfg("train.iters=4"), out, data_dir=photos, progress=False, resume=True)
    assert needle in str(e.value) and "latest.state.pt" in str(e.value)
    code, _, err = _cli(capsys, "train", "nonbn_wgan_x4", "--data", photos, "--out", out, "--resume",
                        *[x for s in TINY for x in ("--set", s)], "--iters", "4", "--no-progress")
    _one_line_error(code, err, needle)


def test_resume_with_a_weights_file_of_non_numeric_iteration(run2, photos, tmp_path):
    """A weights file whose iteration is not a number is older than the state: repaired."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.state.pt").write_bytes((run2 / "checkpoints" / "latest.state.pt").read_bytes())
    _generator_file(run2, out / "checkpoints" / "latest.safetensors", iteration="abc")
    tr = Trainer(_cfg("train.iters=4"), out, data_dir=photos, progress=False, resume=True)
    assert tr.start_iter == 2
    assert read_metadata(out / "checkpoints" / "latest.safetensors")["iteration"] == 2
    tr.close()



# ---------------------------------------------------------------------------- found by the input hunt
@pytest.mark.parametrize("override,needle", [
    ("model.discriminator.num_feat=0", "model.discriminator: SRGANDiscriminator: num_feat must be >= 1, got 0"),
    ("model.discriminator.num_feat=-5", "num_feat must be >= 1, got -5"),
    ("model.generator.channels=-1", "model.generator: NonBNResNet: channels must be >= 1, got -1"),
    ("model.generator.num_blocks=-1", "num_blocks must be >= 0, got -1"),
    ("model.discriminator.input_size=36",
     "SRGANDiscriminator is built for input_size=36 but it sees the HR crops of data.crop_size=32"),
    ("data.crop_size=16", "input_size=32 but it sees the HR crops of data.crop_size=16"),
])
def test_model_sizes_that_cannot_train(photos, tmp_path, capsys, override, needle):
    with pytest.raises(ConfigError) as e:
        Trainer(_cfg("train.iters=1", override), tmp_path / "a", data_dir=photos, progress=False)
    assert needle in str(e.value)
    code, _, err = _cli(capsys, "train", "nonbn_wgan_x4", "--data", photos, "--out", tmp_path / "b",
                        *[x for s in TINY for x in ("--set", s)], "--set", override, "--iters", "1")
    _one_line_error(code, err, needle)


def test_a_model_count_of_zero_is_allowed():
    registry.check_kwargs("NonBNResNet", {"num_blocks": 0})
    with pytest.raises(ValueError, match="first_kernel_size must be >= 1, got 0"):
        registry.check_kwargs("NonBNResNet", {"first_kernel_size": 0})


@pytest.mark.parametrize("where", ["bicubic", "model"])
def test_upscale_out_of_memory_is_one_line(run2, photos, tmp_path, capsys, monkeypatch, where):
    import fastsr.evaluate as ev

    def oom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 7372800000 bytes. Error code 12")

    monkeypatch.setattr(ev, "bicubic_upscale" if where == "bicubic" else "upscale_image", oom)
    src = sorted(photos.iterdir())[0]
    how = ["--bicubic", "--scale", "4"] if where == "bicubic" else ["--checkpoint", run2 / "checkpoints" /
                                                                    "latest.safetensors"]
    code, _, err = _cli(capsys, "upscale", src, "-o", tmp_path / "out", *how, "--no-progress")
    line = _one_line_error(code, err, "out of memory", src.name)
    assert ("384x384 output" in line) if where == "bicubic" else ("--tile" in line)
    assert not (tmp_path / "out" / src.name).exists()


def test_export_refuses_an_opset_newer_than_onnx_knows(run2, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    newest = onnx.defs.onnx_opset_version()
    code, _, err = _cli(capsys, "export", "--checkpoint", run2 / "checkpoints" / "latest.safetensors",
                        "-o", tmp_path / "m.onnx", "--opset", newest + 1)
    _one_line_error(code, err, f"--opset must be an int in [9, {newest}]", f"got {newest + 1}")
    assert not (tmp_path / "m.onnx").exists()


def test_resume_of_a_finished_run_says_nothing_was_trained(run2, photos, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    for f in ("latest.safetensors", "latest.state.pt"):
        (out / "checkpoints" / f).write_bytes((run2 / "checkpoints" / f).read_bytes())
    code, stdout, err = _cli(capsys, "train", "nonbn_wgan_x4", "--data", photos, "--out", out, "--resume",
                             *[x for s in TINY for x in ("--set", s)], "--iters", "1", "--no-progress")
    assert code == 0, err
    assert "nothing to train (no iteration ran): the run is at iteration 2 and train.iters is 1" in stdout
    assert "nan" not in stdout


def test_upscale_files_takes_one_path_as_one_input(photos, tmp_path):
    from fastsr.upscale import upscale_files

    results = upscale_files(str(photos), tmp_path / "out", bicubic=True, scale=2, progress=False,
                            write=lambda *a, **k: None)
    assert sorted(r.dest.name for r in results) == sorted(p.name for p in photos.iterdir())
    assert len(upscale_files(photos, tmp_path / "out2", bicubic=True, scale=2, progress=False,
                             write=lambda *a, **k: None)) == len(results)


def test_prepare_model_names_an_unknown_device(run2):
    from fastsr.upscale import prepare_model

    with pytest.raises(UserError, match="--device must be cpu or cuda, got 'tpu'"):
        prepare_model(run2 / "checkpoints" / "latest.safetensors", device="tpu")

"""Training without host syncs and CUDA-graph replay of whole iterations (train.cuda_graph).

On a CPU: fit reads the device back only at log / validation / save points; a NaN between
them is still caught before the next save; the graph-ready eager path (static buffers,
tensor learning rates, gradients zeroed in place: the code a capture records) trains
exactly like the plain path; the config checks and the fallback of a failed capture.
On CUDA (skipped elsewhere): capture + replay equals eager iterations."""
import subprocess
import sys
import warnings

import pytest
import torch

from helpers import truncate_images_after
from fastsr.errors import ConfigError, NonFiniteLossError
from fastsr.models.checkpoint import read_metadata
from fastsr.train import GANStep, Trainer, load_config
from fastsr.train.builders import resolve_cuda_graph
from fastsr.graphs import GraphedStep

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# NonBN generator (1 block, 8 channels) + a BatchNorm discriminator on 32 px crops, batch 2
TINY = ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}",
        "model.discriminator={name: SRGANDiscriminator, input_size: 32, num_feat: 4}", "data.crop_size=32",
        "data.batch_size=2", "data.num_workers=0", "data.val_max_side=64", "train.bf16=false"]
# the EM-distance recipe shrunk: WGAN critic with weight clipping
WGAN = ["model.generator={name: NonBNResNet, num_blocks: 1, channels: 8}",
        "model.discriminator={name: WGANCritic, input_size: 64, num_feat: 1}", "data.crop_size=64",
        "data.batch_size=2", "train.bf16=false"]
BEGAN = ["model.generator={name: AttentiveGenerator, channels: 8, num_steps: 1, num_rdb: 1, rdb_layers: 1, "
         "growth: 4, num_mapping: 1}",
         "model.discriminator={name: BEGANDiscriminator, input_size: 32, num_feat: 4, hidden: 8}",
         "data.crop_size=32", "data.batch_size=2", "train.bf16=false"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- no host sync
_SYNCS = ("item", "tolist", "__float__", "__bool__")


def _fastsr_caller(frame) -> bool:
    """A call made by fastsr's training code. Excluded: the CPU input pipeline
    (``fastsr/data``, DataLoader workers when ``num_workers > 0``) and ``_is_one`` of the L1
    op, which reads a scalar only when it is a CPU tensor (never a device sync)."""
    f = frame.f_code.co_filename.replace("\\", "/")
    return "/fastsr/" in f and "/fastsr/data/" not in f and frame.f_code.co_name != "_is_one"


@pytest.mark.parametrize("graph_ready", [False, True], ids=["plain", "graph_ready"])
def test_fit_syncs_only_at_log_validation_and_save_points(photos, tmp_path, monkeypatch, graph_ready):
    cfg = load_config("nonbn_wgan_x4", [*TINY, "train.iters=8", "log.every=4", "log.val_every=8",
                                        "log.save_every=8", "train.pretrain_iters=2"])
    tr = Trainer(cfg, tmp_path / "run", data_dir=photos, progress=False)
    if graph_ready:
        tr.gan_step.enter_graph_mode(capture=False)
    events = []  # ("step", iterations done before it) | ("sync", name, where)
    real_step = GANStep.step

    def step(self, lr, hr):
        events.append(("step", self.iteration))
        return real_step(self, lr, hr)

    monkeypatch.setattr(GANStep, "step", step)
    for name in _SYNCS:
        real = getattr(torch.Tensor, name)

        def counted(t, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1)
            if _fastsr_caller(caller):
                events.append(("sync", _name, f"{caller.f_code.co_filename}:{caller.f_lineno}"))
            return _real(t, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    tr.fit()
    monkeypatch.undo()
    # syncs between the start of iteration i (i done before it) and the start of the next
    window, per = None, {}
    for e in events:
        if e[0] == "step":
            window = e[1] + 1
            per.setdefault(window, [])
        elif window is not None:
            per[window].append(e[1:])
    assert sorted(per) == list(range(1, 9))
    for i in (1, 2, 3, 5, 6, 7):
        assert per[i] == [], (i, per[i])
    # the log point: one read of all losses (+ the LR for the log, a device tensor when graph-ready)
    assert sorted(name for name, _ in per[4]) == (["__float__", "tolist"] if graph_ready else ["tolist"]), per[4]
    assert per[8]  # the end: read-back, validation, save


def _poison_loss(monkeypatch, iteration: int, key: str, value: float) -> None:
    """Make the logged ``key`` of the step that ends at ``iteration`` ``value`` (NaN / inf)."""
    real_step = GANStep.step

    def step(self, lr, hr):
        logs = real_step(self, lr, hr)
        if self.iteration == iteration:
            logs[key] = torch.full_like(logs[key], value)
        return logs

    monkeypatch.setattr(GANStep, "step", step)


def test_nan_between_read_backs_is_caught_before_the_next_save(photos, tmp_path, monkeypatch):
    """Read-backs at the saves only (4, 8): a NaN in iteration 6 stops the run at 8 without
    saving, and the checkpoint of 4 stays the newest."""
    _poison_loss(monkeypatch, 6, "loss_d", float("inf"))
    saves = []
    real_save = Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda self, it: (saves.append(it), real_save(self, it)))
    cfg = load_config("nonbn_wgan_x4", [*TINY, "train.iters=10", "log.every=100", "log.val_every=100",
                                        "log.save_every=4"])
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as e:
        Trainer(cfg, out, data_dir=photos, progress=False).fit()
    msg = str(e.value)
    assert "found at iteration 8" in msg and "after iteration 4" in msg and "iteration 4 in" in msg, msg
    assert saves == [4]
    assert read_metadata(out / "checkpoints" / "latest.safetensors")["iteration"] == 4


def test_error_between_iterations_does_not_save_after_a_non_finite_loss(photos, tmp_path, monkeypatch):
    from fastsr.data.io import ImageReadError

    _poison_loss(monkeypatch, 2, "loss_g", float("nan"))
    truncate_images_after(monkeypatch, 6)
    cfg = load_config("nonbn_wgan_x4", [*TINY, "train.iters=10", "log.every=100", "log.val_every=100",
                                        "log.save_every=100"])
    out = tmp_path / "run"
    with pytest.raises(ImageReadError) as e:
        Trainer(cfg, out, data_dir=photos, progress=False).fit()
    assert any("non-finite" in n for n in getattr(e.value, "__notes__", []))
    assert not (out / "checkpoints" / "latest.safetensors").exists()


# ---------------------------------------------------------------------------- graph-ready path
def _batches(cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, c, b = cfg["scale"], cfg["data"]["crop_size"], cfg["data"]["batch_size"]
    return [(torch.rand(b, 3, c // s, c // s, generator=g), torch.rand(b, 3, c, c, generator=g)) for _ in range(n)]


def _run(recipe, extra, tmp, graph_ready: bool, n=6, device="cpu"):
    cfg = load_config(recipe, [*extra, "train.pretrain_iters=2", "train.lr_steps=[4]", "train.lr_gamma=0.1",
                               "train.cuda_graph=false"])
    tr = Trainer(cfg, tmp, data=False, progress=False, device=device)
    if graph_ready:
        tr.gan_step.enter_graph_mode(capture=device == "cuda")
    lr_t = tr.opt_g.param_groups[0]["lr"]
    logs, grads = [], None
    for i, (lr, hr) in enumerate(_batches(cfg, n)):
        logs.append(tr.train_step(lr, hr))
        if i == 2:
            grads = [p.grad for p in tr.G.parameters()]
    return tr, logs, lr_t, grads


@pytest.mark.parametrize("recipe,extra", [
    ("nonbn_wgan_x4", WGAN),
    # PyTorch's default init for G: from ICNR's smooth first SR images the critic's BatchNorm on
    # 1x1 maps amplifies the paths' 4e-9 weight rounding ~1e4-fold into the gradient penalty
    # (a D weight then differs by 2e-6, past this comparison's 1e-6 floor): rounding, not a
    # different computation, so the comparison keeps its tolerance and the default init
    ("nonbn_wgan_x4", [*WGAN, "loss.gan={type: wgan_gp, weight: 1.0e-3, gp_weight: 10.0}", "train.grad_clip=1.0",
                       "model.icnr=false"]),
    ("attentive_began_x4", [*BEGAN, "train.ema_decay=0.9"]),
], ids=["wgan", "wgan_gp", "began"])
def test_graph_ready_path_trains_like_the_plain_path(recipe, extra, tmp_path):
    """6 iterations: 2 of pixel pretraining, 4 adversarial, the LR milestone at 4."""
    plain, plain_logs, _, _ = _run(recipe, extra, tmp_path / "plain", graph_ready=False)
    ready, ready_logs, lr_t, grads = _run(recipe, extra, tmp_path / "ready", graph_ready=True)
    assert [set(x) for x in ready_logs] == [set(x) for x in plain_logs]
    assert "loss_d" in ready_logs[-1] and "loss_d" not in ready_logs[0]
    for a, b in zip(ready_logs, plain_logs):
        for k in b:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    for m in ("G", "D"):
        for (name, p), q in zip(getattr(ready, m).named_parameters(), getattr(plain, m).parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    if ready.G_ema is not None:
        for p, q in zip(ready.G_ema.parameters(), plain.G_ema.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    if recipe == "attentive_began_x4":
        torch.testing.assert_close(ready.gan.k, plain.gan.k, rtol=1e-4, atol=1e-9)
    # what a replay relies on: the schedule fills the same LR tensor, gradients stay put
    g = ready.opt_g.param_groups[0]
    assert g["lr"] is lr_t and g["lr"].item() == pytest.approx(1e-5, rel=1e-6)
    assert plain.opt_g.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert all(p.grad is q for p, q in zip(ready.G.parameters(), grads))
    phases = ready.gan_step.phases
    assert phases["adversarial"].graph.calls == 4 and phases["pixel"].graph is None  # the pixel phase's graph freed
    # a checkpoint of the graph-ready run holds plain floats and loads in a plain trainer
    ready.save(6)
    st = torch.load(tmp_path / "ready" / "checkpoints" / "latest.state.pt", weights_only=True)
    assert isinstance(st["opt_g"]["param_groups"][0]["lr"], float)
    assert st["opt_g"]["param_groups"][0]["capturable"] is False
    assert all(isinstance(v, float) for v in st["sched_g"]["_last_lr"])


def test_graph_ready_resume_keeps_tensor_lr(tmp_path):
    tr, _, _, _ = _run("nonbn_wgan_x4", WGAN, tmp_path / "a", graph_ready=True, n=5)
    tr.save(5)
    cfg = load_config("nonbn_wgan_x4", [*WGAN, "train.pretrain_iters=2", "train.lr_steps=[4]",
                                        "train.cuda_graph=false"])
    res = Trainer(cfg, tmp_path / "a", data=False, progress=False, device="cpu", resume=True)
    assert isinstance(res.opt_g.param_groups[0]["lr"], float) and res.opt_g.param_groups[0]["lr"] == \
        pytest.approx(1e-5)
    res.gan_step.enter_graph_mode(capture=False)
    lr = res.opt_d.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dim() == 0 and lr.item() == pytest.approx(1e-5)
    logs = res.train_step(*_batches(cfg, 1)[0])
    assert res.iteration == 6 and "loss_d" in logs


# ---------------------------------------------------------------------------- settings
def test_resolve_cuda_graph():
    class Branchy(torch.nn.Module):
        data_dependent_control_flow = True

    assert resolve_cuda_graph("auto", "cuda") is True
    assert resolve_cuda_graph("auto", "cpu") is False
    assert resolve_cuda_graph(False, "cuda") is False
    assert resolve_cuda_graph(True, "cuda") is True
    for kw in ({"distributed": True}, {"compiled": True}, {"optimizer": "rmsprop"},
               {"models": (torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), Branchy()), None)}):
        assert resolve_cuda_graph("auto", "cuda", **kw) is False, kw
        with pytest.raises(ConfigError, match="train.cuda_graph"):
            resolve_cuda_graph(True, "cuda", **kw)
    assert resolve_cuda_graph("auto", "cuda", optimizer="adamw", models=(torch.nn.Conv2d(3, 3, 1),)) is True
    with pytest.raises(ConfigError, match="train.cuda_graph.*CUDA"):
        resolve_cuda_graph(True, "cpu")
    with pytest.raises(ConfigError, match="train.cuda_graph must be"):
        resolve_cuda_graph("yes", "cuda")


def test_cuda_graph_config_checks(tmp_path):
    assert load_config("nonbn_wgan_x4")["train"]["cuda_graph"] == "auto"
    for bad in ("maybe", "1", "[true]"):
        with pytest.raises(ConfigError, match="train.cuda_graph"):
            load_config("nonbn_wgan_x4", [f"train.cuda_graph={bad}"])
    with pytest.raises(ConfigError, match="train.cuda_graph.*train.compile"):
        load_config("nonbn_wgan_x4", ["train.cuda_graph=true", "train.compile=true"])
    with pytest.raises(ConfigError, match="train.cuda_graph.*rmsprop"):
        load_config("nonbn_wgan_x4", ["train.cuda_graph=true", "train.optimizer=rmsprop"])
    load_config("nonbn_wgan_x4", ["train.cuda_graph=auto", "train.optimizer=rmsprop"])  # auto: eager
    cfg = load_config("nonbn_wgan_x4", [*WGAN, "train.cuda_graph=true"])
    with pytest.raises(ConfigError, match="train.cuda_graph.*cpu"):
        Trainer(cfg, tmp_path, data=False, progress=False, device="cpu")
    tr = Trainer(load_config("nonbn_wgan_x4", WGAN), tmp_path, data=False, progress=False, device="cpu")
    assert tr.cuda_graph is False and not tr.graph_ready
    assert all(p.graph is None for p in tr.gan_step.phases.values())


# ---------------------------------------------------------------------------- GraphedStep
def _counting_fn():
    calls = []

    def fn(lr, hr):
        calls.append((lr.data_ptr(), hr.data_ptr()))
        return {"a": (hr.mean() - lr.mean()).reshape(()), "b": lr.sum().reshape(())}

    return fn, calls


def test_graphed_step_eager_uses_static_buffers():
    fn, calls = _counting_fn()
    step = GraphedStep(fn, capture=False, name="pixel")
    lr, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    out = step(lr, hr)
    assert out["a"].item() == pytest.approx((hr.mean() - lr.mean()).item())
    step(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16))
    assert calls[0] == calls[1] and calls[0][0] != lr.data_ptr()  # the same static buffers each time
    with pytest.warns(UserWarning, match="differ from the first"):
        out = step(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 16, 16))
    assert step.calls == 3 and len(calls) == 3 and not step.captured
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once
        step(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="warmup"):
        GraphedStep(fn, capture=False, warmup=0)
    with pytest.raises(TypeError, match="fn"):
        GraphedStep(None, capture=False)


def test_failed_capture_warns_once_and_loses_no_iteration(monkeypatch):
    fn, calls = _counting_fn()

    def warm(self, lr, hr):  # what the side stream does, without a GPU
        return self._eager(lr, hr)

    def record(self, lr, hr):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphedStep, "_warm", warm)
    monkeypatch.setattr(GraphedStep, "_record", record)
    step = GraphedStep(fn, capture=True, warmup=2, name="the adversarial phase")
    batch = (torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16))
    step(*batch), step(*batch)
    with pytest.warns(RuntimeWarning, match="adversarial phase runs without a CUDA graph: capture failed "
                                            r"\(RuntimeError: CUDA error: operation not permitted"):
        out = step(*batch)
    assert set(out) == {"a", "b"} and len(calls) == 3 and step.calls == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(*batch)
    assert len(calls) == 4 and not step.captured and "capture failed" in step.failure


def test_capture_on_a_cpu_falls_back_to_eager():
    """capture=True with CPU tensors: the warm-up cannot make a CUDA stream; the iteration
    runs eagerly once, with one warning."""
    fn, calls = _counting_fn()
    step = GraphedStep(fn, capture=True)
    with pytest.warns(RuntimeWarning, match="warm-up failed"):
        step(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 16, 16))
    step(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 16, 16))
    assert len(calls) == 2 and step.calls == 2


# ---------------------------------------------------------------------------- GPU
@CUDA
def test_cuda_graph_replay_equals_eager_wgan(tmp_path):
    """5 iterations of the (tiny) WGAN recipe: 3 warm-up, the capture (replayed once at
    once), 1 replay -- the same losses and parameters as 5 eager iterations."""
    extra = [*WGAN, "train.pretrain_iters=0", "train.lr_steps=[4]", "train.deterministic=true"]
    results = {}
    for graph in ("true", "false"):
        cfg = load_config("nonbn_wgan_x4", [*extra, f"train.cuda_graph={graph}"])
        tr = Trainer(cfg, tmp_path / graph, data=False, progress=False, device="cuda")
        assert tr.cuda_graph is (graph == "true")
        logs = [tr.train_step(lr, hr) for lr, hr in _batches(cfg, 5)]
        results[graph] = (tr, logs)
    tr, logs = results["true"]
    runner = tr.gan_step.phases["adversarial"].graph
    assert runner.captured and runner.failure is None and runner.calls == 5
    assert tr.opt_g.param_groups[0]["capturable"]
    ref_tr, ref_logs = results["false"]
    for a, b in zip(logs, ref_logs):
        for k in b:
            assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5), k
    for m in ("G", "D"):
        for p, q in zip(getattr(tr, m).parameters(), getattr(ref_tr, m).parameters()):
            torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)


@CUDA
def test_cuda_graph_auto_is_on_for_cuda(tmp_path):
    tr = Trainer(load_config("nonbn_wgan_x4", WGAN), tmp_path, data=False, progress=False, device="cuda")
    assert tr.cuda_graph and tr.graph_ready
    assert all(g["capturable"] and isinstance(g["lr"], torch.Tensor) for g in tr.opt_g.param_groups)


# ---------------------------------------------------------------------------- benchmark script
def test_graph_check_dry_run():
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "graph_check.py"), "--dry-run"],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "dry run" in p.stdout and "median" in p.stdout


# ---------------------------------------------------------------------------- inference
def test_graphed_module_passes_through_on_a_cpu_and_keeps_the_state_dict():
    from fastsr.graphs import GraphedModule
    from fastsr.models import create

    g = create("NonBNResNet", scale=2, num_blocks=1, channels=8).eval()
    wrapped = GraphedModule(g)
    assert list(wrapped.state_dict()) == [f"module.{k}" for k in g.state_dict()]
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), g(x), rtol=0, atol=0)
    assert not wrapped._steps  # nothing graphed off CUDA
    with pytest.raises(ValueError, match="max_graphs"):
        GraphedModule(g, max_graphs=0)
    with pytest.raises(TypeError, match="nn.Module"):
        GraphedModule(lambda x: x)


def test_graphed_module_keeps_one_step_per_shape_and_drops_the_oldest(monkeypatch):
    """The bookkeeping, with every call treated as graphable (on a CPU the steps' warm-up
    fails and they run eagerly, each with one warning)."""
    from fastsr.graphs import GraphedModule

    calls = []

    class Net(torch.nn.Module):
        def forward(self, x):
            calls.append(tuple(x.shape))
            return 2 * x

    wrapped = GraphedModule(Net(), max_graphs=2)
    monkeypatch.setattr(GraphedModule, "_graphable", staticmethod(lambda x: True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for side in (4, 5, 4, 6):
            x = torch.rand(1, 3, side, side)
            torch.testing.assert_close(wrapped(x), 2 * x)
    assert calls == [(1, 3, 4, 4), (1, 3, 5, 5), (1, 3, 4, 4), (1, 3, 6, 6)]
    assert [k[0] for k in wrapped._steps] == [(1, 3, 4, 4), (1, 3, 6, 6)]  # 5x5 was the least recent


@CUDA
def test_graphed_module_replays_equal_eager_on_cuda():
    from fastsr.graphs import GraphedModule
    from fastsr.models import create

    g = create("NonBNResNet", scale=4, num_blocks=2, channels=16).cuda().eval()
    wrapped = GraphedModule(g)
    with torch.inference_mode():
        for side in (16, 16, 16, 20, 20, 20):
            x = torch.rand(2, 3, side, side, device="cuda")
            torch.testing.assert_close(wrapped(x), g(x), rtol=1e-5, atol=1e-5)
    assert all(step.captured and step.failure is None for step in wrapped._steps.values())

"""The package layout: imports between fastsr's subpackages flow one way, moved names keep
their old import paths (with a DeprecationWarning), and weight files written before the
models were built on fastsr.nn's conv + epilogue block still load."""
import ast
import importlib
from pathlib import Path

import pytest
import torch

import fastsr
from fastsr import models

PKG = Path(fastsr.__file__).resolve().parent

# Lower layers first; a module may import from its own layer or any lower one.
# ops and kernels register into each other's custom ops and are outside this check.
LAYERS = [
    {"errors", "_deprecation", "_extension", "perf", "graphs"},
    {"ops"},
    {"nn", "data", "metrics"},
    {"models", "losses"},
    {"evaluate", "export"},
    {"inference"},
    {"upscale"},
    {"train"},
    {"bench"},
    {"cli", "__main__"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _unit(module: str) -> str | None:
    """``fastsr.train.trainer`` -> ``train``; None outside fastsr."""
    parts = module.split(".")
    if parts[0] != "fastsr":
        return None
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, module: str) -> set[str]:
    """Every fastsr module named by an import statement of ``path`` (function-level ones too)."""
    out = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from fastsr import models`
    return {m for m in out if m.startswith("fastsr")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "kernels":
            continue
        module = ".".join(("fastsr", *rel.with_suffix("").parts)).removesuffix(".__init__")
        src = _unit(module)
        for target in _imports(path, module):
            dst = _unit(target)
            if dst and dst != src and dst in RANK:
                graph.setdefault(src, set()).add(dst)
    return graph


def test_every_subpackage_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert units - {"__init__", "kernels"} <= set(RANK), units - set(RANK)


def test_imports_flow_one_way():
    bad = [f"fastsr.{src} imports fastsr.{dst}" for src, dsts in _graph().items() for dst in dsts
           if src in RANK and RANK[dst] > RANK[src]]
    assert not bad, bad


def test_no_import_cycles_between_subpackages():
    graph = _graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = "done"

    for node in list(graph):
        if node not in state:
            visit(node, [])


def test_the_graph_holds_the_real_imports():
    """The graph is built from the real import statements (function-level ones included), so
    the two checks above see an upward import wherever it is written."""
    graph = _graph()
    assert "models" in graph.get("train", set()) and "ops" in graph.get("nn", set())
    assert "evaluate" in graph.get("cli", set()) and "evaluate" in graph.get("train", set())
    assert "train" not in graph.get("models", set()) and "train" not in graph.get("evaluate", set())


@pytest.mark.parametrize("old,name,new", [
    ("fastsr.train.inference", "load_generator", "fastsr.models.checkpoint"),
    ("fastsr.train.inference", "upscale_image", "fastsr.evaluate"),
    ("fastsr.train.checkpoint", "save_generator", "fastsr.models.checkpoint"),
    ("fastsr.train.checkpoint", "load_generator_weights", "fastsr.models.checkpoint"),
    ("fastsr.train.checkpoint", "read_metadata", "fastsr.models.checkpoint"),
    ("fastsr.train.checkpoint", "export_generator", "fastsr.models.checkpoint"),
    ("fastsr.train", "load_generator_weights", "fastsr.models.checkpoint"),
    ("fastsr.train", "read_metadata", "fastsr.models.checkpoint"),
    ("fastsr.train.builders", "psnr_ssim", "fastsr.evaluate"),
])
def test_moved_names_still_import_with_a_warning(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        obj = getattr(module, name)
    expected = "y_psnr_ssim" if name == "psnr_ssim" else name
    assert obj is getattr(importlib.import_module(new), expected)


def test_errors_are_user_errors():
    from fastsr.data import ImageReadError
    from fastsr.errors import CheckpointError, ConfigError, DataError, UserError
    from fastsr.train import CheckpointError as TrainCheckpointError
    from fastsr.train import ConfigError as TrainConfigError

    assert TrainConfigError is ConfigError and TrainCheckpointError is CheckpointError
    for cls in (ConfigError, CheckpointError, DataError, ImageReadError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)


# ---------------------------------------------------------------------------- state dicts
def test_shipped_weights_load_strictly():
    """The shipped nonbn_x4 file, written before the models used fastsr.nn.conv_prelu /
    conv_residual, fits the model key for key and shape for shape."""
    from fastsr.models.checkpoint import load_generator_weights, read_metadata

    path = models.pretrained_path("nonbn_x4")
    spec = dict(read_metadata(path)["generator"])
    name = spec.pop("name")
    assert name == "NonBNResNet"
    for fused in (True, False):
        model = models.create(name, **{**spec, "fused": fused})
        sd = load_generator_weights(path, "params")
        models.load_state_dict(model, sd)  # strict: raises listing any missing/unexpected/mis-shaped key
        assert set(model.state_dict()) == set(sd)


# The generators' state_dict keys, one per parameter group, as checkpoints of the previous
# layout stored them (BasicSR's names where the model mirrors BasicSR).
_KEYS = {
    "NonBNResNet": ["conv_first.weight", "conv_first.bias", "prelu_first.weight", "body.0.conv1.weight",
                    "body.0.prelu.weight", "body.0.conv2.bias", "conv_body.weight", "upsampler.0.conv.weight",
                    "upsampler.0.prelu.weight", "conv_last.weight"],
    "SharpnessGenerator": ["conv_first.weight", "prelu_first.weight", "body.0.conv1.weight", "conv_body.bias",
                           "conv_last.weight", "conv_last.bias"],
    "RRDBNet": ["conv_first.weight", "body.0.rdb1.conv5.weight", "body.0.rdb3.conv5.bias", "conv_body.weight",
                "conv_up1.weight", "conv_hr.weight", "conv_last.bias"],
    "EDSR": ["conv_first.weight", "body.0.conv1.weight", "body.0.conv2.bias", "conv_after_body.weight",
             "conv_last.weight"],
}


@pytest.mark.parametrize("name", sorted(_KEYS))
def test_generator_state_dicts_keep_their_keys(name):
    kw = {"num_block": 1} if name in ("RRDBNet", "EDSR") else {"num_blocks": 1}
    fused = models.create(name, fused=True, **kw)
    plain = models.create(name, fused=False, **kw)
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert set(_KEYS[name]) <= set(fused.state_dict()), set(_KEYS[name]) - set(fused.state_dict())
    plain.load_state_dict(fused.state_dict())
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- the training wing
def _train_private_names() -> set[str]:
    """Underscore names fastsr.train defines: its private functions, classes, module
    constants and instance attributes."""
    names = set()
    for path in (PKG / "train").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_nothing_outside_train_uses_its_private_names():
    """Tests, benchmarks, scripts and the rest of fastsr drive the training wing through its
    public API (Trainer, GANStep, the builders and the schema)."""
    private, root, hits = _train_private_names(), PKG.parent, []
    assert {"_iteration", "_generator_loss", "_bicubic"} <= private
    files = [p for d in ("fastsr", "tests", "benchmarks", "scripts") for p in (root / d).rglob("*.py")]
    for path in files:
        if (PKG / "train") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastsr.train"):
                hits += [f"{path}: imports {a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr in private and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                hits.append(f"{path}:{node.lineno}: .{node.attr}")
    assert not hits, hits


def _length(node) -> int:
    """Lines of a function or class without its docstring."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def test_training_wing_cli_and_upscaler_are_in_small_parts():
    """No function over 60 lines and no class over 300 (docstrings excluded) in fastsr.train,
    fastsr.bench, the CLI and the upscaler."""
    files = [*(PKG / "train").glob("*.py"), *(PKG / "bench").glob("*.py"), PKG / "cli.py", PKG / "upscale.py"]
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _length(node) > 60:
                long.append(f"{path.name}:{node.name} ({_length(node)} lines)")
            elif isinstance(node, ast.ClassDef) and _length(node) > 300:
                long.append(f"{path.name}:{node.name} ({_length(node)} lines)")
    assert not long, long

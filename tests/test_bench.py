"""``fastsr bench``: device selection, the report of a CUDA run (built from a synthetic
report: no GPU needed), the statistics of the iteration table, and a CPU smoke run."""
import json
import math
import types

import pytest
import torch
from _cli_util import run

from fastsr.bench import iteration
from fastsr.errors import UserError


def _cuda_report():
    """A report as run_benchmark writes it on a GPU (times in seconds, memory in MiB)."""
    machine = {"device": "cuda", "cpu": "Some Host CPU", "cores": 16, "threads": 16, "torch": "2.13.0+cu130",
               "python": "3.11.7", "cpu_capability": "AVX512", "train_defaults": {"bf16": True, "channels_last": True},
               "gpu": "NVIDIA H200", "gpu_capability": "9.0", "gpu_memory_gib": 139.8, "cuda": "13.0",
               "driver": "580.65.06", "cudnn": 91200}
    rows = iteration.summarize(
        [{"variant": "2", "times": [0.027, 0.026, 0.029], "peak_mib": 1510.0},
         {"variant": "2", "times": [0.028, 0.030, 0.025], "peak_mib": 1534.5},
         {"variant": "8", "times": [0.0061, 0.0065, 0.0063], "peak_mib": 2048.0}],
        {"2": 219e9})
    inference = [{"size": 256, "variant": "eager fp32", "n": 20, "min": 0.0041, "median": 0.0042, "p20": 0.00415,
                  "p80": 0.00431, "peak_mib": 620.0},
                 {"size": 256, "variant": "fused fp32", "n": 20, "min": 0.0013, "median": 0.0014, "p20": 0.00135,
                  "p80": 0.00147, "peak_mib": 655.0}]
    return {"machine": machine, "iteration": rows, "inference": inference,
            "settings": {"rounds": 2, "iters": 3, "warmup": 2, "batch": 16, "crop": 96, "device": "cuda",
                         "overrides": []}}


def test_summarize_pools_rounds_into_percentiles_and_peak_memory():
    rows = {r["variant"]: r for r in _cuda_report()["iteration"]}
    r2 = rows["2"]
    pooled = sorted([0.027, 0.026, 0.029, 0.028, 0.030, 0.025])
    assert r2["n"] == 6 and r2["min_s"] == 0.025
    assert math.isclose(r2["median_s"], 0.0275)
    assert math.isclose(r2["p20_s"], pooled[1])          # position 0.2 * 5 = 1
    assert math.isclose(r2["p80_s"], pooled[4])          # position 0.8 * 5 = 4
    assert r2["peak_mib"] == 1534.5                       # the larger peak of the two rounds
    assert math.isclose(rows["8"]["speedup_vs_2"], 0.0275 / 0.0063)
    assert math.isclose(rows["8"]["gflops_per_s"], 219 / 0.0063)  # variant 2's FLOPs stand in


def test_markdown_of_a_cuda_report_names_the_gpu_and_shows_spread_and_memory():
    md = iteration.markdown(_cuda_report())
    assert "NVIDIA H200" in md and "compute capability 9.0" in md and "CUDA 13.0" in md
    assert "driver 580.65.06" in md and "torch 2.13.0+cu130" in md and "CUDA events" in md
    # the table is in milliseconds with p20-p80 and peak MiB columns
    assert "| median ms/it | p20-p80 ms/it | peak MiB |" in md
    row2 = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert "| 27.500 | 26.000-29.000 | 1534 |" in row2, row2
    inf = next(line for line in md.splitlines() if line.startswith("| 256x256 | fused fp32"))
    assert "| 1.400 | 1.350-1.470 | 655 | 3.00 |" in inf, inf
    assert "Some Host CPU" in md  # the host is named too, after the GPU


def test_markdown_of_a_cpu_report_names_the_cpu_without_memory():
    rep = _cuda_report()
    rep["machine"] = {k: v for k, v in rep["machine"].items() if not k.startswith(("gpu", "cuda", "driver", "cudnn"))}
    rep["machine"]["device"] = rep["settings"]["device"] = "cpu"
    md = iteration.markdown(rep)
    assert md.splitlines()[2].startswith("Machine: Some Host CPU, 16 cores")
    assert "H200" not in md and "peak MiB" not in md and "| median s/it | p20-p80 s/it |" in md
    assert "| 0.028 | 0.026-0.029 |" in md


def test_bar_chart_of_a_cuda_report(tmp_path):
    pytest.importorskip("matplotlib")
    iteration.bar_chart(_cuda_report(), tmp_path / "it.png")
    assert (tmp_path / "it.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_machine_info_on_cuda_names_the_gpu(monkeypatch):
    """The GPU fields come from torch.cuda (faked here): name, capability, memory, versions."""
    props = types.SimpleNamespace(major=9, minor=0, total_memory=150_000_000_000)
    fakes = {"is_available": lambda: True, "is_bf16_supported": lambda *a, **k: True, "current_device": lambda: 0,
             "get_device_properties": lambda i: props, "get_device_name": lambda i: "NVIDIA Fake GPU"}
    for name, fn in fakes.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91200)
    monkeypatch.setattr(iteration, "_nvidia_driver", lambda: "580.1")
    m = iteration.machine_info("cuda")
    assert m["device"] == "cuda" and m["gpu"] == "NVIDIA Fake GPU" and m["gpu_capability"] == "9.0"
    assert m["gpu_memory_gib"] == 139.7 and m["cuda"] == "13.0" and m["driver"] == "580.1"
    assert m["train_defaults"] == {"bf16": True, "channels_last": True}  # what fastsr train picks on CUDA
    assert "NVIDIA Fake GPU (compute capability 9.0, 139.7 GiB), CUDA 13.0, driver 580.1" in iteration.machine_line(m)


def test_resolve_device(monkeypatch):
    assert iteration.resolve_device("cpu") == "cpu"
    with pytest.raises(UserError, match="cpu or cuda"):
        iteration.resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert iteration.resolve_device(None) == "cpu"
    with pytest.raises(UserError, match="--device cuda: CUDA is not available"):
        iteration.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert iteration.resolve_device(None) == "cuda"  # the default follows fastsr train's


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_bench_device_cuda_without_cuda_is_one_line():
    p = run("bench", "--device", "cuda", "--quick", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastsr: error: --device cuda: CUDA is not available"), p.stderr


def test_bench_cli_passes_device_and_all_variants(monkeypatch, tmp_path):
    from fastsr import cli

    got = {}
    monkeypatch.setattr(iteration, "run_benchmark", lambda **kw: got.update(kw))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "--out", str(tmp_path)]) == 0
    assert got["device"] == "cpu" and got["variants"] is None and got["inference_sizes"] is None
    assert cli.main(["bench", "--quick", "--variants", "2, 8", "--set", "a.b=1"]) == 0
    assert got["variants"] == ["2", "8"] and got["batch"] == 4 and got["inference_sizes"] == (32,)
    assert got["overrides"] == ["a.b=1"]


def test_unknown_variant_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="variant '9'"):
        iteration.run_benchmark(variants=["9"], out_dir=tmp_path, device="cpu")


TINY_MODEL = ["--set", "model.generator.num_blocks=1", "--set", "model.generator.channels=8",
              "--set", "model.discriminator={name: SRGANDiscriminator, num_feat: 4}"]


def test_bench_quick_smoke_on_cpu(tmp_path):
    """The whole pipeline (worker subprocesses, report files) at a tiny size: not a timing."""
    out = tmp_path / "res"
    run("bench", "--quick", "--device", "cpu", "--variants", "2,3", "--no-parity", *TINY_MODEL, "--out", out)
    rep = json.loads((out / "iteration.json").read_text())
    assert rep["settings"]["device"] == "cpu" and rep["machine"]["device"] == "cpu"
    assert [r["variant"] for r in rep["iteration"]] == ["2", "3"]
    for r in rep["iteration"]:
        assert r["n"] == 2 and 0 < r["min_s"] <= r["p20_s"] <= r["median_s"] <= r["p80_s"] and r["peak_mib"] is None
    assert {(r["size"], r["variant"]) for r in rep["inference"]} == {
        (32, "eager fp32"), (32, "fused fp32"), (32, "fused+channels_last+bf16")}
    md = (out / "iteration.md").read_text()
    assert "model.generator.num_blocks=1" in md and "| 2 | NonBN eager fp32 NCHW |" in md
    assert (out / "iteration.png").stat().st_size > 0

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
    assert m["train_defaults"] == {"bf16": True, "channels_last": True, "cuda_graph": True}  # fastsr train on CUDA
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
    with pytest.raises(UserError, match="variant '99'"):
        iteration.run_benchmark(variants=["99"], out_dir=tmp_path, device="cpu")


def test_variant_environment_reaches_its_worker(monkeypatch):
    """A variant's process-wide kernel choice (variant 14: oneDNN's bf16 weight gradient) is set
    in its worker's environment, and only there."""
    seen = {}

    def fake_run(cmd, env=None, **kw):
        seen[cmd[cmd.index("--worker") + 1]] = env
        return types.SimpleNamespace(returncode=0, stdout='{"variant": "x"}\n', stderr="")

    monkeypatch.setattr(iteration.subprocess, "run", fake_run)
    monkeypatch.delenv("FASTSR_WINOGRAD_BF16_WGRAD", raising=False)
    args = types.SimpleNamespace(iters=1, warmup=0, batch=2, crop=16, device="cpu", extra=[], count_flops=False)
    for key in ("8", "14"):
        iteration._run_worker(iteration._variant(key), args)
    assert seen["14"]["FASTSR_WINOGRAD_BF16_WGRAD"] == "onednn"
    assert "FASTSR_WINOGRAD_BF16_WGRAD" not in seen["8"]
    assert seen["8"]["PATH"] == seen["14"]["PATH"]


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


# ----------------------------------------------------------------------------- kernel benchmarks
def _benchmarks_module(name):
    import importlib
    import sys

    from _cli_util import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


class _FakeBenchmark:
    def __init__(self):
        self.extra_info, self.calls = {}, []

    def pedantic(self, fn, **kw):
        self.calls.append(("pedantic", kw))
        for _ in range(kw["rounds"]):
            fn()

    def __call__(self, fn):
        self.calls.append(("auto", {}))
        fn()


def test_kernel_benchmarks_time_cuda_rows_with_events(monkeypatch):
    """common.measure on CUDA (torch.cuda faked): event statistics in extra_info, and
    pytest-benchmark's rounds each end with a synchronize; on the CPU it is pytest-benchmark."""
    common = _benchmarks_module("common")
    from test_perf import _FakeCuda

    fake = _FakeCuda()
    for name in ("Event", "is_available", "synchronize", "reset_peak_memory_stats", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Fake GPU")
    monkeypatch.setattr(common, "CUDA_WARMUP", 2)
    monkeypatch.setattr(common, "CUDA_ITERS", 5)
    monkeypatch.setattr(common, "CUDA_SYNC_ROUNDS", 3)

    def fn():
        fake.log.append("call")
        fake.gpu_ms += 2.0

    bm = _FakeBenchmark()
    common.measure(bm, fn, "cuda")
    timed = fake.log[:fake.log.index("synchronize", 4) + 1]
    assert timed == ["call"] * 2 + ["synchronize", "reset_peak"] + ["record", "call", "record"] * 5 + ["synchronize"]
    info = bm.extra_info
    assert info["device"] == "cuda" and info["cuda"]["n"] == 5 and info["cuda"]["gpu"] == "NVIDIA Fake GPU"
    assert math.isclose(info["cuda"]["median_s"], 0.002) and info["cuda"]["peak_mib"] == 3.5
    # then pytest-benchmark's rounds (the fake runs the 3 timed ones), each one call then a synchronize
    assert bm.calls == [("pedantic", {"rounds": 3, "iterations": 1, "warmup_rounds": 1})]
    assert fake.log[len(timed):] == ["call", "synchronize"] * 3

    cpu = _FakeBenchmark()
    common.measure(cpu, lambda: None, "cpu", pedantic={"rounds": 2, "iterations": 1})
    common.measure(cpu, lambda: None, "cpu")
    assert cpu.calls == [("pedantic", {"rounds": 2, "iterations": 1}), ("auto", {})]
    assert cpu.extra_info == {"device": "cpu"}


def test_kernel_table_names_the_device_of_every_row(tmp_path):
    kt = _benchmarks_module("kernel_table")

    def bench(impl, device, median, cuda=None):
        extra = {"device": device, "bytes": 4_000_000, **({"cuda": cuda} if cuda else {})}
        return {"group": "bias_prelu fwd (16, 64, 24, 24) torch.float32", "name": f"test_epilogue[{impl}]",
                "params": {"impl": impl}, "extra_info": extra, "stats": {"min": median * 0.9, "median": median}}

    ev = lambda med: {"n": 100, "min_s": med * 0.95, "median_s": med, "p20_s": med * 0.97, "p80_s": med * 1.04,
                      "peak_mib": 12.0, "device": "cuda", "gpu": "NVIDIA Fake GPU"}
    data = {"benchmarks": [bench("fastsr", "cpu", 0.004), bench("eager", "cpu", 0.008),
                           # pytest-benchmark's synchronized host times are larger: the table uses the events
                           bench("fastsr", "cuda", 0.5, ev(0.00002)), bench("eager", "cuda", 0.5, ev(0.00004))]}
    (tmp_path / "k.json").write_text(json.dumps(data))
    out = kt.table(kt.rows_by_group([tmp_path / "k.json"]))
    assert "torch.float32 on cpu\n" in out and "torch.float32 on cuda (NVIDIA Fake GPU)" in out
    assert "| fastsr | cpu | 3.600 | 4.000 | - | - | 1.0 | 2.00 | - |" in out
    assert "| fastsr | cuda | 0.019 | 0.020 | 0.019-0.021 | 12 | 200.0 | 2.00 | - |" in out
    assert "| eager | cuda | 0.038 | 0.040 | 0.039-0.042 | 12 | 100.0 | 1.00 | - |" in out

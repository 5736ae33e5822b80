import sys

import pytest

from fastsr.perf import allocator_tuned, tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_allocator_applies():
    assert tune_allocator() is True
    assert allocator_tuned()


@pytest.mark.parametrize("bad", [0, -5, 2**40, 1.5, "1"])
def test_tune_allocator_rejects_bad_threshold(bad):
    with pytest.raises(ValueError, match="trim_threshold"):
        tune_allocator(bad)


# ----------------------------------------------------------------------------- time_fn
import math  # noqa: E402

import torch  # noqa: E402

from fastsr.perf import MIB, CudaEventClock, Timing, WallClock, time_fn  # noqa: E402


class FakeClock:
    """A seconds counter that each call of the timed function advances by the next duration."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _stepping_fn(clock, durations):
    it = iter(durations)
    calls = []

    def fn():
        calls.append(clock.now)
        clock.now += next(it)

    return fn, calls


def test_time_fn_statistics_with_a_fake_clock():
    clock = FakeClock()
    warm = [50.0, 60.0]  # slow first calls (compilation) must not enter the statistics
    timed = [0.5, 0.1, 0.3, 0.9, 0.2, 0.4, 0.6, 0.8, 0.7, 1.0]
    fn, calls = _stepping_fn(clock, warm + timed)
    t = time_fn(fn, "cpu", iters=10, warmup=2, clock=WallClock(clock))
    assert len(calls) == 12 and t.n == 10 and t.device == "cpu" and t.peak_mib is None
    assert [round(x, 9) for x in t.times_s] == timed
    # sorted 0.1..1.0: position q*(n-1) interpolated linearly (numpy's default)
    assert math.isclose(t.min_s, 0.1)
    assert math.isclose(t.median_s, 0.55)
    assert math.isclose(t.p20_s, 0.28)
    assert math.isclose(t.p80_s, 0.82)


def test_timing_statistics_match_numpy():
    import numpy as np

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 50):
        ts = rng.exponential(size=n).tolist()
        t = Timing.from_times(ts)
        for got, q in ((t.p20_s, 20), (t.median_s, 50), (t.p80_s, 80)):
            assert math.isclose(got, float(np.percentile(ts, q)), rel_tol=1e-12)
        assert t.min_s == min(ts) and t.n == n


@pytest.mark.parametrize("times", [[], [0.1, -0.2], [float("nan")], [float("inf")]])
def test_timing_rejects_bad_times(times):
    with pytest.raises(ValueError, match="times"):
        Timing.from_times(times)


@pytest.mark.parametrize("kw,needle", [({"iters": 0}, "iters"), ({"iters": 2.0}, "iters"), ({"warmup": -1}, "warmup"),
                                       ({"device": "meta"}, "device"), ({"device": "gpu"}, "device")])
def test_time_fn_rejects_bad_arguments(kw, needle):
    with pytest.raises(ValueError, match=needle):
        time_fn(lambda: None, **kw)
    with pytest.raises(ValueError, match="fn"):
        time_fn(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_time_fn_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        time_fn(lambda: None, "cuda")


class _FakeCuda:
    """Stands in for torch.cuda: events stamped from a fake GPU timeline, and a log of the
    calls, to check the structure of the CUDA path (events around each call, one synchronize
    after the timed calls, peak memory reset after the warm-up)."""

    def __init__(self):
        self.log = []
        self.gpu_ms = 0.0
        test = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.t = None

            def record(self):
                test.log.append("record")
                self.t = test.gpu_ms

            def elapsed_time(self, end):
                assert "synchronize" in test.log, "elapsed_time before a synchronize"
                return end.t - self.t

        self.Event = Event

    def is_available(self):
        return True

    def synchronize(self, device=None):
        self.log.append("synchronize")

    def reset_peak_memory_stats(self, device=None):
        self.log.append("reset_peak")

    def max_memory_allocated(self, device=None):
        return 3 * MIB + MIB // 2


def test_time_fn_cuda_path_with_fake_events(monkeypatch):
    fake = _FakeCuda()
    for name in ("Event", "is_available", "synchronize", "reset_peak_memory_stats", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    durations_ms = iter([9.0, 4.0, 2.0, 3.0, 1.0])

    def fn():
        fake.log.append("call")
        fake.gpu_ms += next(durations_ms)

    t = time_fn(fn, "cuda", iters=4, warmup=1)
    assert fake.log == (["call", "synchronize", "reset_peak"] + ["record", "call", "record"] * 4 + ["synchronize"])
    assert [round(x, 9) for x in t.times_s] == [0.004, 0.002, 0.003, 0.001]
    assert math.isclose(t.median_s, 0.0025) and math.isclose(t.min_s, 0.001)
    assert t.peak_mib == 3.5 and t.device == "cuda"
    assert isinstance(CudaEventClock("cuda", 1), CudaEventClock)

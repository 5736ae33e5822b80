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

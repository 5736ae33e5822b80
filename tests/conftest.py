import os

import torch

# The Triton kernels run on CPU tensors only under the interpreter, which must be switched
# on before any @triton.jit decorator runs (i.e. before fastsr.kernels is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: OpenMP threads only add overhead (and stall when the cores are shared).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of three 96 x 96 PNG crops of the sample photographs (a tiny training set)."""
    from PIL import Image

    from fastsr.data import sample_images

    root = tmp_path_factory.mktemp("photos")
    for name, x in sample_images("all")[:3]:
        h, w = x.shape[-2:]
        x = x[:, (h - 96) // 2:(h + 96) // 2, (w - 96) // 2:(w + 96) // 2]
        Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()).save(root / f"{name}.png")
    return root

"""VGG19 feature extractor for the perceptual and texture losses, loaded from a local file.

:class:`VGG19Features` has exactly the layers, indices and parameter names of torchvision's
``vgg19().features`` (``0.weight``, ``0.bias``, ``2.weight``, ... ``34.bias``), so a
torchvision state dict loads unchanged -- both the full-model file
(``vgg19-dcbb9e9d.pth``, keys ``features.N.*`` plus ``classifier.*``, which is ignored) and
a ``features``-only one. Layers are addressed by the names of the papers:

    conv{b}_{i}  the i-th 3x3 convolution of block b, before its ReLU (ESRGAN's features)
    relu{b}_{i}  the same after the ReLU (SRGAN's phi_{5,4} is relu5_4)
    pool{b}      the 2x2 max-pool ending block b (the sharpness GAN fuses pool2 and pool5)

Blocks have 2, 2, 4, 4, 4 convolutions (64, 128, 256, 512, 512 channels). The ReLUs are not
in-place, so a pre-activation feature is not overwritten.

Weights are never downloaded. :func:`load_vgg19_state_dict` reads, in order: the ``path``
given, the file named by the environment variable ``FASTSR_VGG19_WEIGHTS``, and
torchvision's cache file ``<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth`` if it is
already there. ``.safetensors`` files are read with safetensors; anything else with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

ENV_VAR = "FASTSR_VGG19_WEIGHTS"
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


def _layer_names() -> list[str]:
    names = []
    for b, (n, _) in enumerate(_BLOCKS, start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


LAYER_NAMES: tuple[str, ...] = tuple(_layer_names())
"""The 37 layer names in order; ``LAYER_NAMES[i]`` is torchvision's ``features[i]``."""


def layer_stride(name: str) -> int:
    """Downsampling factor of a layer's output relative to the input image (1, 2, ..., 32)."""
    _check_layer(name, "layer_stride")
    block = int(name[4])  # conv{b}_i, relu{b}_i, pool{b}
    return 2 ** (block if name.startswith("pool") else block - 1)


def _check_layer(name: str, fn: str) -> None:
    if name not in LAYER_NAMES:
        raise ValueError(
            f"{fn}: unknown VGG19 layer {name!r}; expected conv{{b}}_{{i}}, relu{{b}}_{{i}} or pool{{b}} "
            f"(blocks 1-5 with 2, 2, 4, 4, 4 convolutions), e.g. 'conv5_4', 'relu2_2', 'pool5'"
        )


class VGG19Features(nn.Sequential):
    """VGG19's convolutional part (Simonyan & Zisserman 2015, configuration E), laid out as
    torchvision's ``vgg19().features``; randomly initialised (load weights with
    :meth:`load_state_dict` or :func:`load_vgg19_state_dict`).

    :meth:`extract` returns named intermediate features. Input: (N, 3, H, W) float,
    already normalised the way the weights expect (ImageNet mean/std for torchvision's).
    """

    def __init__(self) -> None:
        layers = []
        c_in = 3
        for n, c in _BLOCKS:
            for _ in range(n):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = c
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        super().__init__(*layers)

    def extract(self, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """Features of ``layers`` (names of :data:`LAYER_NAMES`), running the network only
        up to the deepest one. Returns ``{name: (N, C_l, H / s, W / s) tensor}``."""
        wanted = set(layers)
        for name in wanted:
            _check_layer(name, "VGG19Features.extract")
        last = max(LAYER_NAMES.index(n) for n in wanted)
        out = {}
        for i in range(last + 1):
            x = self[i](x)
            if LAYER_NAMES[i] in wanted:
                out[LAYER_NAMES[i]] = x
        return out


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"VGG19 weights {path}: expected a state dict, got {type(sd).__name__}")
    return sd


def _missing_message() -> str:
    return (
        "VGG19 weights not found. fastsr never downloads weights; give it a local file, either\n"
        "  PerceptualLoss(..., weights='/path/to/vgg19.pth')  (or TextureLoss / load_vgg19_state_dict), or\n"
        f"  export {ENV_VAR}=/path/to/vgg19.pth\n"
        "The file may be torchvision's ImageNet VGG19 (vgg19-dcbb9e9d.pth, the IMAGENET1K_V1 weights,\n"
        "which torchvision caches in ~/.cache/torch/hub/checkpoints/ once downloaded on a machine with\n"
        "network access) or a .safetensors file with the same keys (features.N.weight/bias or N.weight/bias),\n"
        "e.g. written by safetensors.torch.save_file(torchvision.models.vgg19(weights='IMAGENET1K_V1')"
        ".features.state_dict(), 'vgg19.safetensors')."
    )


def find_vgg19_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: ``path``, else ``$FASTSR_VGG19_WEIGHTS``, else torchvision's
    cached ``vgg19-dcbb9e9d.pth``. Raises FileNotFoundError (with instructions) when none
    exists, or when an explicitly given path does not."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"VGG19 weights file {str(p)!r} does not exist.\n" + _missing_message())
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={env!r} does not name a file.\n" + _missing_message())
        return p
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if cached.is_file():
        return cached
    raise FileNotFoundError(_missing_message())


def load_vgg19_state_dict(path: str | os.PathLike | None = None) -> "OrderedDict[str, torch.Tensor]":
    """Read VGG19 weights from a local file (see :func:`find_vgg19_weights`) and return the
    state dict of :class:`VGG19Features` (keys ``N.weight``/``N.bias``).

    Accepts torchvision's full-model state dict (``features.`` prefix stripped,
    ``classifier.*`` dropped) or a features-only one, as ``.pth`` or ``.safetensors``.

    Raises:
        FileNotFoundError: no file (the message says how to provide one).
        ValueError: the file lacks VGG19 convolution weights, has unexpected keys, or
            shapes that are not VGG19's.
    """
    p = find_vgg19_weights(path)
    raw = _read(p)
    sd = OrderedDict()
    for k, v in raw.items():
        if k.startswith("classifier."):
            continue
        k = k[len("features."):] if k.startswith("features.") else k
        sd[k] = v
    with torch.device("meta"):  # shapes only
        ref = VGG19Features().state_dict()
    missing = [k for k in ref if k not in sd]
    unexpected = [k for k in sd if k not in ref]
    if missing or unexpected:
        raise ValueError(
            f"VGG19 weights {p}: not a torchvision vgg19 state dict (missing keys {missing[:6]}"
            f"{'...' if len(missing) > 6 else ''}, unexpected keys {unexpected[:6]}{'...' if len(unexpected) > 6 else ''})"
        )
    for k, v in ref.items():
        if sd[k].shape != v.shape:
            raise ValueError(f"VGG19 weights {p}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")
        sd[k] = sd[k].to(torch.float32)
    return sd

"""Old home of ``load_generator`` and ``upscale_image``, kept for one release: they live in
:mod:`fastsr.models.checkpoint` and :mod:`fastsr.evaluate`; importing them from here warns."""
from fastsr._deprecation import moved_names

__getattr__ = moved_names(__name__, {"load_generator": "fastsr.models.checkpoint:load_generator",
                                     "upscale_image": "fastsr.evaluate:upscale_image"})

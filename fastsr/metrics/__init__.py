"""Image quality metrics with the SR papers' conventions (MATLAB / BasicSR): PSNR in dB and
SSIM, on RGB or on the BT.601 Y channel, with ``crop_border``, in float64, per image; and
the colour cast (mean signed error per channel in 8-bit levels, :func:`channel_mean_error`);
the checkerboard energy of a sub-pixel upsampler on smooth regions
(:func:`checkerboard_energy`, :mod:`fastsr.metrics.checkerboard`); and NIQE by BasicSR's
code (:func:`niqe`).
The conventions and their relation to BasicSR are stated in
:mod:`fastsr.metrics.psnr_ssim`."""
from fastsr.metrics.checkerboard import block_energies, checkerboard_energy, periodic_component, smooth_blocks
from fastsr.metrics.color import rgb_to_ycbcr, ycbcr_to_rgb
from fastsr.metrics.niqe import niqe
from fastsr.metrics.psnr_ssim import channel_mean_error, psnr, psnr_ssim_lists, ssim
from fastsr.metrics.table import format_table

__all__ = ["psnr", "ssim", "channel_mean_error", "psnr_ssim_lists", "rgb_to_ycbcr", "ycbcr_to_rgb", "format_table",
           "checkerboard_energy", "periodic_component", "block_energies", "smooth_blocks", "niqe"]

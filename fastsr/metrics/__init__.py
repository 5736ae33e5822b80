"""Image quality metrics with the SR papers' conventions (MATLAB / BasicSR): PSNR in dB and
SSIM, on RGB or on the BT.601 Y channel, with ``crop_border``, in float64, per image.
The conventions and their relation to BasicSR are stated in
:mod:`fastsr.metrics.psnr_ssim`."""
from fastsr.metrics.color import rgb_to_ycbcr, ycbcr_to_rgb
from fastsr.metrics.psnr_ssim import psnr, psnr_ssim_lists, ssim
from fastsr.metrics.table import format_table

__all__ = ["psnr", "ssim", "psnr_ssim_lists", "rgb_to_ycbcr", "ycbcr_to_rgb", "format_table"]

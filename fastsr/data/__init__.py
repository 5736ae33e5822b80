"""Data for SR training and evaluation: image I/O, MATLAB bicubic, datasets, sample photos.

Importing this package is cheap (Pillow, numpy, torch; scikit-image only when
:func:`sample_images` is called).
"""
from fastsr.data.datasets import (HRFolderDataset, HRImageDataset, PairedFolderDataset, augment, degrade,
                                  mod_crop)
from fastsr.data.imresize import cubic_kernel, imresize, imresize_integer, resize_matrix
from fastsr.data.io import (IMAGE_EXTENSIONS, ImageData, ImageReadError, ImageTooLargeError, list_images, load_image,
                            read_image, save_image, write_image)
from fastsr.data.samplers import IterationBatchSampler
from fastsr.data.samples import SAMPLE_TRAIN, SAMPLE_VAL, sample_images

__all__ = ["HRFolderDataset", "HRImageDataset", "PairedFolderDataset", "IterationBatchSampler", "augment",
           "degrade", "mod_crop", "imresize", "imresize_integer", "resize_matrix", "cubic_kernel", "read_image", "write_image",
           "list_images", "ImageReadError", "ImageTooLargeError", "ImageData", "load_image", "save_image", "IMAGE_EXTENSIONS", "sample_images", "SAMPLE_TRAIN", "SAMPLE_VAL"]

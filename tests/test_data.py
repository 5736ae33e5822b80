"""Data pipeline: MATLAB bicubic, image reading modes, datasets, sampler."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fastsr.data import (HRFolderDataset, HRImageDataset, ImageReadError, IterationBatchSampler,
                         PairedFolderDataset, cubic_kernel, imresize, read_image, resize_matrix, sample_images)


def test_cubic_kernel_values():
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)
    # Keys a=-0.5: k(0)=1, k(0.5)=0.5625, k(1)=0, k(1.5)=-0.0625, k(2)=0
    assert torch.allclose(cubic_kernel(x), torch.tensor([1, 0.5625, 0, -0.0625, 0, 0], dtype=torch.float64))


@pytest.mark.parametrize("n_in,n_out,scale", [(16, 4, 0.25), (17, 5, 0.25), (5, 20, 4.0), (9, 3, 1 / 3)])
def test_resize_matrix_rows_sum_to_one(n_in, n_out, scale):
    m = resize_matrix(n_in, n_out, scale)
    assert m.shape == (n_out, n_in)
    assert torch.allclose(m.sum(1), torch.ones(n_out, dtype=torch.float64), atol=1e-12)


def test_imresize_preserves_constants_and_ramps():
    c = torch.full((3, 23, 17), 0.37)
    assert torch.allclose(imresize(c, 0.25), torch.full((3, 6, 5), 0.37), atol=1e-6)
    # interior of a linear ramp is reproduced exactly (symmetric, normalised kernel)
    ramp = torch.arange(64, dtype=torch.float64)[None, None, :].expand(1, 8, 64).clone()
    out = imresize(ramp, 0.25)[0, 0]
    centres = torch.arange(16, dtype=torch.float64) * 4 + 1.5  # 0-based input coordinate of output centres
    assert torch.allclose(out[3:-3], centres[3:-3], atol=1e-9)


def test_imresize_matches_direct_formula():
    # output pixel 3 (1-based) of a x4 downsample, from MATLAB's definition: centre
    # u = 3 / 0.25 + 0.5 * (1 - 4) = 10.5, antialiased weights 0.25 * k(0.25 * (u - i)), normalised
    torch.manual_seed(0)
    x = torch.rand(1, 32, 32, dtype=torch.float64)
    idx = torch.arange(1, 33, dtype=torch.float64)
    w = 0.25 * cubic_kernel((10.5 - idx) * 0.25)
    w = w / w.sum()
    assert torch.allclose(resize_matrix(32, 8, 0.25)[2], w, atol=1e-12)
    out = imresize(x, 0.25)
    expected = w @ x[0] @ w  # pixel (3, 3): the same weights along both axes
    assert torch.allclose(out[0, 2, 2], expected, atol=1e-12)


def test_imresize_close_to_pil_bicubic():
    img = sample_images("val")[0][1][:, :296, :448]  # multiple of 4: PIL then uses the same ratio
    ours = imresize(img, 0.25).clamp(0, 1)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    h, w = ours.shape[-2:]
    pil = np.asarray(Image.fromarray(arr).resize((w, h), Image.BICUBIC)).astype(np.float32) / 255
    diff = np.abs(ours.permute(1, 2, 0).numpy() - pil)
    # PIL is also antialiased a=-0.5 cubic but differs at borders/rounding: loose agreement only
    assert diff.mean() < 0.005


def test_imresize_errors():
    with pytest.raises(TypeError, match="floating"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match="scale"):
        imresize(torch.zeros(3, 8, 8), 0)


def test_read_image_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 128, np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    g16 = (np.arange(120, dtype=np.uint16).reshape(10, 12) * 500)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    x = read_image(tmp_path / "a.png")
    assert x.shape == (3, 10, 12) and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    g = read_image(tmp_path / "gray.png")
    assert g.shape == (3, 10, 12) and torch.equal(g[0], g[2])
    c, a = read_image(tmp_path / "rgba.png", keep_alpha=True)
    assert c.shape == (3, 10, 12) and a.shape == (1, 10, 12) and abs(a.mean().item() - 128 / 255) < 1e-6
    h = read_image(tmp_path / "g16.png")
    assert h.shape == (3, 10, 12) and abs(h[0, -1, -1].item() - 119 * 500 / 65535) < 1e-6
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(tmp_path / "bad.png")


def test_hr_folder_dataset(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(tmp_path / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "small.bmp")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="broken.png"):
        ds = HRFolderDataset(tmp_path, scale=4, crop_size=32)
    assert len(ds) == 3 and sorted(ds.names) == ["a", "small", "sub/b"]
    for i in range(3):
        item = ds[(i, (0, i))]
        assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
        assert 0 <= item["lr"].min() and item["lr"].max() <= 1
    # the per-sample seed fixes the crop and augmentation
    assert torch.equal(ds[(0, (5, 7))]["hr"], ds[(0, (5, 7))]["hr"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.warns(UserWarning, match="smaller"):
            ds2 = HRFolderDataset(tmp_path, scale=4, crop_size=32, small_images="skip")
    assert len(ds2) == 2
    with pytest.raises(ValueError, match="multiple of scale"):
        HRFolderDataset(tmp_path, scale=4, crop_size=30)


def test_lr_is_matlab_bicubic_of_hr():
    imgs = sample_images("val")
    ds = HRImageDataset([x for _, x in imgs], scale=4, crop_size=48, augment=False)
    item = ds[(0, (3, 3))]
    assert torch.allclose(item["lr"], imresize(item["hr"], 0.25).clamp(0, 1), atol=1e-6)


def test_paired_folder_dataset(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    for n in ("0801", "0802"):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(tmp_path / "hr" / f"{n}.png")
        Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(tmp_path / "lr" / f"{n}x4.png")
    ds = PairedFolderDataset(tmp_path / "lr", tmp_path / "hr", scale=4)
    assert len(ds) == 2 and ds[0]["hr"].shape == (3, 32, 40) and ds[0]["lr"].shape == (3, 8, 10)
    dsc = PairedFolderDataset(tmp_path / "lr", tmp_path / "hr", scale=4, crop_size=16, augment=True)
    it = dsc[(1, (0, 1))]
    assert it["hr"].shape == (3, 16, 16) and it["lr"].shape == (3, 4, 4)
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(tmp_path / "hr" / "0803.png")
    with pytest.raises(ValueError, match="0803"):
        PairedFolderDataset(tmp_path / "lr", tmp_path / "hr", scale=4)


def test_sample_images_split():
    train, val = sample_images("train"), sample_images("val")
    assert {n for n, _ in train}.isdisjoint({n for n, _ in val}) and len(train) >= 5 and len(val) >= 2
    for _, x in train + val:
        assert x.dtype == torch.float32 and x.shape[0] == 3 and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="split"):
        sample_images("test")


def test_sampler_stream_independent_of_world_and_resume():
    full = [k for b in IterationBatchSampler(5, 4, seed=3, start_iter=0, total_iters=6) for k in b]
    resumed = [k for b in IterationBatchSampler(5, 4, seed=3, start_iter=2, total_iters=6) for k in b]
    assert resumed == full[8:]
    r0 = list(IterationBatchSampler(5, 4, seed=3, start_iter=0, total_iters=6, rank=0, world=2))
    r1 = list(IterationBatchSampler(5, 4, seed=3, start_iter=0, total_iters=6, rank=1, world=2))
    assert [k for a, b in zip(r0, r1) for k in a + b] == full
    # every image once per epoch
    assert sorted(k[0] for k in full[:5]) == list(range(5))
    with pytest.raises(ValueError, match="divisible"):
        IterationBatchSampler(5, 3, seed=0, start_iter=0, total_iters=1, world=2)


def test_dataloader_workers_and_distributed_sampler():
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    imgs = sample_images("val")
    ds = HRImageDataset([x for _, x in imgs], scale=2, crop_size=16)
    sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=True, seed=0)
    batches = list(DataLoader(ds, batch_size=1, sampler=sampler, num_workers=2))
    assert len(batches) == 1 and batches[0]["hr"].shape == (1, 3, 16, 16)
    bs = IterationBatchSampler(len(ds), 2, seed=1, start_iter=0, total_iters=2)
    a = [b["hr"] for b in DataLoader(ds, batch_sampler=bs, num_workers=0)]
    b = [b["hr"] for b in DataLoader(ds, batch_sampler=bs, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))

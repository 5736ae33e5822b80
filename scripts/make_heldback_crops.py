"""Cut the small crops of the corpus's held-back photographs that the tests keep
(``tests/data/heldback/``): the shipped model's regression tests on photographs it never saw.

    PYTHONPATH=$PWD python scripts/build_corpus.py --out data/corpus
    PYTHONPATH=$PWD python scripts/make_heldback_crops.py --corpus data/corpus

Each validation photograph of the corpus (``scripts/corpus_photos.json``, split ``val``,
chosen before any training) gives one crop: the centre ``--size`` x ``--size`` pixels of the
corpus PNG (no choice by content, so no crop is picked to flatter a model). The crops are
PNG (lossless); ``LICENSES.json`` records for each its source package, path, copyright and
licence (all allow redistribution), the corpus file's SHA-256 and the crop box.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "heldback"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus", help="build_corpus.py's output folder")
    ap.add_argument("--size", type=int, default=224, help="crop side, px (a multiple of 4)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.size % 4 or args.size < 32:
        ap.error(f"--size must be a multiple of 4 and at least 32, got {args.size}")
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for f in manifest["files"]:
        if f["split"] != "val":
            continue
        src = args.corpus / f["file"]
        data = src.read_bytes()
        if hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise SystemExit(f"{src}: SHA-256 differs from the manifest's; rebuild the corpus")
        img = Image.open(src).convert("RGB")
        w, h = img.size
        left, top = (w - args.size) // 2, (h - args.size) // 2
        box = (left, top, left + args.size, top + args.size)
        name = Path(f["file"]).stem + ".png"
        img.crop(box).save(args.out / name, optimize=True)
        records.append({"file": name, "crop_box": list(box), "corpus_file": f["file"], "corpus_sha256": f["sha256"],
                        **{k: f[k] for k in ("id", "package", "package_version", "path", "source", "copyright",
                                             "license")}})
        print(f"{name}: {box} of {f['file']} ({f['license']})")
    (args.out / "LICENSES.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

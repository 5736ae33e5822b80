"""The committed training-corpus list (scripts/corpus_photos.json) is consistent, and the
build script's image steps do what its docstring says. No network."""
import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts" / "build_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_corpus_list_is_consistent(build):
    doc = build.load_list()
    photos = doc["photos"]
    train = {p["id"] for p in photos if p["split"] == "train"}
    val = {p["id"] for p in photos if p["split"] == "val"}
    assert not train & val and len(train) + len(val) == len(photos)
    assert len(val) >= 0.1 * len(photos) and len(train) >= 20
    for p in photos:
        assert p["license"] in build.LICENSES and p["copyright"].strip(), p["id"]
        assert len(p["sha256"]) == 64 and p["package"] in doc["packages"], p["id"]
    # distinct source files and distinct output names
    assert len({(p["package"], p["path"]) for p in photos}) == len(photos)
    assert len({build.file_name(p["id"]) for p in photos}) == len(photos)
    for pkg in doc["packages"].values():
        assert pkg["version"] and len(pkg["sha256"]) == 64 and pkg["source"].startswith("https://")


def test_corpus_list_checks_catch_mistakes(build, tmp_path):
    doc = json.loads((ROOT / "scripts" / "corpus_photos.json").read_text())
    bad = json.loads(json.dumps(doc))
    bad["photos"].append(dict(bad["photos"][0], split="val"))  # the same photo in both splits
    (tmp_path / "dup.json").write_text(json.dumps(bad))
    with pytest.raises(build.CorpusError, match="listed twice"):
        build.load_list(tmp_path / "dup.json")
    bad = json.loads(json.dumps(doc))
    del bad["photos"][3]["license"]
    (tmp_path / "nolicence.json").write_text(json.dumps(bad))
    with pytest.raises(build.CorpusError, match="license"):
        build.load_list(tmp_path / "nolicence.json")
    bad = json.loads(json.dumps(doc))
    for p in bad["photos"]:
        p["split"] = "train"
    (tmp_path / "noval.json").write_text(json.dumps(bad))
    with pytest.raises(build.CorpusError, match="held back"):
        build.load_list(tmp_path / "noval.json")


def test_downscale_keeps_aspect_and_never_upscales(build):
    big = Image.new("L", (3000, 2000), 128)
    out = build.downscale(big, 1024)
    assert out.size == (1024, 683) and out.mode == "RGB"
    small = Image.new("RGB", (500, 300), (1, 2, 3))
    assert build.downscale(small, 1024).size == (500, 300)
    assert build.file_name("plasma/Kite") == "plasma_Kite.png"

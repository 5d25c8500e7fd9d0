"""Tests of convis_jax.evaluation.datasets on tiny folders made here."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convis_jax.core.wordnet import load_wordnet
from convis_jax.errors import ConceptError, InputError
from convis_jax.evaluation import datasets
from convis_jax.evaluation.boxes import box_iou


@pytest.fixture(scope="module")
def wordnet():
    return load_wordnet()


def write_image(path: Path, size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path)


# ---------------------------------------------------------------------------
# CUB-200-2011

CUB_IMAGES = {
    1: "001.Black_footed_Albatross/Black_Footed_Albatross_0001.jpg",
    2: "001.Black_footed_Albatross/Black_Footed_Albatross_0002.jpg",
    3: "002.Laysan_Albatross/Laysan Albatross 0003.png",  # a space in the name
}
CUB_BOXES = {1: "60.0 27.0 325.0 304.0", 2: "139.0 30.0 153.0 264.0", 3: "14.5 112.0 388.0 186.25"}


def make_cub(root: Path, *, split=True) -> Path:
    for rel in CUB_IMAGES.values():
        write_image(root / "images" / rel)
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in CUB_IMAGES.items()))
    (root / "bounding_boxes.txt").write_text("".join(f"{i} {b}\n" for i, b in CUB_BOXES.items()))
    if split:
        (root / "train_test_split.txt").write_text("1 1\n2 0\n3 0\n")
    return root


def test_read_cub(tmp_path):
    records = datasets.read_cub(make_cub(tmp_path))
    assert [r.image_id for r in records] == [1, 2, 3]
    assert [r.class_name for r in records] == [
        "001.Black_footed_Albatross",
        "001.Black_footed_Albatross",
        "002.Laysan_Albatross",
    ]
    assert [r.is_train for r in records] == [True, False, False]
    assert records[2].path == tmp_path / "images" / CUB_IMAGES[3]
    assert all(r.path.is_file() for r in records)
    # (x, y, width, height) -> (x0, y0, x1, y1), exclusive ends.
    assert records[0].boxes == ((60.0, 27.0, 385.0, 331.0),)
    assert records[2].boxes == ((14.5, 112.0, 402.5, 298.25),)
    # The boxes feed the metrics as they are.
    iou = box_iou(np.asarray(records[0].boxes), np.array([[60, 27, 385, 331]]))
    assert iou[0, 0] == 1.0


def test_read_cub_split(tmp_path):
    root = make_cub(tmp_path)
    assert [r.image_id for r in datasets.read_cub(root, split="train")] == [1]
    assert [r.image_id for r in datasets.read_cub(root, split="test")] == [2, 3]
    with pytest.raises(InputError, match="split"):
        datasets.read_cub(root, split="val")


def test_read_cub_without_split_file(tmp_path):
    root = make_cub(tmp_path, split=False)
    assert [r.is_train for r in datasets.read_cub(root)] == [None, None, None]
    with pytest.raises(InputError, match="train_test_split.txt"):
        datasets.read_cub(root, split="test")


def test_read_cub_several_boxes_per_image(tmp_path):
    root = make_cub(tmp_path)
    with (root / "bounding_boxes.txt").open("a") as f:
        f.write("2 0 0 10 20\n")
    records = datasets.read_cub(root)
    assert records[1].boxes == ((139.0, 30.0, 292.0, 294.0), (0.0, 0.0, 10.0, 20.0))


def _append(name, text):
    def change(root):
        with (root / name).open("a") as f:
            f.write(text)

    return change


def _rewrite(name, text):
    def change(root):
        (root / name).write_text(text)

    return change


def _remove(rel):
    def change(root):
        path = root / rel
        if path.is_dir():
            for child in sorted(path.rglob("*"), reverse=True):
                child.unlink() if child.is_file() else child.rmdir()
            path.rmdir()
        else:
            path.unlink()

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_remove("images.txt"), "images.txt"),
        (_remove("bounding_boxes.txt"), "bounding_boxes.txt"),
        (_remove("images"), "images/"),
        (_remove("images/" + CUB_IMAGES[2]), "1 missing: 001.Black_footed_Albatross/Black_Footed_Albatross_0002.jpg"),
        (_append("images.txt", "x foo.jpg\n"), r"images.txt:4: expected an integer image id"),
        (_append("images.txt", "2 other.jpg\n"), r"images.txt:4: .*id 2 again"),
        (_append("images.txt", "4\n"), r"images.txt:4: expected '<id> <image path>'"),
        (_append("images.txt", "4 extra.jpg\n"), r"box for every image.*ids 4"),
        (_append("bounding_boxes.txt", "1 2 3 4\n"), r"bounding_boxes.txt:4: expected '<id> <x> <y>"),
        (_append("bounding_boxes.txt", "1 2 3 four 5\n"), r"bounding_boxes.txt:4: expected a finite number, found 'four'"),
        (_append("bounding_boxes.txt", "1 2 3 nan 5\n"), "finite number"),
        (_append("bounding_boxes.txt", "9 2 3 4 5\n"), r"image id of images.txt, found 9"),
        (_append("bounding_boxes.txt", "1 2 3 0 5\n"), r"positive width and height, found 0 x 5"),
        (_rewrite("train_test_split.txt", "1 1\n2 0\n3 2\n"), r"train_test_split.txt:3: expected the flag"),
        (_rewrite("train_test_split.txt", "1 1\n2 0\n"), r"flag for every image.*ids 3"),
    ],
)
def test_read_cub_rejects_malformed_folders(tmp_path, change, message):
    root = make_cub(tmp_path)
    change(root)
    with pytest.raises(InputError, match=message):
        datasets.read_cub(root)


def test_read_cub_rejects_a_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no folder"):
        datasets.read_cub(tmp_path / "nowhere")


# ---------------------------------------------------------------------------
# ImageNet-style folders


def make_imagenet(root: Path) -> Path:
    write_image(root / "n02084071" / "b.JPEG")
    write_image(root / "n02084071" / "a.png")
    (root / "n02084071" / "notes.txt").write_text("not an image")
    write_image(root / "n02084071" / ".hidden.jpg")
    write_image(root / "n01530575" / "z.jpeg")
    write_image(root / "n02088094" / "x.jpg")
    (root / "LOC_synset_mapping.txt").write_text("n02084071 dog\n")
    (root / ".cache").mkdir()
    return root


def test_read_imagenet_folders(tmp_path, wordnet):
    root = make_imagenet(tmp_path)
    records = datasets.read_imagenet_folders(root, wordnet)
    assert [(r.path.relative_to(root).as_posix(), r.wnid, r.synset) for r in records] == [
        ("n01530575/z.jpeg", "n01530575", "brambling.n.01"),
        ("n02084071/a.png", "n02084071", "dog.n.01"),
        ("n02084071/b.JPEG", "n02084071", "dog.n.01"),
        ("n02088094/x.jpg", "n02088094", "afghan_hound.n.01"),
    ]
    # The offset really is the synset's: WordNet gives it back.
    for r in records:
        assert wordnet.synset(r.synset).offset() == int(r.wnid[1:])
    # Without a reader the bundled WordNet 3.0 is opened.
    assert datasets.read_imagenet_folders(root) == records


@pytest.mark.parametrize(
    "folder, message",
    [("dogs", "found dogs"), ("n0208407", "found n0208407"), ("n99999999", "starts no noun synset")],
)
def test_read_imagenet_folders_rejects_bad_class_names(tmp_path, wordnet, folder, message):
    root = make_imagenet(tmp_path)
    (root / folder).mkdir()
    with pytest.raises(InputError, match=message):
        datasets.read_imagenet_folders(root, wordnet)


def test_read_imagenet_folders_rejects_empty_or_missing_root(tmp_path, wordnet):
    with pytest.raises(InputError, match="found none"):
        datasets.read_imagenet_folders(tmp_path, wordnet)
    with pytest.raises(InputError, match="no folder"):
        datasets.read_imagenet_folders(tmp_path / "nowhere", wordnet)


# ---------------------------------------------------------------------------
# In-distribution test and presets


def test_is_in_distribution(wordnet):
    assert datasets.is_in_distribution("dog.n.01", "animal.n.01", wordnet)
    assert not datasets.is_in_distribution("animal.n.01", "dog.n.01", wordnet)
    assert datasets.is_in_distribution("dog.n.01", "dog.n.01", wordnet)
    # person.n.01 has two hypernyms; both paths count.
    assert datasets.is_in_distribution("person.n.01", "organism.n.01", wordnet)
    assert datasets.is_in_distribution("person.n.01", "causal_agent.n.01", wordnet)
    # The sun is an *instance* of a star: not an ordinary hypernym.
    assert wordnet.synset("star.n.01") in wordnet.synset("sun.n.01").instance_hypernyms()
    assert not datasets.is_in_distribution("sun.n.01", "star.n.01", wordnet)
    with pytest.raises(ConceptError, match="no_such_thing"):
        datasets.is_in_distribution("no_such_thing.n.01", "dog.n.01", wordnet)
    with pytest.raises(ConceptError):
        datasets.is_in_distribution("dog.n.01", "dog", wordnet)


def test_is_in_distribution_agrees_with_the_hyponym_tree(wordnet):
    # Everything below bird.n.01 (ordinary hyponyms) is ID; nothing below
    # hunting_dog.n.01 is.
    bird = wordnet.synset("bird.n.01")
    below_bird = list(bird.closure(lambda s: s.hyponyms()))
    below_dog = list(wordnet.synset("hunting_dog.n.01").closure(lambda s: s.hyponyms()))
    assert len(below_bird) > 100 and len(below_dog) > 50
    assert all(datasets.is_in_distribution(s.name(), "bird.n.01", wordnet) for s in below_bird)
    assert not any(datasets.is_in_distribution(s.name(), "bird.n.01", wordnet) for s in below_dog)


def test_ood_presets(wordnet):
    assert len(datasets.OOD_PRESETS) == 6
    assert datasets.OOD_PRESETS[5] == datasets.OodPair("aircraft.n.01", "vessel.n.02")
    for pair in datasets.OOD_PRESETS:
        id_tree = {pair.id_synset} | {
            s.name() for s in wordnet.synset(pair.id_synset).closure(lambda s: s.hyponyms())
        }
        ood_tree = {pair.ood_synset} | {
            s.name() for s in wordnet.synset(pair.ood_synset).closure(lambda s: s.hyponyms())
        }
        assert not id_tree & ood_tree, pair


def test_split_ood(tmp_path, wordnet):
    records = datasets.read_imagenet_folders(make_imagenet(tmp_path), wordnet)
    split = datasets.split_ood(records, datasets.OOD_PRESETS[1], wordnet)  # bird / hunting dog
    assert [r.synset for r in split.in_distribution] == ["brambling.n.01"]
    assert [r.synset for r in split.out_of_distribution] == ["afghan_hound.n.01"]  # dog.n.01 is neither
    with pytest.raises(InputError, match="disjoint"):
        datasets.split_ood(records, datasets.OodPair("animal.n.01", "dog.n.01"), wordnet)

"""The atlas: maps from stored window embeddings equal `occlusion_maps`; the store's
resume, append and robustness; rankings against plain references."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convis_jax.errors import InputError
from tests.reference import plain_subtree_min

CONCEPTS = ["dog.n.01", "bird.n.01", "animal.n.01", "car.n.01", "entity.n.01"]
WORDS = ["dog", "bird", "car", "circle", "square", "triangle"]


def write_photos(folder: Path, shapes=((200, 260), (224, 224), (300, 180))) -> None:
    """Scenes cut to photos of different shapes, one in a sub-folder, plus files to skip."""
    from convis_jax.scenes import render_scene

    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / ".hidden").mkdir(exist_ok=True)
    for i, (h, w) in enumerate(shapes):
        scene = render_scene(i, size=320).image[:h, :w]
        Image.fromarray(scene).save(folder / ("sub" if i == 2 else "") / f"img{i}.png")
    Image.fromarray(scene).save(folder / ".hidden" / "skipped.png")
    (folder / "notes.txt").write_text("not an image")


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """(photos folder, float32 atlas, float16 atlas) built with the bundled model."""
    from convis_jax.atlas import build_atlas
    from convis_jax.models.loading import load_clip

    root = tmp_path_factory.mktemp("bundled_atlas")
    write_photos(root / "photos")
    model = load_clip(None)
    for dtype in ("float32", "float16"):
        build_atlas(root / "photos", root / dtype, model=model, dtype=dtype, batch=2,
                    progress=False)
    return root / "photos", root / "float32", root / "float16"


@pytest.mark.parametrize("vocabulary", ["physical_objects", "custom"])
def test_bundled_model_atlas_maps_equal_occlusion_maps(bundled, vocabulary):
    from convis_jax.api import ConVis
    from convis_jax.atlas import Atlas
    from convis_jax.core.vocabulary import ConceptVocabulary

    photos, float32, float16 = bundled
    vocab = (ConceptVocabulary.from_words(WORDS) if vocabulary == "custom"
             else "physical_objects")
    exact = Atlas.open(float32, vocabulary=vocab, progress=False)
    half = Atlas.open(float16, vocabulary=vocab, progress=False)
    assert exact.image_ids == half.image_ids == ("img0.png", "img1.png", "sub/img2.png")
    assert exact.pending_ids == ()
    convis = ConVis(exact.model, vocab, progress=False)
    paths = [photos / i for i in exact.image_ids]
    named = CONCEPTS if vocabulary == "physical_objects" else ["dog", "circle", "entity.n.01"]

    # A few concepts (counted ranks), in pixels.
    want = convis.occlusion_maps(paths, named)
    got = exact.maps(exact.image_ids, named)
    assert got.shape == want.shape == (3, len(exact.vocabulary.resolve(named)), 224, 224)
    assert np.abs(got - want).max() <= 1e-5
    assert want.std(axis=(-1, -2))[:, :-1].min() > 0.01  # maps, not constants
    assert correlation(half.maps(None, named), want) >= 0.999
    # Every concept of the vocabulary (sorted ranks), in cells.
    want = convis.occlusion_cells(paths, None)
    got = exact.cells()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5
    assert correlation(half.cells(), want) >= 0.999
    # One image alone: still image i's padding noise from (seed, i).
    np.testing.assert_array_equal(exact.cells("sub/img2.png", named), exact.cells(None, named)[2:])


def test_vit_b32_shaped_atlas_maps_equal_occlusion_maps(tmp_path):
    """A random ViT-B/32-shaped vision tower (depth 1), one photo, 128-pixel windows on a
    32-pixel lattice so that the sweep stays short."""
    from convis_jax.api import ConVis
    from convis_jax.atlas import Atlas, build_atlas
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.models.loading import load_clip
    from convis_jax.testing import TINY, VIT_B32_SHALLOW, make_clip_checkpoint

    spec = dict(vision=dict(VIT_B32_SHALLOW["vision"], num_hidden_layers=1), text=TINY["text"],
                projection_dim=VIT_B32_SHALLOW["projection_dim"])
    make_clip_checkpoint(tmp_path / "model", spec, seed=5)
    write_photos(tmp_path / "photos", shapes=((240, 200),))
    model = load_clip(tmp_path / "model")
    grid = dict(window_sizes=(128,), stride=32)
    for dtype in ("float32", "float16"):
        build_atlas(tmp_path / "photos", tmp_path / dtype, model=model, dtype=dtype, batch=1,
                    progress=False, **grid)
    custom = ConceptVocabulary.from_words(WORDS)
    for vocabulary, named in (("physical_objects", CONCEPTS), (custom, None)):
        exact = Atlas.open(tmp_path / "float32", model=model, vocabulary=vocabulary,
                           progress=False)
        half = Atlas.open(tmp_path / "float16", model=model, vocabulary=vocabulary,
                          progress=False)
        want = ConVis(model, vocabulary, progress=False).occlusion_cells(
            [tmp_path / "photos" / "img0.png"], named, **grid)
        got = exact.cells(None, named)
        assert got.shape == want.shape and got.shape[-2:] == (7, 7)
        assert np.abs(got - want).max() <= 1e-5
        assert correlation(half.cells(None, named), want) >= 0.999
        assert want.std(axis=(-1, -2)).max() > 0.01


def test_counted_ranks_equal_sorted_ranks_with_ties():
    """The counting path against core.ranks + a plain subtree minimum, on quantised
    similarities full of ties."""
    import jax.numpy as jnp

    from convis_jax.core.ranks import ranks
    from convis_jax.kernels.occlusion import subtree_min_ranks
    from convis_jax.kernels.stored_windows import counted_subtree_min_ranks
    from convis_jax.kernels.sweep import ConceptRequest

    rng = np.random.default_rng(0)
    t, windows = 40, 25
    z = np.round(rng.uniform(-1, 1, (windows, t)) * 4) / 4  # 9 levels: many ties
    # A random forest: each synset's subtree is itself and later synsets.
    parents = [-1] + [int(rng.integers(0, s)) for s in range(1, t)]
    subtrees = []
    for s in range(t):
        members, frontier = [s], [s]
        while frontier:
            frontier = [c for c in range(t) if parents[c] in frontier]
            members += frontier
        subtrees.append(sorted(members))
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in subtrees])])
    members = np.concatenate(subtrees)
    want = plain_subtree_min(ranks(z), offsets, members)  # [W, T]
    concepts = np.array([0, 3, 7, 7, 39, 12, 5])
    flat, seg, k = ConceptRequest.from_subtrees(concepts, concepts, offsets, members).padded()
    args = (jnp.asarray(z, jnp.float32), jnp.asarray(flat), jnp.asarray(seg))
    counted = np.asarray(counted_subtree_min_ranks(*args, num_concepts=k))[:, :len(concepts)]
    sorted_ = np.asarray(subtree_min_ranks(*args, num_concepts=k))[:, :len(concepts)]
    np.testing.assert_array_equal(counted, want[:, concepts])
    np.testing.assert_array_equal(sorted_, want[:, concepts])


def test_rankings_against_plain_references(bundled):
    from convis_jax.api import ConVis
    from convis_jax.atlas import Atlas
    from convis_jax.core.cells import accumulate_cells, coverage
    from convis_jax.core.ranks import ranks

    photos, float32, _ = bundled
    atlas = Atlas.open(float32, vocabulary="physical_objects", progress=False)
    convis = ConVis(atlas.model, "physical_objects", progress=False)
    paths = [photos / i for i in atlas.image_ids]
    vocab = atlas.vocabulary

    scores = atlas.concept_scores()
    top = convis.top_concepts(paths, k=5)
    for n, result in enumerate(top):
        for ranking, table in ((result.flat, scores.flat), (result.hierarchical,
                                                            scores.hierarchical)):
            got = [table[n, vocab.index(name)] for name in ranking.names]
            np.testing.assert_allclose(got, ranking.scores, atol=1e-6)
    np.testing.assert_allclose(scores.flat, convis.similarity(paths), atol=1e-6)

    by_image = atlas.top_images("animal.n.01", 2)
    c = vocab.index("animal.n.01")
    want = scores.hierarchical[:, c]
    assert by_image.image_ids == tuple(np.array(atlas.image_ids)[np.argsort(-want)[:2]])
    np.testing.assert_allclose(by_image.scores, np.sort(want)[::-1][:2], atol=1e-6)

    # Map peaks: a plain NumPy loop over the stored windows of each image.
    peaks = atlas.top_images("dog.n.01", 3, by="map_peak")
    c = vocab.index("dog.n.01")
    offsets = vocab.subtree_offsets[[c, c + 1]] - vocab.subtree_offsets[c]
    members = vocab.subtree_members[vocab.subtree_offsets[c]:vocab.subtree_offsets[c + 1]]
    want = {}
    for image_id, windows in zip(atlas.image_ids, atlas.window_embeddings()):
        r = plain_subtree_min(ranks(windows @ atlas.bank.embeddings.T), offsets, members)[:, 0]
        per_size, start = [], 0
        for ny, nx in atlas.grid.lattice_shapes:
            per_size.append(r[start:start + ny * nx].reshape(ny, nx))
            start += ny * nx
        mean = 1 - accumulate_cells(tuple(per_size), atlas.grid) / coverage(atlas.grid) / len(vocab)
        want[image_id] = (mean.max(), int(np.argmax(mean)))
    order = sorted(want, key=lambda i: -want[i][0])
    assert peaks.image_ids == tuple(order)
    np.testing.assert_allclose(peaks.scores, [want[i][0] for i in order], rtol=1e-5)
    assert list(peaks.cells) == [want[i][1] for i in order]


def test_append_and_resume_keep_numbers_and_redo_only_what_is_missing(bundled, tmp_path):
    from convis_jax.api import ConVis
    from convis_jax.atlas import Atlas, build_atlas

    photos, float32, _ = bundled
    atlas_dir = tmp_path / "atlas"
    shutil.copytree(float32, atlas_dir)
    grown = tmp_path / "photos"
    shutil.copytree(photos, grown)
    Image.open(grown / "img1.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        grown / "a_new.png")  # sorts first, but is numbered after the atlas's images
    # An image "in flight" when a build died: its data written, its record not.
    records = sorted(atlas_dir.glob("part-0/done/*.json"))
    lost = json.loads(records[-1].read_text())["images"]
    records[-1].unlink()
    kept = {p: p.stat().st_mtime_ns for p in atlas_dir.glob("part-0/done/*.json")}
    opened = Atlas.open(atlas_dir, vocabulary="physical_objects", progress=False)
    assert opened.pending_ids == tuple(e["id"] for e in lost)
    with pytest.raises(InputError, match="not built yet"):
        opened.cells(lost[0]["id"], "dog")
    summary = build_atlas(grown, atlas_dir, dtype="float32", batch=2, progress=False)
    assert summary.built == len(lost) + 1 and summary.skipped == 3 - len(lost)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    atlas = Atlas.open(atlas_dir, vocabulary="physical_objects", progress=False)
    assert atlas.image_ids == ("img0.png", "img1.png", "sub/img2.png", "a_new.png")
    assert json.loads((atlas_dir / "atlas.json").read_text())["images"] == list(atlas.image_ids)
    want = ConVis(atlas.model, "physical_objects", progress=False).occlusion_cells(
        [grown / i for i in atlas.image_ids], CONCEPTS)
    assert np.abs(atlas.cells(None, CONCEPTS) - want).max() <= 1e-5
    # One image alone: the sweep numbers it as the atlas does.
    alone = ConVis(atlas.model, "physical_objects", progress=False).occlusion_cells(
        [grown / "a_new.png"], CONCEPTS, image_numbers=[3])
    assert np.abs(atlas.cells("a_new.png", CONCEPTS) - alone).max() <= 1e-5
    record = atlas.records("a_new.png")[0]
    assert (record.index, record.size, record.crop) == (3, (224, 224), (0, 0, 224))
    assert atlas.records("img0.png")[0].crop == (0, 30, 200)


def test_damaged_or_mismatched_stores_are_clear_errors(bundled, tmp_path):
    from convis_jax.atlas import Atlas, build_atlas
    from convis_jax.models.loading import load_clip
    from convis_jax.testing import make_clip_checkpoint

    photos, float32, _ = bundled
    atlas_dir = tmp_path / "atlas"
    shutil.copytree(float32, atlas_dir)
    manifest = atlas_dir / "atlas.json"

    with pytest.raises(InputError, match="another grid"):
        build_atlas(photos, atlas_dir, dtype="float32", stride=32, progress=False)
    with pytest.raises(InputError, match="another dtype"):
        build_atlas(photos, atlas_dir, dtype="float16", progress=False)
    make_clip_checkpoint(tmp_path / "other")
    other = load_clip(tmp_path / "other")
    with pytest.raises(InputError, match=r"atlas\.json.*another model"):
        build_atlas(photos, atlas_dir, model=other, dtype="float32", progress=False)
    with pytest.raises(InputError, match=r"atlas\.json' was built with model .*fingerprint"):
        Atlas.open(atlas_dir, model=other, progress=False)

    # A chunk whose bytes changed: its checksum fails, naming the file.
    chunk = next(p for p in (atlas_dir / "part-0" / "windows" / "c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[100] ^= 1
    chunk.write_bytes(bytes(data))
    atlas = Atlas.open(atlas_dir, progress=False)
    with pytest.raises(InputError, match=r"damaged .*Digest mismatch.*" + str(chunk.name)):
        atlas.cells(None, None)
    data[100] ^= 1
    chunk.write_bytes(bytes(data))

    # A damaged record, array metadata or manifest: errors naming the file.
    record = sorted(atlas_dir.glob("part-0/done/*.json"))[0]
    text = record.read_text()
    record.write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"atlas record at .*000000000\.json.*damaged file"):
        Atlas.open(atlas_dir, progress=False)
    record.write_text(text.replace("img0.png", "img9.png"))
    with pytest.raises(InputError, match="does not list it there"):
        Atlas.open(atlas_dir, progress=False)
    record.write_text(text)
    meta = atlas_dir / "part-0" / "windows" / "zarr.json"
    saved = meta.read_text()
    meta.write_text(saved.replace('"float32"', '"float16"'))
    with pytest.raises(InputError, match=r"windows/zarr\.json.*as atlas\.json says"):
        Atlas.open(atlas_dir, progress=False)
    meta.write_text("{")
    with pytest.raises(InputError, match=r"windows/zarr\.json.*missing or damaged"):
        Atlas.open(atlas_dir, progress=False)
    meta.write_text(saved)
    assert Atlas.open(atlas_dir, progress=False).cells(None, None).shape[0] == 3
    manifest.write_text(manifest.read_text()[:40])
    with pytest.raises(InputError, match=r"atlas\.json.*unreadable JSON"):
        Atlas.open(atlas_dir, progress=False)
    with pytest.raises(InputError, match="found none"):
        Atlas.open(tmp_path, progress=False)


def test_list_images_folder_and_list_file(tmp_path):
    from convis_jax.atlas import list_images
    from convis_jax.atlas.build import process_share

    write_photos(tmp_path / "photos")
    found = list_images(tmp_path / "photos")
    assert [i for i, _ in found] == ["img0.png", "img1.png", "sub/img2.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("# two photos\nphotos/img1.png\n\nphotos/sub/img2.png\n")
    assert list_images(listing) == [("photos/img1.png", tmp_path / "photos/img1.png"),
                                    ("photos/sub/img2.png", tmp_path / "photos/sub/img2.png")]
    listing.write_text("photos/img1.png\nphotos/img1.png\n")
    with pytest.raises(InputError, match="more than once"):
        list_images(listing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="found none"):
        list_images(tmp_path / "empty")
    with pytest.raises(InputError, match="no such path"):
        list_images(tmp_path / "missing")
    for n, processes in [(5, 2), (7, 3), (2, 4), (1, 1)]:
        shares = [process_share(range(n), p, processes) for p in range(processes)]
        assert sorted(sum(shares, [])) == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_host_and_device_sorts_give_the_same_maps():
    """The CPU path (NumPy ranks, subtree minima through the hierarchy's levels) against
    a plain subtree minimum and against the jitted sort path, for 40 concepts."""
    import jax.numpy as jnp

    from convis_jax.core.ranks import hierarchy_levels, subtree_min_all
    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.core.windows import window_grid
    from convis_jax.kernels.stored_windows import (
        host_cells,
        stored_cells,
        stored_similarities,
    )
    from convis_jax.kernels.sweep import ConceptRequest

    vocab = ConceptVocabulary.physical_objects()
    levels = hierarchy_levels(vocab)
    rng = np.random.default_rng(2)
    values = rng.integers(0, len(vocab), (30, len(vocab))).astype(np.int32)
    np.testing.assert_array_equal(subtree_min_all(values, levels),
                                  plain_subtree_min(values, vocab.subtree_offsets,
                                                    vocab.subtree_members))
    grid = window_grid((64, 64), (32, 16), 16)
    windows = rng.standard_normal((2, grid.n_windows, 24)).astype(np.float32)
    windows /= np.linalg.norm(windows, axis=-1, keepdims=True)
    bank = rng.standard_normal((len(vocab), 24)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=-1, keepdims=True)
    index = np.array([vocab.index(n) for n in ["entity.n.01", "animal.n.01", "dog.n.01",
                                                "artifact.n.01"]] * 10)
    members, segments, k = ConceptRequest.from_subtrees(
        index, index, vocab.subtree_offsets, vocab.subtree_members).padded()
    device = np.asarray(stored_cells(jnp.asarray(windows.astype(np.float16)), jnp.asarray(bank),
                                     jnp.asarray(members), jnp.asarray(segments), grid=grid,
                                     num_concepts=k))[:, :len(index)]
    host = host_cells(stored_similarities(jnp.asarray(windows.astype(np.float16)),
                                          jnp.asarray(bank)), grid, levels, index)
    assert host.shape == (2, 40) + grid.cells_shape
    assert np.abs(device - host).max() <= 1e-6
    assert host[:, 1:4].std(axis=(-1, -2)).min() > 0.01


def test_batch_and_chunk_default_to_the_devices_sizes(bundled, tmp_path, monkeypatch):
    """Without batch or chunk, a build asks `occlusion.sweep_sizes` (as `ConVis` does) and
    encodes that many images per call in chunks of that many windows; its store equals
    the fixture's, built with batch=2."""
    from convis_jax.atlas import Atlas, build_atlas
    from convis_jax.kernels import occlusion

    asked, calls = [], []
    monkeypatch.setattr(occlusion, "sweep_sizes",
                        lambda config, grid, rows: asked.append(rows) or (48, 3))
    real = occlusion.window_embeddings

    def spy(params, padded, *, spec, **rest):
        calls.append((padded.shape[0], spec.chunk))
        return real(params, padded, spec=spec, **rest)

    monkeypatch.setattr(occlusion, "window_embeddings", spy)
    photos, float32, _ = bundled
    build_atlas(photos, tmp_path / "atlas", dtype="float32", progress=False)
    assert calls == [(3, 48)]  # the folder's 3 images in one call of 3
    asked_by_build = list(asked)
    built, reference = (Atlas.open(folder, progress=False) for folder in (tmp_path / "atlas",
                                                                          float32))
    assert asked_by_build == [built.model.embedding_dim]
    np.testing.assert_allclose(built.cells(built.image_ids), reference.cells(built.image_ids),
                               atol=1e-6)

"""The concept index: rankings read from it equal rankings computed without it (ids, scores,
cells) for every concept; it grows with the atlas, resumes after a failure, keeps one index
per concept bank, and works on S3 with two processes."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from convis_jax.errors import InputError
from tests.atlas.conftest import free_port, keys
from tests.atlas.test_atlas_processes import finish, start_build

SCENES = 22


def _same(a, b) -> bool:
    return (a.image_ids == b.image_ids and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.cells, b.cells))


def _without_index(atlas):
    """The same atlas, answering without its index."""
    from convis_jax.atlas import Atlas

    bare = Atlas(atlas.storage, atlas.manifest, atlas._records, atlas.model, atlas.vocabulary,
                 atlas.bank, 2, progress=False)
    bare._index = None
    return bare


@pytest.fixture(scope="module")
def scenes_atlas(tmp_path_factory):
    """(photos, an atlas of SCENES synthetic scenes built with the bundled model)."""
    from convis_jax.atlas import build_atlas
    from convis_jax.scenes import render_scene

    root = tmp_path_factory.mktemp("index_atlas")
    (root / "photos").mkdir()
    for i in range(SCENES):
        Image.fromarray(render_scene(300 + i, size=224).image).save(
            root / "photos" / f"scene{i:02d}.png")
    build_atlas(root / "photos", root / "atlas", dtype="float16", batch=2, progress=False)
    return root / "photos", root / "atlas"


def test_indexed_rankings_equal_computed_ones_for_every_concept(scenes_atlas, tmp_path):
    from convis_jax.atlas import Atlas

    _, built = scenes_atlas
    shutil.copytree(built, tmp_path / "atlas")
    atlas = Atlas.open(tmp_path / "atlas", progress=False)
    bare = _without_index(atlas)
    assert atlas.concept_index is None
    summary = atlas.index()
    assert (summary.indexed, summary.covered, summary.built) == (SCENES, SCENES, SCENES)
    index = atlas.concept_index
    assert index is not None and index.covered == set(range(SCENES))
    distinct = 0
    for name in atlas.vocabulary.names:
        for by in ("image", "map_peak"):
            got, want = atlas.top_images(name, SCENES, by=by), bare.top_images(name, SCENES, by=by)
            assert _same(got, want), (name, by, got, want)
            distinct += len(set(want.scores.tolist())) > 1
        # The stored values themselves, not only their order.
        c = atlas.vocabulary.index(name)
        values, covered = index.concept(c, range(SCENES))
        assert covered.all()
        peaks = bare.top_images(name, SCENES, by="map_peak")
        order = [atlas.image_ids.index(i) for i in peaks.image_ids]
        np.testing.assert_array_equal(values[1, order], peaks.scores)
        np.testing.assert_array_equal(values[2, order].astype(np.int32), peaks.cells)
    assert distinct >= len(atlas.vocabulary)  # rankings of real, different values
    # A subset of the images, and the whole-image scores of every concept.
    subset = atlas.image_ids[3:9]
    assert _same(atlas.top_images("circle.n.01", 4, by="map_peak", image_ids=subset),
                 bare.top_images("circle.n.01", 4, by="map_peak", image_ids=subset))
    np.testing.assert_array_equal(atlas.concept_scores().hierarchical,
                                  bare.concept_scores().hierarchical)
    got, want = atlas.concept_peaks(subset), bare.concept_peaks(subset)
    np.testing.assert_array_equal(got.peak, want.peak)
    np.testing.assert_array_equal(got.cell, want.cell)


def test_index_rows_against_a_plain_loop(scenes_atlas):
    """index_rows for all concepts against core.ranks, core.cells and a per-concept loop."""
    from convis_jax.atlas import Atlas
    from convis_jax.atlas.index import index_rows
    from convis_jax.core.cells import accumulate_cells, coverage
    from convis_jax.core.ranks import ranks
    from tests.reference import plain_subtree_min

    _, built = scenes_atlas
    atlas = Atlas.open(built, progress=False)
    vocab, ids = atlas.vocabulary, atlas.image_ids[:2]
    windows, image = atlas.window_embeddings(ids), atlas.image_embeddings(ids)
    rows = index_rows(windows, image, atlas.bank.embeddings, vocab, atlas.sweep)
    bank = atlas.bank.embeddings.astype(np.float64)
    for n in range(2):
        r = plain_subtree_min(ranks(windows[n].astype(np.float32) @ atlas.bank.embeddings.T),
                              vocab.subtree_offsets, vocab.subtree_members)  # [W, T]
        for c in range(len(vocab)):
            members = vocab.subtree_members[vocab.subtree_offsets[c]:vocab.subtree_offsets[c + 1]]
            assert abs(rows.score[n, c] - (image[n] @ bank[members].T).max()) < 1e-6
            per_size, start = [], 0
            for ny, nx in atlas.grid.lattice_shapes:
                per_size.append(r[start:start + ny * nx, c].reshape(ny, nx))
                start += ny * nx
            mean = 1 - accumulate_cells(tuple(per_size), atlas.grid) / coverage(atlas.grid) / len(
                vocab)
            assert abs(rows.peak[n, c] - mean.max()) < 1e-6
            assert mean.ravel()[rows.cell[n, c]] >= mean.max() - 1e-6


def test_index_grows_with_the_atlas_and_resumes_after_a_failure(scenes_atlas, tmp_path,
                                                                monkeypatch):
    from convis_jax.atlas import Atlas, build_atlas
    from convis_jax.atlas import index as index_module
    from convis_jax.atlas.storage import Storage

    photos, built = scenes_atlas
    shutil.copytree(built, tmp_path / "atlas")
    monkeypatch.setattr(index_module, "BLOCK_BYTES", 12 * 44 * 16)  # blocks of 16 images
    atlas = Atlas.open(tmp_path / "atlas", progress=False)
    # A run that fails while recording its second block: the first block stays indexed.
    real_create, calls = Storage.create, []

    def failing_create(self, key, data):
        calls.append(key)
        if "/done/000000001" in key:
            raise KeyboardInterrupt
        return real_create(self, key, data)

    monkeypatch.setattr(Storage, "create", failing_create)
    with pytest.raises(KeyboardInterrupt):
        atlas.index()
    monkeypatch.setattr(Storage, "create", real_create)
    again = Atlas.open(tmp_path / "atlas", progress=False)
    assert again.concept_index.covered == set(range(16))
    # The rankings over a partly indexed atlas: the rest computed, the same answers.
    bare = _without_index(again)
    for by in ("image", "map_peak"):
        assert _same(again.top_images("star.n.05", SCENES, by=by),
                     bare.top_images("star.n.05", SCENES, by=by))
    summary = again.index()
    assert (summary.indexed, summary.blocks, summary.covered) == (SCENES - 16, 1, SCENES)
    # Three more photos: block 1 grows (its record is replaced), nothing else is redone.
    grown = tmp_path / "photos"
    shutil.copytree(photos, grown)
    for i in range(3):
        Image.open(grown / f"scene{i:02d}.png").transpose(Image.Transpose.ROTATE_90).save(
            grown / f"z{i}.png")
    build_atlas(grown, tmp_path / "atlas", dtype="float16", batch=2, progress=False)
    atlas = Atlas.open(tmp_path / "atlas", progress=False)
    assert atlas.concept_index.covered == set(range(SCENES))
    summary = atlas.index()
    assert (summary.indexed, summary.blocks, summary.covered) == (3, 1, SCENES + 3)
    record = json.loads((tmp_path / "atlas" / "index" / summary.key / "done" /
                         "000000001.json").read_text())
    assert record == {"block": 1, "images": list(range(16, SCENES + 3))}
    bare = _without_index(atlas)
    for name in ("circle.n.01", "shape.n.02", "star.n.05"):
        for by in ("image", "map_peak"):
            assert _same(atlas.top_images(name, 10, by=by), bare.top_images(name, 10, by=by))
    assert atlas.index().indexed == 0


def test_one_index_per_concept_bank_never_mixed(scenes_atlas, tmp_path):
    from convis_jax.atlas import Atlas
    from convis_jax.core.vocabulary import ConceptVocabulary

    _, built = scenes_atlas
    shutil.copytree(built, tmp_path / "atlas")
    lemmas = Atlas.open(tmp_path / "atlas", text="lemmas", progress=False)
    first = lemmas.index()
    small = ConceptVocabulary.from_words(["circle", "star", "heart"])
    other = Atlas.open(tmp_path / "atlas", vocabulary=small, progress=False)
    assert other.concept_index is None  # another bank: the lemma index does not answer
    second = other.index()
    assert second.key != first.key and second.indexed == SCENES
    definitions = Atlas.open(tmp_path / "atlas", progress=False)
    assert definitions.concept_index is None
    bare = _without_index(other)
    for name in other.vocabulary.names:
        assert _same(other.top_images(name, 5, by="map_peak"),
                     bare.top_images(name, 5, by="map_peak"))
    # An index folder whose description says something else is refused, not read.
    meta = tmp_path / "atlas" / "index" / second.key / "index.json"
    described = json.loads(meta.read_text())
    meta.write_text(json.dumps(dict(described, concepts=99)))
    with pytest.raises(InputError, match=r"index\.json.*another concepts"):
        Atlas.open(tmp_path / "atlas", vocabulary=small, progress=False).concept_index
    meta.write_text(json.dumps(described))
    record = next((tmp_path / "atlas" / "index" / second.key / "done").glob("*.json"))
    record.write_text('{"block": 0, "images": [999]}')
    with pytest.raises(InputError, match="outside block 0"):
        Atlas.open(tmp_path / "atlas", vocabulary=small, progress=False).concept_index


def test_two_processes_index_an_s3_atlas(tiny_checkpoint, reference, s3):
    """Built on S3, then indexed there by two processes, in blocks of 4 images (BLOCK_BYTES
    made small) so that each process has a block of the 8 photos."""
    import os
    import subprocess
    import sys

    from convis_jax.atlas import Atlas
    from tests.atlas.test_atlas_processes import ROOT

    photos, local = reference
    url = f"s3://{s3.bucket}/indexed"
    finish(start_build(photos, url, tiny_checkpoint[0], "--batch", "1"))
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    processes = [subprocess.Popen(
        [sys.executable, "-c", "import sys; import convis_jax.atlas.index as i; "
         "i.BLOCK_BYTES = 12 * 7080 * 4; from convis_jax.cli import main; sys.exit(main())",
         "atlas", "index", url, "--vocabulary", "physical_objects", "--model",
         str(tiny_checkpoint[0]), "--quiet", "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(p)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in range(2)]
    outs = [finish(p)[0] for p in processes]
    assert all("indexed 4 image(s) in 1 block(s)" in out for out in outs), outs
    done = sorted(k.rsplit("/", 1)[-1] for k in keys(s3, s3.bucket, "indexed/index/")
                  if "/done/" in k)
    assert done == ["000000000.json", "000000001.json"]
    on_s3 = Atlas.open(url, vocabulary="physical_objects", progress=False)
    assert on_s3.concept_index.covered == set(range(8))
    on_disk = _without_index(Atlas.open(local, vocabulary="physical_objects", progress=False))
    for name in ("dog.n.01", "animal.n.01", "entity.n.01", "car.n.01"):
        for by in ("image", "map_peak"):
            assert _same(on_s3.top_images(name, 8, by=by), on_disk.top_images(name, 8, by=by))

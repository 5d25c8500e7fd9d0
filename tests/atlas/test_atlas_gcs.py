"""Atlases on Google Cloud Storage, against fake-gcs-server on 127.0.0.1: built, read and
indexed through tensorstore's gcs driver, they equal a local-disk atlas.

What this stand-in cannot check: credentials (tensorstore is given a test token) and
conditional writes (it does not refuse a create over an existing object, which real GCS
does), so the safety of several writers is tested on S3 only (test_atlas_s3.py)."""

import numpy as np

from tests.atlas.test_atlas_index import _same, _without_index
from tests.atlas.test_atlas_processes import contents


def test_gcs_atlas_built_indexed_and_read_equals_a_local_one(tiny_checkpoint, reference,
                                                            gcs_server, monkeypatch):
    from convis_jax.atlas import Atlas, build_atlas

    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", gcs_server)
    monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "test-token")
    photos, local = reference
    url = "gs://atlases/runs/one"
    build_atlas(photos, url, model=str(tiny_checkpoint[0]), dtype="float32", batch=1,
                progress=False)
    atlas, records, windows, images = contents(url)
    want_atlas, want_records, want_windows, want_images = contents(local)
    assert records == want_records
    np.testing.assert_array_equal(windows, want_windows)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(atlas.cells(), want_atlas.cells())
    summary = atlas.index()
    assert summary.covered == 8
    indexed = Atlas.open(url, vocabulary=atlas.vocabulary, progress=False)
    assert indexed.concept_index.covered == set(range(8))
    bare = _without_index(want_atlas)
    for name in indexed.vocabulary.names:
        for by in ("image", "map_peak"):
            assert _same(indexed.top_images(name, 8, by=by), bare.top_images(name, 8, by=by))

"""The one sweep object: concept requests against the vocabulary's subtrees read plainly,
settings checked once, batches independent of how images are batched, and the stored
path equal to the live one."""

import numpy as np
import pytest

from convis_jax.core.images import image_sources
from convis_jax.core.vocabulary import ConceptVocabulary
from convis_jax.errors import ConceptError, InputError
from convis_jax.kernels.sweep import ConceptRequest, Sweep


@pytest.fixture(scope="module")
def vocabulary():
    return ConceptVocabulary.physical_objects()


def test_a_request_holds_each_concepts_subtree(vocabulary):
    request = ConceptRequest.of(vocabulary, ["dog.n.01", "animal.n.01", "car.n.01"])
    assert request.names == ("dog.n.01", "animal.n.01", "car.n.01")
    # A word stands for its noun synsets, as the vocabulary resolves it.
    assert ConceptRequest.of(vocabulary, "dog").names == tuple(vocabulary.resolve(["dog"]))
    for k, name in enumerate(request.names):
        # Plainly: the concept and every synset below it in the vocabulary's edges.
        below, frontier = {name}, {name}
        while frontier:
            frontier = {child for parent, child in vocabulary.edges if parent in frontier}
            below |= frontier
        got = request.members[request.offsets[k]:request.offsets[k + 1]]
        assert {vocabulary.names[i] for i in got} == below
        assert request.index[k] == vocabulary.index(name)
    assert len(ConceptRequest.of(vocabulary)) == len(vocabulary)
    with pytest.raises(ConceptError):
        ConceptRequest.of(vocabulary, ["no such concept"])


def test_padded_requests_share_compiled_sizes(vocabulary):
    small = ConceptRequest.of(vocabulary, ["dog.n.01", "cat.n.01", "car.n.01"])
    members, segments, k_padded = small.padded()
    assert k_padded == 8 and len(members) == len(segments)
    assert len(members) & (len(members) - 1) == 0  # a power of two
    real = segments < k_padded
    np.testing.assert_array_equal(members[real], small.members)
    np.testing.assert_array_equal(np.bincount(segments[real], minlength=3), np.diff(small.offsets))
    assert np.all(segments[~real] == k_padded) and np.all(members[~real] == 0)


def test_sweep_settings_are_checked_once(tiny_checkpoint):
    from convis_jax.models.loading import load_clip

    encoder = load_clip(tiny_checkpoint[0]).encoder
    sweep = Sweep.create(encoder, num_rows=10)
    assert (sweep.grid.n_windows, sweep.padding, sweep.seed) == (730, "noise", 0)
    assert Sweep.create(encoder, num_rows=10, aggregation="webapp").grid.padding == 0
    for options, message in [(dict(padding="blur"), "padding must be 'noise' or 'constant'"),
                             (dict(aggregation="max"), "aggregation must be"),
                             (dict(seed=-1), "seed must be an integer"),
                             (dict(batch=0), "batch must be a positive integer"),
                             (dict(chunk=0), "chunk")]:
        with pytest.raises(InputError, match=message):
            Sweep.create(encoder, num_rows=10, **options)


def test_batches_do_not_depend_on_batching(tiny_checkpoint):
    """Image n's padding comes from (seed, n) whatever the batch size; a short last batch
    is filled with repeats of its last image."""
    from convis_jax.core.windows import pad_squares
    from convis_jax.models.loading import load_clip

    encoder = load_clip(tiny_checkpoint[0]).encoder
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (40 + 10 * i, 50, 3), dtype=np.uint8) for i in range(3)]
    numbers = [7, 3, 11]
    want = np.concatenate([pad_squares([p], [n], 128, "noise", 5) for p, n in zip(photos, numbers)])
    for batch in (1, 2, 3):
        sweep = Sweep.create(encoder, num_rows=10, seed=5, batch=batch)
        got = [(np.asarray(padded), n)
               for padded, n, _ in sweep.batches(image_sources(photos), numbers)]
        assert [n for _, n in got] == [min(batch, 3 - i) for i in range(0, 3, batch)]
        assert all(padded.shape[0] == batch for padded, _ in got)
        np.testing.assert_array_equal(np.concatenate([p[:n] for p, n in got]), want)
        last, n = got[-1]
        assert np.array_equal(last[n:], np.repeat(last[n - 1:n], batch - n, axis=0))


def test_stored_windows_give_the_live_maps(tiny_checkpoint):
    """The stored path (window embeddings, then ranks) equals the live sweep's maps."""
    import jax.numpy as jnp

    from convis_jax.core.vocabulary import ConceptVocabulary
    from convis_jax.models.loading import load_clip

    model = load_clip(tiny_checkpoint[0])
    vocab = ConceptVocabulary.from_synsets(["entity.n.01", "animal.n.01", "dog.n.01",
                                            "cat.n.01", "car.n.01"])
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(len(vocab), model.embedding_dim)).astype(np.float32)
    bank = jnp.asarray(bank / np.linalg.norm(bank, axis=1, keepdims=True))
    request = ConceptRequest.of(vocab, ["animal.n.01", "dog.n.01", "car.n.01"])
    sweep = Sweep.create(model.encoder, num_rows=len(vocab), padding="constant", batch=2)
    photos = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(2)]
    (padded, n, _), = sweep.batches(image_sources(photos), [0, 1])
    live = sweep.cells(padded, bank, request)
    stored = sweep.stored_cells(jnp.asarray(sweep.window_embeddings(padded)), bank, request)
    assert live.shape == (2, 3, 14, 14)
    np.testing.assert_allclose(stored, live, atol=1e-6)
    assert live[:, 1:].std(axis=(-1, -2)).min() > 0.01  # maps that vary: not a vacuous check

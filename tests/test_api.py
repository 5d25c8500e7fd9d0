"""`ConVis` on a tiny random CLIP: similarities against PyTorch, top concepts against a plain
walk of the hierarchy, occlusion seeds and options, inputs of every kind."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convis_jax.errors import ConceptError, InputError
from convis_jax.kernels.memory import window_bytes
from convis_jax.testing import write_words_file

CONCEPTS = ["dog.n.01", "cat.n.01"]  # the same request as test_cli: one compiled sweep


@pytest.fixture(scope="module")
def convis(tiny_checkpoint, tmp_path_factory):
    from convis_jax.api import ConVis

    root = tmp_path_factory.mktemp("api")
    write_words_file(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVIS_JAX_CACHE", str(root / "cache"))
        yield ConVis(str(tiny_checkpoint[0]), root / "words.txt", progress=False)


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8),
            rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)]


def torch_unit(features) -> np.ndarray:
    features = getattr(features, "pooler_output", features)
    return (features / features.norm(dim=-1, keepdim=True)).numpy()


def test_similarity_equals_pytorch_cosines(convis, photos, tiny_checkpoint):
    import torch

    torch_model = tiny_checkpoint[1]
    names = convis.vocabulary.resolve(["dog", "cat.n.01", "car"])
    similarity = convis.similarity(photos, ["dog", "cat.n.01", "car"])
    assert similarity.shape == (2, len(names)) and similarity.dtype == np.float32
    ids = convis.model.tokenize([convis.vocabulary.definition(n) for n in names]).input_ids
    with torch.no_grad():
        images = torch_unit(torch_model.get_image_features(
            pixel_values=torch.from_numpy(convis.model.preprocess(photos))))
        texts = torch_unit(torch_model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64))))
    np.testing.assert_allclose(similarity, images @ texts.T, rtol=0, atol=2e-5)
    # ...and it is the image embedding against the bank's rows.
    index = [convis.vocabulary.index(n) for n in names]
    np.testing.assert_allclose(similarity, convis.model.embed_images(photos) @ convis.bank.embeddings[index].T,
                               rtol=0, atol=1e-6)
    assert convis.similarity(photos).shape == (2, len(convis.vocabulary))


def test_top_concepts_equal_a_plain_walk_of_the_hierarchy(convis, photos):
    vocab = convis.vocabulary
    k = 7
    results = convis.top_concepts(photos, k=k)
    embeddings = convis.model.embed_images(photos)
    for result, embedding in zip(results, embeddings):
        flat = {name: float(np.dot(embedding, convis.bank.embeddings[i]))
                for i, name in enumerate(vocab.names)}
        below = {name: max(flat[d] for d in vocab.subtree(name)) for name in vocab.names}
        order = {name: i for i, name in enumerate(vocab.names)}

        def plain_top(scores):
            # Best first; ties: the more specific concept (smaller subtree), then vocabulary order.
            return sorted(vocab.names, key=lambda n: (-scores[n], len(vocab.subtree(n)), order[n]))[:k]

        for ranking, scores in ((result.flat, flat), (result.hierarchical, below)):
            assert list(ranking.names) == plain_top(scores)
            np.testing.assert_allclose(ranking.scores, [scores[n] for n in ranking.names], rtol=0, atol=1e-6)
            assert ranking.scores.dtype == np.float32
            assert list(ranking.definitions) == [vocab.definition(n) for n in ranking.names]
        # A concept's hierarchical score is never below its own.
        assert all(below[n] >= flat[n] for n in vocab.names)
        # The best subtree maximum is the best concept's own score.
        assert result.hierarchical.scores[0] == result.flat.scores[0]


def test_inputs_of_every_kind_give_the_same_embedding(convis, photos, tmp_path):
    rgb = photos[0]
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    reference = convis.similarity(rgb, CONCEPTS)
    for source in (str(tmp_path / "photo.png"), tmp_path / "photo.png", Image.fromarray(rgb), rgb[None],
                   rgb.astype(np.float32) / 255, [rgb]):
        np.testing.assert_array_equal(convis.similarity(source, CONCEPTS), reference)
    mixed = convis.similarity([str(tmp_path / "photo.png"), photos[1]], CONCEPTS)
    np.testing.assert_array_equal(mixed, convis.similarity(photos, CONCEPTS))


@pytest.fixture(scope="module")
def noise_maps(convis, photos):
    return convis.occlusion_maps(photos, CONCEPTS, seed=0)


def test_occlusion_maps_shape_range_and_same_seed(convis, photos, noise_maps):
    assert noise_maps.shape == (2, 2, 224, 224) and noise_maps.dtype == np.float32
    assert noise_maps.min() >= 0 and noise_maps.max() <= 1
    # Algorithm 1 is min-max normalised: every map reaches 0 and 1.
    np.testing.assert_allclose(noise_maps.min(axis=(-2, -1)), 0, atol=1e-6)
    np.testing.assert_allclose(noise_maps.max(axis=(-2, -1)), 1, atol=1e-6)
    np.testing.assert_array_equal(convis.occlusion_maps(photos, CONCEPTS, seed=0), noise_maps)
    # The noise of image n comes from (seed, n): the first image alone gets the same map.
    np.testing.assert_array_equal(convis.occlusion_maps(photos[0], CONCEPTS, seed=0), noise_maps[:1])


def test_the_seed_acts_only_through_the_padding_noise(convis, photos, noise_maps, monkeypatch):
    from convis_jax.core import windows

    pad_images = windows.pad_images
    padded = []

    def recording(images, padding, mode, seed=0):
        out = pad_images(images, padding, mode, seed=seed)
        padded.append((padding, out))
        return out

    monkeypatch.setattr(windows, "pad_images", recording)
    other = convis.occlusion_maps(photos[0], CONCEPTS, seed=1)
    assert not np.array_equal(other, noise_maps[:1])
    (p, seed1), = padded
    prepared = windows.prepare_image(photos[0], 224)
    np.testing.assert_array_equal(seed1[0, p:p + 224, p:p + 224], prepared)  # the photo itself
    seed0 = pad_images(prepared[None], p, "noise", seed=[0, 0])
    assert not np.array_equal(seed1, seed0)

    # With the noise pinned to seed 0's, seed 1 gives seed 0's maps bit for bit.
    monkeypatch.setattr(windows, "pad_images", lambda images, padding, mode, seed=0:
                        pad_images(images, padding, mode, seed=[0, 0]))
    np.testing.assert_array_equal(convis.occlusion_maps(photos[0], CONCEPTS, seed=1), noise_maps[:1])


def test_constant_padding_ignores_the_seed(convis, photos):
    black = convis.occlusion_maps(photos[0], CONCEPTS, padding="constant", seed=0)
    np.testing.assert_array_equal(convis.occlusion_maps(photos[0], CONCEPTS, padding="constant", seed=5), black)
    assert black.shape == (1, 2, 224, 224) and 0 <= black.min() and black.max() <= 1


def test_cells_are_the_pixel_maps_on_16_pixel_cells(convis, photos, noise_maps):
    cells = convis.occlusion_cells(photos, CONCEPTS, seed=0)
    assert cells.shape == (2, 2, 14, 14) and cells.dtype == np.float32
    np.testing.assert_array_equal(cells.repeat(16, axis=-2).repeat(16, axis=-1), noise_maps)


def test_every_concept_at_once_equals_the_named_ones(convis, photos):
    every = convis.occlusion_cells(photos[0], seed=0)  # None: every concept
    assert every.shape == (1, len(convis.vocabulary), 14, 14)
    index = [convis.vocabulary.index(n) for n in CONCEPTS]
    named = convis.occlusion_cells(photos[0], CONCEPTS, seed=0)
    np.testing.assert_allclose(every[:, index], named, rtol=0, atol=1e-6)


def test_batches_and_image_numbers_keep_each_images_noise(convis, photos, noise_maps):
    cells = convis.occlusion_cells(photos, CONCEPTS, seed=0)
    # Three images in batches of two (the last batch filled with a copy): the same maps.
    batched = convis.occlusion_cells([photos[0], photos[1], photos[0]], CONCEPTS, seed=0,
                                     batch=2, image_numbers=[0, 1, 0])
    np.testing.assert_allclose(batched, cells[[0, 1, 0]], rtol=0, atol=1e-6)
    # Image 1 alone, numbered 1, gets the noise it had as the second image.
    alone = convis.occlusion_cells(photos[1], CONCEPTS, seed=0, image_numbers=[1])
    np.testing.assert_array_equal(alone, cells[1:])
    assert not np.array_equal(convis.occlusion_cells(photos[1], CONCEPTS, seed=0), cells[1:])


def test_every_sweep_gives_batched_calls_the_one_image_maps(convis, photos, tmp_path):
    """Batches of images per compiled call (the last one filled), decoded and padded a
    batch ahead in a background thread, give each image the maps of a one-image call."""
    paths = []
    for i, photo in enumerate(photos + [photos[0]]):
        paths.append(tmp_path / f"photo{i}.png")
        Image.fromarray(photo).save(paths[-1])
    numbers = [0, 1, 2]
    for aggregation in ("window", "webapp"):
        alone = np.concatenate([convis.occlusion_cells(
            paths[i], CONCEPTS, seed=3, aggregation=aggregation, batch=1, image_numbers=[i])
            for i in numbers])
        batched = convis.occlusion_cells(paths, CONCEPTS, seed=3, aggregation=aggregation,
                                         batch=2, image_numbers=numbers)
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)
        if aggregation == "window":
            # Image 2 is image 0 again with other noise: a difference the batching keeps.
            assert np.abs(alone[2] - alone[0]).max() > 1e-3
    alone = np.concatenate([convis.gradient_maps(paths[i], CONCEPTS, batch=1) for i in numbers])
    batched = convis.gradient_maps(paths, CONCEPTS, batch=2)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)


def test_default_sweep_sizes_come_from_the_device(convis):
    """CPUs take the measured sizes; accelerators a chunk that fits their memory and
    enough images per call to keep every device busy. Checked by what the sizes do,
    not by re-deriving the rule."""
    from convis_jax.kernels import occlusion

    sweep = convis.sweep()
    assert (sweep.chunk, sweep.batch) == (occlusion.CPU_CHUNK, occlusion.CPU_IMAGES_PER_CALL)
    grid, config = sweep.grid, convis.model.config

    class Accelerator:
        platform = "gpu"

        def __init__(self, memory):
            self.memory = memory

        def memory_stats(self):
            return {"bytes_limit": self.memory}

    low, high = occlusion.GPU_CHUNK_BOUNDS
    per_window = window_bytes(config, window_side=max(grid.window_sizes), num_synsets=7080)
    chunks = {}
    for memory, devices in ((1 << 20, 1), (16 << 30, 1), (80 << 30, 1), (80 << 30, 4)):
        chunk, images = occlusion.sweep_sizes(config, grid, 7080, [Accelerator(memory)] * devices)
        chunks[memory, devices] = chunk, images
        assert chunk & (chunk - 1) == 0 and low <= chunk <= high  # a power of two, in bounds
        assert chunk == low or chunk * per_window <= memory // 8  # fits an eighth of memory
        assert chunk == high or 2 * chunk * per_window > memory // 8  # the largest that fits
        assert 1 <= images <= occlusion.GPU_MAX_IMAGES_PER_CALL
        assert images == 1 or images * grid.n_windows * 7080 * 4 <= memory // 8
    assert chunks[1 << 20, 1] == (low, 1)  # a tiny memory: the smallest chunk, one image
    assert chunks[16 << 30, 1][0] <= chunks[80 << 30, 1][0]  # more memory, no smaller chunk
    assert chunks[80 << 30, 4][1] > chunks[80 << 30, 1][1]  # more devices, more images a call
    # Enough images that every device runs several steps per call.
    chunk, images = chunks[80 << 30, 4]
    assert images * grid.n_windows >= occlusion.GPU_STEPS_PER_CALL * chunk * 4 or \
        images == occlusion.GPU_MAX_IMAGES_PER_CALL


def test_webapp_aggregation(convis, photos):
    maps = convis.occlusion_cells(photos[0], CONCEPTS, aggregation="webapp")
    assert maps.shape == (1, 2, 14, 14)
    # exp(-10 (1 - x)) of a mean rank similarity x in [0, 1].
    assert np.all(maps >= np.float32(np.exp(-10.0)) - 1e-7) and np.all(maps <= 1)
    # The web app never pads: the seed of the (absent) noise changes nothing.
    np.testing.assert_array_equal(
        convis.occlusion_cells(photos[0], CONCEPTS, aggregation="webapp", seed=9), maps)
    pixels = convis.occlusion_maps(photos[0], CONCEPTS, aggregation="webapp")
    np.testing.assert_array_equal(pixels, maps.repeat(16, axis=-2).repeat(16, axis=-1))


def test_gradient_maps_shapes_and_channels(convis, photos):
    maps = convis.gradient_maps(photos, CONCEPTS)
    size = convis.model.image_size
    assert maps.shape == (2, 2, size, size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0  # absmax over channels
    channels = convis.gradient_maps(photos[:1], CONCEPTS, reduce=None)
    assert channels.shape == (1, 2, 3, size, size)
    np.testing.assert_allclose(np.abs(channels).max(axis=2), maps[:1], rtol=0, atol=1e-7)


@pytest.mark.parametrize("call, error, message", [
    (lambda c, p: c.occlusion_maps(p, CONCEPTS, aggregation="mean"), InputError,
     "aggregation must be 'window' or 'webapp', found 'mean'"),
    (lambda c, p: c.occlusion_maps(p, None), InputError,
     "occlusion_maps needs named concepts, found None; occlusion_cells maps every concept"),
    (lambda c, p: c.occlusion_cells(p, CONCEPTS, batch=0), InputError,
     "batch must be a positive integer, found 0"),
    (lambda c, p: c.occlusion_cells(p, CONCEPTS, image_numbers=[0, 1]), InputError,
     r"one image number \(an integer >= 0\) per image, 1 in all, found 2: \[0, 1\]"),
    (lambda c, p: c.occlusion_maps(p, CONCEPTS, padding="zeros"), InputError,
     "padding must be 'noise' or 'constant', found 'zeros'"),
    (lambda c, p: c.occlusion_maps(p, CONCEPTS, chunk=0), InputError, "chunk must be a positive integer, found 0"),
    (lambda c, p: c.occlusion_maps(p, CONCEPTS, stride=0), InputError, "stride must be a positive integer, found 0"),
    (lambda c, p: c.occlusion_maps(p, CONCEPTS, window_sizes=(0,)), InputError, "window size .* found 0"),
    (lambda c, p: c.gradient_maps(p, CONCEPTS, score="logit"), InputError, "score must be one of .* found 'logit'"),
    (lambda c, p: c.gradient_maps(p, CONCEPTS, kind="lime"), InputError, "kind must be one of .* found 'lime'"),
    (lambda c, p: c.gradient_maps(p, CONCEPTS, reduce="mean"), InputError, "reduce must be one of .*'mean'"),
    (lambda c, p: c.gradient_maps(p, CONCEPTS, strategy="fast"), InputError, "strategy must be one of .*'fast'"),
    (lambda c, p: c.gradient_maps(p, CONCEPTS, kind="smoothgrad", smoothgrad_samples=0), InputError,
     "samples >= 1 .* found 0"),
    (lambda c, p: c.top_concepts(p, k=0), InputError, "k must be a positive integer, found 0"),
    (lambda c, p: c.similarity(p, []), ConceptError, "expected at least one concept, found an empty list"),
    (lambda c, p: c.occlusion_maps(p, ["dog.n.01", "dog"]), ConceptError, r"dog\.n\.01 is requested 2 times"),
])
def test_invalid_options_name_what_was_expected(convis, photos, call, error, message):
    with pytest.raises(error, match=message):
        call(convis, photos[0])


def test_repr_names_the_model_and_vocabulary(convis):
    assert repr(convis) == (f"ConVis(model={convis.model.name!r}, concepts={len(convis.vocabulary)}, "
                            f"text='definition')")

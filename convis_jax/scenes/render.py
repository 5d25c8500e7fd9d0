"""Scenes: shapes placed with little overlap on a background, with their ground truth."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from convis_jax.errors import ConceptError, InputError
from convis_jax.scenes.backgrounds import background, contrasting_colour
from convis_jax.scenes.concepts import CONCEPT_TEXTS, DRAWN_CONCEPTS
from convis_jax.scenes.shapes import DRAWERS, shape_coverage

# A candidate placement is rejected when it covers more than this fraction of
# an earlier object (or has more than this fraction of itself covered), so
# every object stays mostly visible and boxes rarely contain other objects.
_MAX_OVERLAP = 0.1

# Placement tries shapes of shrinking sizes; each size is drawn once and tried
# at several random positions.
_PLACEMENT_TRIES = 40
_POSITION_TRIES = 8

# Default object diameters as fractions of the image side: large enough
# that the bundled model, at 48 pixels, sees each shape's outline.
OBJECT_SIZES = (0.35, 0.7)


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    """One generated image and its ground truth.

    Objects are listed in drawing order: a later object is drawn over the
    earlier ones.

    Attributes:
        image: uint8 array [size, size, 3], RGB in [0, 255].
        concepts: Synset name of each object, length n, all different.
        boxes: int64 array [n, 4] of (x0, y0, x1, y1) in pixels, x1 and y1
            exclusive: the tight box of each object's whole shape, including
            any part hidden by a later object.
        masks: bool array [n, size, size]: the pixels where each object is
            visible, i.e. its shape minus the shapes of later objects.
        captions: Texts that describe the whole scene; `captions[0]` is built
            from definitions, the rest from lemma names (see `render_scene`).
    """

    image: np.ndarray
    concepts: tuple[str, ...]
    boxes: np.ndarray
    masks: np.ndarray
    captions: tuple[str, ...]


def _placement(
    rng: np.random.Generator,
    concept: str,
    size: int,
    size_range: tuple[float, float],
    placed: list[np.ndarray],
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Finds a position for one shape that overlaps the placed ones little.

    Args:
        rng: Source of sizes, shape parameters and positions.
        concept: A key of `DRAWERS`.
        size: Side of the image in pixels.
        size_range: (low, high) diameter as a fraction of `size`.
        placed: Bool arrays [size, size], the whole shapes placed so far.

    Returns:
        (coverage [h, w] float32 in [0, 1], its top-left corner (y0, x0) in
        the image), or None when no try overlapped little enough.
    """
    low, high = size_range
    for attempt in range(_PLACEMENT_TRIES):
        # Shrink the largest allowed size as tries fail, so crowded scenes
        # still fit their objects.
        top = high - (high - low) * attempt / _PLACEMENT_TRIES
        coverage = shape_coverage(concept, rng.uniform(low, top) * size, rng)
        h, w = coverage.shape
        shape = coverage >= 0.5
        area = shape.sum()
        if h > size or w > size or area == 0:
            continue
        for _ in range(_POSITION_TRIES):
            y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            # Overlaps are counted inside the shape's own rectangle: nothing
            # of it lies outside.
            if all(
                (common := np.logical_and(shape, other[y0 : y0 + h, x0 : x0 + w]).sum()) <= _MAX_OVERLAP * area
                and common <= _MAX_OVERLAP * other.sum()
                for other in placed
            ):
                return coverage, (y0, x0)
    return None


def _article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _scene_captions(concepts: Sequence[str]) -> tuple[str, ...]:
    texts = [CONCEPT_TEXTS[name] for name in concepts]
    if len(texts) == 1:
        return (texts[0].definition,) + tuple(_article(lemma) for lemma in texts[0].lemmas)
    # Glosses contain ";" themselves, so definitions are joined as sentences.
    definitions = ". ".join(text.definition for text in texts)
    names = [_article(text.lemmas[0]) for text in texts]
    listing = ", ".join(names[:-1]) + " and " + names[-1]
    return (definitions, listing)


def _as_rng(rng_or_seed: np.random.Generator | int | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer, np.random.SeedSequence)) and not isinstance(
        rng_or_seed, bool
    ):
        return np.random.default_rng(rng_or_seed)
    raise InputError(
        "expected a numpy.random.Generator, SeedSequence or an int seed, "
        f"found {type(rng_or_seed).__name__}"
    )


def _check_arguments(
    size: int, n_objects: tuple[int, int], concepts: Sequence[str], size_range: tuple[float, float]
) -> None:
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise InputError(f"expected an integer image size of at least 16 pixels, found {size!r}")
    unknown = [name for name in concepts if name not in DRAWERS]
    if unknown:
        raise ConceptError(f"expected concepts from DRAWN_CONCEPTS {DRAWN_CONCEPTS}, found {unknown}")
    if len(set(concepts)) != len(concepts) or not concepts:
        raise InputError(f"expected a non-empty sequence of distinct concepts, found {tuple(concepts)}")
    low, high = n_objects
    if not 1 <= low <= high <= len(concepts):
        raise InputError(
            f"expected 1 <= min objects <= max objects <= {len(concepts)} (the number of "
            f"concepts, since a scene holds each concept at most once), found {n_objects}"
        )
    if not 0.05 <= size_range[0] <= size_range[1] <= 0.95:
        raise InputError(
            f"expected object sizes as fractions of the image side with "
            f"0.05 <= low <= high <= 0.95, found {size_range}"
        )


def render_scene(
    rng_or_seed: np.random.Generator | np.random.SeedSequence | int,
    *,
    size: int = 96,
    n_objects: int | tuple[int, int] = (1, 3),
    concepts: Sequence[str] = DRAWN_CONCEPTS,
    size_range: tuple[float, float] = OBJECT_SIZES,
) -> Scene:
    """Draws one scene of distinct concepts on a random background.

    The number of objects is drawn uniformly from `n_objects`, the concepts
    without replacement from `concepts`. Each object gets a random size (the
    diameter of the circle it fits in, as a fraction of the image side, drawn
    from `size_range`), rotation where the concept allows it, position and a
    colour that contrasts with what lies under it. Objects overlap little: a
    placement covering more than 10% of an earlier object (or having more
    than 10% of itself covered) is retried at other positions (8 for each
    size) and then at ever smaller sizes; an object that still finds no
    place at 40 sizes is left out, so a scene may hold fewer objects than
    drawn (never fewer than one).

    Captions: for one object, `captions[0]` is its definition (the text
    ConVis embeds at test time), followed by "a {lemma}" for each of its lemma
    names ("an" before a vowel). For several objects, `captions[0]` joins
    their definitions with ". " in drawing order, and `captions[1]` lists
    them by first lemma ("a star, a ring and an arrow").

    Args:
        rng_or_seed: A generator (advanced in place) or a seed.
        size: Side of the square image in pixels, at least 16.
        n_objects: The number of objects, or an inclusive (min, max) range.
        concepts: Synset names to draw from, a subset of `DRAWN_CONCEPTS`.
        size_range: Inclusive (low, high) object diameter as a fraction of
            `size`, within [0.05, 0.95].

    Returns:
        The scene; see `Scene`.

    Raises:
        InputError: An argument is out of range, or the seed is not one.
        ConceptError: A concept is not in `DRAWN_CONCEPTS`.
    """
    if isinstance(n_objects, (int, np.integer)):
        n_objects = (int(n_objects), int(n_objects))
    concepts = tuple(concepts)
    size_range = (float(size_range[0]), float(size_range[1]))
    _check_arguments(size, n_objects, concepts, size_range)
    rng = _as_rng(rng_or_seed)

    image = background(rng, size)
    count = int(rng.integers(n_objects[0], n_objects[1] + 1))
    chosen = [concepts[i] for i in rng.permutation(len(concepts))[:count]]
    drawn, shapes, boxes = [], [], []
    for concept in chosen:
        found = _placement(rng, concept, size, size_range, shapes)
        if found is None:
            continue
        coverage, (y0, x0) = found
        # Drawing touches only the shape's rectangle (elsewhere its coverage
        # is 0 and the blend would leave the background as it is).
        rows, cols = slice(y0, y0 + coverage.shape[0]), slice(x0, x0 + coverage.shape[1])
        inside = coverage >= 0.5
        region = image[rows, cols]
        colour = contrasting_colour(rng, region[inside].mean(axis=0)).astype(np.float32)
        alpha = coverage[..., None]
        image[rows, cols] = region * (1 - alpha) + colour * alpha
        shape = np.zeros((size, size), bool)
        shape[rows, cols] = inside
        ys, xs = np.nonzero(inside)
        drawn.append(concept)
        shapes.append(shape)
        boxes.append(np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.int64))

    if not drawn:
        raise InputError(
            f"expected objects of relative size {size_range} to fit a {size} x {size} image, "
            f"found no placement for {chosen[0]} at {_PLACEMENT_TRIES} sizes"
        )
    masks = np.stack(shapes)
    # Visible part: what no later object covers.
    hidden = np.zeros((size, size), bool)
    for i in range(len(masks) - 1, -1, -1):
        masks[i] &= ~hidden
        hidden |= shapes[i]
    return Scene(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        concepts=tuple(drawn),
        boxes=np.stack(boxes),
        masks=masks,
        captions=_scene_captions(drawn),
    )


def make_dataset(seed: int, n: int, **kwargs) -> list[Scene]:
    """Generates `n` scenes, deterministically for `seed`.

    Scene i is rendered from the i-th child of `numpy.random.SeedSequence(seed)`,
    so it does not depend on `n`: a longer dataset extends a shorter one.

    Args:
        seed: Non-negative integer seed.
        n: Number of scenes, non-negative.
        **kwargs: Passed to `render_scene` (size, n_objects, concepts,
            size_range).

    Returns:
        A list of `n` scenes.

    Raises:
        InputError: `seed` or `n` is not a non-negative integer, or a
            `render_scene` argument is out of range.
        ConceptError: A concept is not in `DRAWN_CONCEPTS`.
    """
    for label, value in (("seed", seed), ("n", n)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise InputError(f"expected a non-negative integer {label}, found {value!r}")
    return [render_scene(child, **kwargs) for child in np.random.SeedSequence(seed).spawn(n)]

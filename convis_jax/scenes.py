"""Procedural scenes of drawn WordNet concepts, with ground-truth boxes and masks.

The bundled default model is trained and evaluated on these scenes: one to
three flat-coloured shapes (each the drawing of one WordNet noun synset) on a
flat, gradient or noise background. Because the generator knows where it drew
every object, localisation metrics get exact answers.

Everything is a pure function of a seed (or a `numpy.random.Generator`): the
same seed gives bit-identical images on every machine, since drawing uses only
NumPy's PCG64 stream and Pillow's integer rasteriser.

Captions are WordNet 3.0 texts of the objects present (see `render_scene`).
The texts of the drawn synsets are stored in `CONCEPT_TEXTS` so that
generating scenes needs no WordNet files; a test checks them against WordNet.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from convis_jax.errors import ConceptError, InputError

# Shapes are rasterised at this many times the output resolution and
# box-filtered down, which gives anti-aliased edges (Pillow's polygon fill has
# none) and a sub-pixel coverage from which the masks are thresholded.
_SUPERSAMPLE = 4

# A candidate placement is rejected when it covers more than this fraction of
# an earlier object (or has more than this fraction of itself covered), so
# every object stays mostly visible and boxes rarely contain other objects.
_MAX_OVERLAP = 0.1

# Placement tries shapes of shrinking sizes; each size is drawn once and tried
# at several random positions.
_PLACEMENT_TRIES = 40
_POSITION_TRIES = 8
_COLOUR_TRIES = 32

# Least Euclidean RGB distance between an object's colour and the mean colour
# of what lies under it, so that every object stands out from its background.
_MIN_CONTRAST = 110.0
# Default object diameters as fractions of the image side: large enough
# that the bundled model, at 48 pixels, sees each shape's outline.
OBJECT_SIZES = (0.35, 0.7)


@dataclasses.dataclass(frozen=True)
class ConceptText:
    """The WordNet 3.0 texts of one drawn synset.

    Attributes:
        definition: The gloss, exactly as nltk's `Synset.definition()` gives it.
        lemmas: The lemma names in WordNet's order, underscores turned into
            spaces.
    """

    definition: str
    lemmas: tuple[str, ...]


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


def _concept(name: str, definition: str, lemma_names: Sequence[str]) -> tuple[str, ConceptText]:
    lemmas = tuple(lemma.replace("_", " ") for lemma in lemma_names)
    return name, ConceptText(definition=definition, lemmas=lemmas)


# WordNet 3.0 texts of every synset this module can draw. The glosses were
# chosen to fit the drawings: e.g. star.n.05 is the plane figure (star.n.01 is
# the celestial body), greek_cross.n.01 the cross with four equal arms.
CONCEPT_TEXTS: types.MappingProxyType[str, ConceptText] = types.MappingProxyType(
    dict(
        [
            _concept(
                "circle.n.01",
                "ellipse in which the two axes are of equal length; a plane curve generated "
                "by one point moving at a constant distance from a fixed point",
                ("circle",),
            ),
            _concept(
                "square.n.01",
                "(geometry) a plane rectangle with four equal sides and four right angles; "
                "a four-sided regular polygon",
                ("square", "foursquare"),
            ),
            _concept("triangle.n.01", "a three-sided polygon", ("triangle", "trigon", "trilateral")),
            _concept("hexagon.n.01", "a six-sided polygon", ("hexagon",)),
            _concept(
                "star.n.05",
                "a plane figure with 5 or more points; often used as an emblem",
                ("star",),
            ),
            _concept(
                "heart.n.07",
                "a plane figure with rounded sides curving inward at the top and intersecting "
                "at the bottom; conventionally used on playing cards and valentines",
                ("heart",),
            ),
            _concept(
                "crescent.n.01",
                "any shape resembling the curved shape of the moon in its first or last quarters",
                ("crescent",),
            ),
            _concept(
                "ring.n.02",
                "a toroidal shape",
                ("ring", "halo", "annulus", "doughnut", "anchor_ring"),
            ),
            _concept(
                "greek_cross.n.01",
                "a cross with each of the four arms the same length",
                ("Greek_cross",),
            ),
            _concept(
                "arrow.n.01",
                "a mark to indicate a direction or relation",
                ("arrow", "pointer"),
            ),
            _concept(
                "spiral.n.01",
                "a plane curve traced by a point circling about the center but at increasing "
                "distances from the center",
                ("spiral",),
            ),
            _concept(
                "zigzag.n.01",
                "an angular shape characterized by sharp turns in alternating directions",
                ("zigzag", "zig", "zag"),
            ),
        ]
    )
)

DRAWN_CONCEPTS: tuple[str, ...] = tuple(CONCEPT_TEXTS)


# ---------------------------------------------------------------------------
# Shapes. Each drawer paints one shape with value 255 on a blank "L" canvas
# (holes are painted back with 0), centred on `centre`, inside the circle of
# radius `radius` (both in canvas pixels), using `rng` for its free
# parameters (rotation, proportions).

_Drawer = Callable[[ImageDraw.ImageDraw, np.ndarray, float, np.random.Generator], None]


def _vertices(points: np.ndarray) -> list[tuple[float, float]]:
    """[k, 2] points as the list of (x, y) tuples Pillow draws."""
    return [tuple(p) for p in points.tolist()]


def _polar_points(centre: np.ndarray, radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    return centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=-1)


def _polar(centre: np.ndarray, radii: np.ndarray, angles: np.ndarray) -> list[tuple[float, float]]:
    return _vertices(_polar_points(centre, radii, angles))


def _rotated(centre: np.ndarray, points: np.ndarray, angle: float) -> list[tuple[float, float]]:
    """Rotates [k, 2] points given relative to the centre, then moves them there."""
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    return _vertices(points @ rotation.T + centre)


def _disk(draw: ImageDraw.ImageDraw, centre: np.ndarray, radius: float, fill: int) -> None:
    x, y = centre
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)


def _draw_circle(draw, centre, radius, rng):
    _disk(draw, centre, radius * rng.uniform(0.8, 1.0), 255)


def _draw_regular_polygon(draw, centre, radius, rng, sides: int):
    start = rng.uniform(0.0, 2 * math.pi)
    angles = start + 2 * math.pi * np.arange(sides) / sides
    draw.polygon(_polar(centre, np.full(sides, radius), angles), fill=255)


def _draw_square(draw, centre, radius, rng):
    _draw_regular_polygon(draw, centre, radius, rng, 4)


def _draw_hexagon(draw, centre, radius, rng):
    _draw_regular_polygon(draw, centre, radius, rng, 6)


def _draw_triangle(draw, centre, radius, rng):
    # Corners jittered around the equilateral ones: varied, never degenerate.
    angles = rng.uniform(0.0, 2 * math.pi) + 2 * math.pi * np.arange(3) / 3
    angles = angles + rng.uniform(-0.25, 0.25, size=3)
    draw.polygon(_polar(centre, np.full(3, radius), angles), fill=255)


def _draw_star(draw, centre, radius, rng):
    points = int(rng.integers(5, 9))  # star.n.05: "5 or more points"
    inner = radius * rng.uniform(0.38, 0.5)
    angles = rng.uniform(0.0, 2 * math.pi) + math.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, radius, inner)
    draw.polygon(_polar(centre, radii, angles), fill=255)


def _draw_heart(draw, centre, radius, rng):
    t = np.linspace(0.0, 2 * math.pi, 96, endpoint=False)
    # The classic heart curve; y is negated because image rows grow downwards.
    outline = np.stack(
        [
            16 * np.sin(t) ** 3,
            -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)),
        ],
        axis=-1,
    )
    outline = outline - (outline.max(0) + outline.min(0)) / 2
    outline = outline * (radius / np.linalg.norm(outline, axis=-1).max())
    # Only small tilts: an upside-down heart is no longer read as a heart.
    draw.polygon(_rotated(centre, outline, rng.uniform(-0.4, 0.4)), fill=255)


def _draw_crescent(draw, centre, radius, rng):
    direction = rng.uniform(0.0, 2 * math.pi)
    shift = radius * rng.uniform(0.35, 0.55)
    _disk(draw, centre, radius, 255)
    bite = centre + shift * np.array([math.cos(direction), math.sin(direction)])
    _disk(draw, bite, radius * rng.uniform(0.8, 0.95), 0)


def _draw_ring(draw, centre, radius, rng):
    _disk(draw, centre, radius, 255)
    _disk(draw, centre, radius * rng.uniform(0.45, 0.65), 0)


def _draw_greek_cross(draw, centre, radius, rng):
    half = radius * rng.uniform(0.2, 0.3)  # half the width of an arm
    arm = radius * 0.95
    # One arm's end and the inner corner after it; three quarter turns of
    # these points complete the outline.
    quarter = np.array([[arm, -half], [arm, half], [half, half]])
    quarter_turn = np.array([[0.0, -1.0], [1.0, 0.0]])
    turns = [np.linalg.matrix_power(quarter_turn, k) for k in range(4)]
    outline = np.concatenate([quarter @ turn.T for turn in turns])
    # Kept near upright: turned by 45 degrees it is a saltire, another synset.
    draw.polygon(_rotated(centre, outline, rng.uniform(-0.3, 0.3)), fill=255)


def _draw_arrow(draw, centre, radius, rng):
    half = radius * rng.uniform(0.12, 0.18)  # half the shaft width
    head = radius * rng.uniform(0.55, 0.75)  # head length
    spread = half * rng.uniform(2.4, 3.2)  # half the head width
    neck = radius - head
    outline = np.array(
        [
            [-radius, -half],
            [neck, -half],
            [neck, -spread],
            [radius, 0.0],
            [neck, spread],
            [neck, half],
            [-radius, half],
        ]
    )
    draw.polygon(_rotated(centre, outline, rng.uniform(0.0, 2 * math.pi)), fill=255)


def _draw_spiral(draw, centre, radius, rng):
    turns = rng.uniform(2.0, 2.6)
    width = radius * 0.13
    t = np.linspace(0.0, 1.0, 200)
    reach = radius - width / 2
    angles = rng.uniform(0.0, 2 * math.pi) + rng.choice([-1.0, 1.0]) * 2 * math.pi * turns * t
    path = _polar_points(centre, reach * (0.08 + 0.92 * t), angles)
    # The stroke as one polygon, the path offset by half the width to either
    # side, with round ends (a line with round joints draws 200 pie slices).
    tangent = np.gradient(path, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=-1)
    normal *= width / 2 / np.linalg.norm(normal, axis=-1, keepdims=True)
    outline = np.concatenate([path + normal, (path - normal)[::-1]])
    draw.polygon(_vertices(outline), fill=255)
    for end in (path[0], path[-1]):
        _disk(draw, end, width / 2, 255)


def _draw_zigzag(draw, centre, radius, rng):
    segments = int(rng.integers(4, 7))
    width = radius * 0.14
    reach = radius - width
    x = np.linspace(-reach, reach, segments + 1)
    amplitude = reach * rng.uniform(0.3, 0.5)
    y = np.where(np.arange(segments + 1) % 2 == 0, amplitude, -amplitude)
    outline = np.stack([x, y], axis=-1)
    points = _rotated(centre, outline, rng.uniform(0.0, 2 * math.pi))
    draw.line(points, fill=255, width=max(1, round(width)), joint="curve")


_DRAWERS: types.MappingProxyType[str, _Drawer] = types.MappingProxyType(
    {
        "circle.n.01": _draw_circle,
        "square.n.01": _draw_square,
        "triangle.n.01": _draw_triangle,
        "hexagon.n.01": _draw_hexagon,
        "star.n.05": _draw_star,
        "heart.n.07": _draw_heart,
        "crescent.n.01": _draw_crescent,
        "ring.n.02": _draw_ring,
        "greek_cross.n.01": _draw_greek_cross,
        "arrow.n.01": _draw_arrow,
        "spiral.n.01": _draw_spiral,
        "zigzag.n.01": _draw_zigzag,
    }
)


def _shape_coverage(concept: str, diameter: float, rng: np.random.Generator) -> np.ndarray:
    """Draws one shape and returns its coverage, cropped to where it is non-zero.

    Args:
        concept: A key of `_DRAWERS`.
        diameter: Diameter in output pixels of the circle the shape fits in.
        rng: Source of the shape's free parameters.

    Returns:
        float32 array [h, w] in [0, 1]: the fraction of each output pixel the
        shape covers, with no all-zero border rows or columns.
    """
    cells = int(math.ceil(diameter)) + 2
    side = cells * _SUPERSAMPLE
    canvas = Image.new("L", (side, side), 0)
    # A sub-pixel jitter of the centre, so that edges do not always fall on
    # the same phase of the pixel grid.
    centre = side / 2 + rng.uniform(-0.5, 0.5, size=2) * _SUPERSAMPLE
    _DRAWERS[concept](ImageDraw.Draw(canvas), centre, diameter * _SUPERSAMPLE / 2, rng)
    # Box-filtering the 0/255 canvas in float: each cell's mean is an exact
    # multiple of 1 / _SUPERSAMPLE**2, whatever the order of summation.
    coverage = np.asarray(canvas.convert("F").reduce(_SUPERSAMPLE)) / np.float32(255.0)
    rows = np.flatnonzero(coverage.max(axis=1) > 0)
    cols = np.flatnonzero(coverage.max(axis=0) > 0)
    return coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


# ---------------------------------------------------------------------------
# Backgrounds and colours.


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Returns a float32 [size, size, 3] background in [0, 255]: flat, gradient or noise."""
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(_random_colour(rng).astype(np.float32), (size, size, 3)).copy()
    if kind == 1:
        start, end = _random_colour(rng), _random_colour(rng)
        angle = rng.uniform(0.0, 2 * math.pi)
        steps = np.arange(size) / max(size - 1, 1)
        ramp = math.cos(angle) * steps[None, :] + math.sin(angle) * steps[:, None]
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-9)
        return ramp.astype(np.float32)[..., None] * (end - start).astype(np.float32) + start.astype(np.float32)
    # Smooth value noise: a coarse grid of colours around a base colour,
    # bilinearly enlarged, plus a little per-pixel grain.
    cells = int(rng.integers(3, 9))
    base = _random_colour(rng)
    coarse = np.clip(base + rng.normal(0.0, 40.0, size=(cells, cells, 3)), 0, 255)
    smooth = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    grain = rng.standard_normal(size=(size, size, 3), dtype=np.float32)
    grain *= np.float32(rng.uniform(2.0, 12.0))
    grain += np.asarray(smooth, dtype=np.float32)
    return np.clip(grain, 0, 255, out=grain)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """Picks a random colour far from `under` (an RGB mean); falls back to the farthest tried."""
    best, best_distance = None, -1.0
    for _ in range(_COLOUR_TRIES):
        colour = _random_colour(rng)
        distance = float(np.linalg.norm(colour - under))
        if distance >= _MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return best


# ---------------------------------------------------------------------------
# Scenes.


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
        concept: A key of `_DRAWERS`.
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
        coverage = _shape_coverage(concept, rng.uniform(low, top) * size, rng)
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
    unknown = [name for name in concepts if name not in _DRAWERS]
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

    image = _background(rng, size)
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
        colour = _contrasting_colour(rng, region[inside].mean(axis=0)).astype(np.float32)
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

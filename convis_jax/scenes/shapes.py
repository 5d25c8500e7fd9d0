"""The shapes: one drawer per drawn concept, rasterised with anti-aliased edges."""

from __future__ import annotations

import math
import types
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

# Shapes are rasterised at this many times the output resolution and
# box-filtered down, which gives anti-aliased edges (Pillow's polygon fill has
# none) and a sub-pixel coverage from which the masks are thresholded.
_SUPERSAMPLE = 4

# Each drawer paints one shape with value 255 on a blank "L" canvas
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


DRAWERS: types.MappingProxyType[str, _Drawer] = types.MappingProxyType(
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


def shape_coverage(concept: str, diameter: float, rng: np.random.Generator) -> np.ndarray:
    """Draws one shape and returns its coverage, cropped to where it is non-zero.

    Args:
        concept: A key of `DRAWERS`.
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
    DRAWERS[concept](ImageDraw.Draw(canvas), centre, diameter * _SUPERSAMPLE / 2, rng)
    # Box-filtering the 0/255 canvas in float: each cell's mean is an exact
    # multiple of 1 / _SUPERSAMPLE**2, whatever the order of summation.
    coverage = np.asarray(canvas.convert("F").reduce(_SUPERSAMPLE)) / np.float32(255.0)
    rows = np.flatnonzero(coverage.max(axis=1) > 0)
    cols = np.flatnonzero(coverage.max(axis=0) > 0)
    return coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

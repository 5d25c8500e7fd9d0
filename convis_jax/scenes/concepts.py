"""The drawn concepts: the WordNet 3.0 texts of every synset the scenes can draw.

They are stored here so that generating scenes needs no WordNet files; a test
checks them against WordNet.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence


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

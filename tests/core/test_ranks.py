"""Ranks, rank similarity and subtree reductions against plain loops."""

import numpy as np
import pytest

from convis_jax.core.ranks import (
    hierarchy_levels,
    rank_similarity,
    ranks,
    subtree_max,
    subtree_min_all,
)
from convis_jax.errors import InputError
from tests.reference import plain_ranks, plain_subtree_index

# A small DAG: 4 has two parents (1 and 2), so subtrees overlap.
#          0
#        /   \
#       1     2
#      / \   / \
#     3   4     5
#         |    / \
#         6   7   8
DAG_SIZE = 9
DAG_EDGES = [(0, 1), (0, 2), (1, 3), (1, 4), (2, 4), (2, 5), (4, 6), (5, 7), (5, 8)]


def test_plain_subtree_index_of_the_dag():
    offsets, members = plain_subtree_index(DAG_SIZE, DAG_EDGES)
    subtree = lambda k: members[offsets[k] : offsets[k + 1]].tolist()  # noqa: E731
    assert subtree(0) == list(range(9))
    assert subtree(1) == [1, 3, 4, 6]
    assert subtree(2) == [2, 4, 5, 6, 7, 8]
    assert subtree(6) == [6]


def test_ranks_match_counting_with_ties():
    rng = np.random.default_rng(0)
    # Few distinct values, so most rows hold ties.
    similarities = rng.integers(-3, 4, (3, 4, 17)).astype(np.float32) / 4
    result = ranks(similarities)
    assert result.dtype == np.int32 and result.shape == similarities.shape
    for index in np.ndindex(similarities.shape[:-1]):
        np.testing.assert_array_equal(result[index], plain_ranks(similarities[index]))
        assert sorted(result[index]) == list(range(17))


def test_ranks_most_similar_is_zero():
    np.testing.assert_array_equal(ranks(np.array([0.1, 0.9, -0.2, 0.9])), [2, 0, 3, 1])


def test_ranks_with_jax_numpy_match_numpy():
    import jax
    import jax.numpy as jnp

    similarities = np.random.default_rng(1).integers(-5, 5, (6, 40)).astype(np.float32) / 7
    jitted = jax.jit(lambda z: ranks(z, xp=jnp))
    np.testing.assert_array_equal(np.asarray(jitted(similarities)), ranks(similarities))


def test_rank_similarity():
    np.testing.assert_allclose(rank_similarity(np.array([0, 1, 3]), 4), [1.0, 0.75, 0.25])
    with pytest.raises(InputError, match="positive"):
        rank_similarity(np.array([0]), 0)


class DagVocabulary:
    """The DAG as the vocabulary interface `hierarchy_levels` reads: synsets named 0 .. T-1."""

    edges = DAG_EDGES

    def __len__(self):
        return DAG_SIZE

    def index(self, name):
        return name


@pytest.mark.parametrize("reduction, plain", [
    (subtree_max, max),
    (lambda values, offsets, members: subtree_min_all(values, hierarchy_levels(DagVocabulary())),
     min)])
def test_subtree_reductions_match_a_plain_loop(reduction, plain):
    offsets, members = plain_subtree_index(DAG_SIZE, DAG_EDGES)
    values = np.random.default_rng(2).integers(0, 100, (5, 3, DAG_SIZE))
    result = reduction(values, offsets, members)
    assert result.shape == (5, 3, DAG_SIZE) and result.dtype == values.dtype
    children = {s: [c for p, c in DAG_EDGES if p == s] for s in range(DAG_SIZE)}

    def subtree(s):
        return {s}.union(*(subtree(c) for c in children[s]))

    for index in np.ndindex(values.shape[:-1]):
        for concept in range(DAG_SIZE):
            expected = plain(values[index][s] for s in subtree(concept))
            assert result[index][concept] == expected


def test_subtree_max_on_a_concept_subset():
    # Concepts need not be every synset: two concepts over the DAG's synsets.
    offsets = np.array([0, 4, 5])
    members = np.array([1, 3, 4, 6, 8], np.int32)
    rank = np.array([[5, 8, 0, 7, 6, 1, 3, 2, 4]])
    np.testing.assert_array_equal(subtree_max(rank, offsets, members), [[8, 4]])


@pytest.mark.parametrize(
    "offsets, members, message",
    [
        (np.array([0, 2, 2, 3]), np.array([0, 1, 2]), "empty subtree"),
        (np.array([1, 3]), np.array([0, 1, 2]), "from 0"),
        (np.array([0, 2]), np.array([0, 1, 2]), "from 0"),
        (np.array([0, 2]), np.array([0, 9]), "index the 9"),
        (np.array([0]), np.array([], np.int32), r"K \+ 1"),
    ],
)
def test_subtree_index_is_checked(offsets, members, message):
    values = np.zeros((2, 9))
    with pytest.raises(InputError, match=message):
        subtree_max(values, offsets, members)


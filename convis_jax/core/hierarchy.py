"""The hypernym DAG of a vocabulary as compressed index arrays (CSR): children, parents, subtrees.

A CSR index of K rows is `offsets` [K+1] and `members`: row i is
`members[offsets[i]:offsets[i + 1]]`. NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from convis_jax.errors import InputError


def csr(rows: np.ndarray, columns: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR offsets [num_rows+1] and members for (row, column) pairs already sorted by row."""
    offsets = np.zeros(num_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=offsets[1:])
    return offsets, np.asarray(columns, dtype=np.int32)



def subtree_csr(
    child_offsets: np.ndarray,
    child_members: np.ndarray,
    parent_offsets: np.ndarray,
    parent_members: np.ndarray,
    names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every concept's subtree as CSR (offsets [K+1], members [M], segment ids [M]).

    Walks the DAG top-down (Kahn's order) collecting each concept's ancestors,
    itself included: the subtree of c is the set of concepts whose ancestors
    include c. Ancestor sets are small (about the depth of WordNet), so this
    stays cheap even for all 82,115 nouns.

    Raises:
        InputError: the edges form a cycle.
    """
    k = len(names)
    in_degree = np.diff(parent_offsets).astype(np.int64)
    ready = [i for i in range(k) if in_degree[i] == 0]
    ancestors: list[frozenset[int] | None] = [None] * k
    seen = 0
    children_of = np.split(child_members, child_offsets[1:-1]) if k else []
    while ready:
        i = ready.pop()
        seen += 1
        parents = parent_members[parent_offsets[i] : parent_offsets[i + 1]]
        own = {i}
        for p in parents.tolist():
            own |= ancestors[p]
        ancestors[i] = frozenset(own)
        for c in children_of[i].tolist():
            in_degree[c] -= 1
            if in_degree[c] == 0:
                ready.append(c)
    if seen != k:
        stuck = [names[i] for i in range(k) if ancestors[i] is None][:5]
        raise InputError(f"expected an acyclic hierarchy, found a cycle through {stuck}")
    sizes = np.fromiter((len(a) for a in ancestors), dtype=np.int64, count=k)
    segment = np.fromiter(
        (c for a in ancestors for c in a), dtype=np.int32, count=int(sizes.sum())
    )
    member = np.repeat(np.arange(k, dtype=np.int32), sizes)
    order = np.lexsort((member, segment))
    segment, member = segment[order], member[order]
    offsets, members = csr(segment, member, k)
    return offsets, members, segment

"""Connected components of a pair list, vectorized: union-find as rounds of hooking + pointer jumping.

Each round hooks the larger of two roots under the smaller one for every edge whose ends are
in different trees (``np.minimum.at``), then halves paths until every node points at its root.
Roots only ever point to smaller ids, so no cycle can form; each round merges at least one
pair of trees and in practice a handful of rounds suffice. Cost: two int64 per involved node.
"""

from __future__ import annotations

import numpy as np


def connected_components(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes appearing in the pairs (sorted) and, for each, the smallest node of its component."""
    nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    a, b = inverse[: left.size], inverse[left.size :]
    parent = np.arange(nodes.size)
    while True:
        root_a, root_b = parent[a], parent[b]
        differ = root_a != root_b
        if not differ.any():
            break
        low = np.minimum(root_a[differ], root_b[differ])
        high = np.maximum(root_a[differ], root_b[differ])
        np.minimum.at(parent, high, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return nodes, nodes[parent]

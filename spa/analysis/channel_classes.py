"""Root channels of a group: the positions of its member spaces merged element by element along the
couplings (Concat offsets, Flatten blocks, shuffles and group tokens are all position maps). Every
resulting class is one root channel: removing it removes its positions from every member space."""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from spa.analysis.context import Coupling
from spa.analysis.space import Space


def assign_classes(members: list[Space], couplings: list[Coupling]) -> int:
    """Merge positions that must share a fate; number the classes in a stable order.

    A multi-axis space must keep a product shape: removing a class has to remove whole slices
    along one of its axes. When the couplings already make every slice along some axis one class
    (attention heads: each head's dims merged by Q·Kᵀ), that holds as it is; otherwise the
    positions sharing one index on the space's preferred axis are merged (channel shuffles)."""
    offsets, total = {}, 0
    for m in members:
        offsets[m.key] = total
        total += m.size
    rows, cols = [], []
    for c in couplings:
        rows.append(np.arange(c.a.size) + offsets[c.a.key])
        cols.append((np.arange(c.b.size) if c.a_to_b is None else c.a_to_b) + offsets[c.b.key])
    multi = [m for m in members if len(m.axes) > 1]
    forced: set[str] = set()
    while True:
        labels = _components(rows, cols, total)
        newly = []
        for m in multi:
            if m.key in forced:
                continue
            grid = labels[offsets[m.key]: offsets[m.key] + m.size].reshape(m.dims)
            if not any(slices_are_classes(grid, i) for i in range(len(m.axes))):
                newly.append(m)
        if not newly:
            break
        for m in newly:
            forced.add(m.key)
            axis = m.prune_axis if m.prune_axis is not None else m.axes[-1]
            along = m.coordinates()[:, m.axes.index(axis)]
            order = np.arange(m.size)
            first_pos = np.full(m.dims[m.axes.index(axis)], m.size)
            np.minimum.at(first_pos, along, order)
            rows.append(order + offsets[m.key])
            cols.append(first_pos[along] + offsets[m.key])
    # Stable numbering: classes in order of first appearance over sorted members.
    _, first_index = np.unique(labels, return_index=True)
    order = np.argsort(first_index)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    classes = renumber[labels]
    for m in members:
        m.pos2class = classes[offsets[m.key]: offsets[m.key] + m.size]
    return len(order)


def _components(rows: list, cols: list, total: int) -> np.ndarray:
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    adjacency = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(total, total))
    return connected_components(adjacency, directed=False)[1]


def slices_are_classes(grid: np.ndarray, axis: int) -> bool:
    """Every slice of `grid` at a fixed index of `axis` holds a single class."""
    flat = np.moveaxis(grid, axis, 0).reshape(grid.shape[axis], -1)
    return bool((flat == flat[:, :1]).all())

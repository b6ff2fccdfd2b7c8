"""Channel spaces and the position maps between them.

A channel space is one or more axes of one tensor whose positions are channels. Positions of a
multi-axis space are numbered row-major over its axes in *significance order* (the order of the
axes tuple, which need not be sorted: a Transpose can swap them). A parameter axis is a space too,
so slicing treats activations and weights alike. A virtual space (value None) stands for a
structure that has no tensor of its own, such as the groups of a grouped convolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Space:
    value: str | None          # tensor name; None for a virtual space
    axes: tuple[int, ...]      # axes in significance order
    dims: tuple[int, ...]      # size of each axis in `axes`
    kind: str                  # "act", "param" or "virtual"
    label: str = ""            # readable name for virtual spaces
    frozen: str | None = None  # why this space may not change width
    prune_axis: int | None = None  # multi-axis spaces: the axis whose whole slices are removed
    pos2class: np.ndarray | None = field(default=None, repr=False)  # filled by group building
    role: str | None = None    # "heads" (attention head structure) or "hidden" (a normalised width)

    @property
    def key(self) -> str:
        if self.value is None:
            return f"<{self.label}>"
        return f"{self.value}:{','.join(map(str, self.axes))}"

    @property
    def size(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))

    def coordinates(self) -> np.ndarray:
        """(size, len(axes)) array: the per-axis index of every position."""
        return np.stack(np.unravel_index(np.arange(self.size), self.dims), axis=1) if self.dims else np.zeros((1, 0), int)


def regroup_map(src_dims_by_axis: dict[int, int], src_axes: tuple[int, ...], group_axes: list[int]) -> np.ndarray:
    """Positions of a flat axis made by merging `group_axes` (row-major, ascending) mapped to
    positions of the space on `src_axes` (a subset of group_axes, in significance order).

    Merging (N,C,H,W) axes 1..3 with a space on axis 1 gives the block map p -> p // (H*W).
    """
    sizes = [src_dims_by_axis[a] for a in group_axes]
    coords = np.unravel_index(np.arange(int(np.prod(sizes, dtype=np.int64))), sizes)
    picked = [coords[group_axes.index(a)] for a in src_axes]
    return np.ravel_multi_index(picked, [src_dims_by_axis[a] for a in src_axes]) if picked else np.zeros(len(coords[0]), int)


def reshape_groups(in_dims: list[int], out_dims: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input axes with runs of output axes of equal product, left to right.

    Returns None when the shapes do not factor that way. Trailing size-1 axes join the last run.
    """
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    n, m = len(in_dims), len(out_dims)
    while i < n and j < m:
        gi, gj = [i], [j]
        pi, pj = in_dims[i], out_dims[j]
        i += 1
        j += 1
        while pi != pj:
            if pi < pj:
                if i >= n:
                    return None
                pi *= in_dims[i]
                gi.append(i)
                i += 1
            else:
                if j >= m:
                    return None
                pj *= out_dims[j]
                gj.append(j)
                j += 1
        groups.append((gi, gj))
    rest_in, rest_out = list(range(i, n)), list(range(j, m))
    if any(in_dims[a] != 1 for a in rest_in) or any(out_dims[a] != 1 for a in rest_out):
        return None
    if groups:
        groups[-1][0].extend(rest_in)
        groups[-1][1].extend(rest_out)
    elif rest_in or rest_out:
        groups.append((rest_in, rest_out))
    return groups

"""Greedy OBS selection: re-pick each group's removed channels one at a time by OBS cost, with the
sinks' W and H⁻¹ downdated after each pick (see shared/docs/OBSPA.md)."""
from __future__ import annotations

import numpy as np

from spa.core.progress import progress
from spa.passes.compensate.obs import removal_cost, system
from spa.statistics.sinks import SinkPlan, SinkWeight


def greedy_selection(analysis, plan, sinks: dict[str, SinkPlan], hs: dict[str, np.ndarray]) -> None:
    """Re-pick each group's removed channels one at a time, in place: keep the count the allocation
    gave, but choose each next channel by its OBS cost after the previous removals were
    compensated (W and H⁻¹ downdated), summed over the group's sinks. Joint costs of single
    channels miss that two similar channels can stand in for each other once, not twice."""
    groups = analysis.group_by_key()
    for key, remove in progress(list(plan.removed.items()), "greedy selection"):
        if not remove:
            continue
        group = groups[key]
        states = [_GreedySink(plan_.sink, plan_.space, group.width, hs[s.node])
                  for s in group.sinks if (plan_ := sinks.get(s.node)) is not None and s.node in hs]
        if not states:
            continue
        chosen: list[int] = []
        for _ in range(len(remove)):
            costs = sum(st.costs() for st in states)
            costs[chosen] = np.inf
            pick = int(np.argmin(costs))
            chosen.append(pick)
            for st in states:
                st.remove(pick)
        plan.removed[key] = sorted(chosen)
    plan.meta.update(selection="greedy")


class _GreedySink:
    """One sink's W̃ and H̃⁻¹ during greedy selection, with each channel's columns."""

    def __init__(self, sink: SinkWeight, space, width: int, h: np.ndarray):
        self.w, damped_h = system(sink, h)
        self.h_inv = np.linalg.inv(damped_h)
        self.cols = [sink.columns(np.nonzero(space.pos2class == c)[0]) for c in range(width)]
        sizes = {len(c) for c in self.cols}
        self.uniform = np.stack(self.cols) if len(sizes) == 1 and 0 not in sizes else None

    def costs(self) -> np.ndarray:
        """½·tr(W_P (H⁻¹_PP)⁻¹ W_Pᵀ) for every channel's column set P, with the current W and H⁻¹."""
        if self.uniform is not None:
            c = self.uniform
            block = self.h_inv[c[:, :, None], c[:, None, :]]                  # (n, t, t)
            wp = np.moveaxis(self.w[:, c], 0, -1)                               # (n, t, rows)
            block = block + 1e-12 * np.eye(c.shape[1])
            return 0.5 * np.einsum("ntr,ntr->n", wp, np.linalg.solve(block, wp))
        return np.array([removal_cost(self.w, self.h_inv, c) if len(c) else 0.0 for c in self.cols])

    def remove(self, channel: int) -> None:
        p = self.cols[channel]
        if not len(p):
            return
        solve = np.linalg.solve(self.h_inv[np.ix_(p, p)], self.h_inv[p, :])   # (H⁻¹_PP)⁻¹ H⁻¹_P·
        self.w -= self.w[:, p] @ solve
        self.h_inv -= self.h_inv[:, p] @ solve

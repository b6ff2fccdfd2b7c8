"""The pruning plan: which root channels of which group are removed. Plain data, saved as JSON,
so a plan can be inspected, edited and re-applied to another copy of the same model."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from spa.core.errors import PlanError

PLAN_FORMAT = 1
# A plan lists channel indices: tens of MiB is already far beyond any real model's plan.
PLAN_MAX_BYTES = 64 << 20
# JSON nesting a plan may have (its own structure is 3 deep; 'meta' holds flat options)
PLAN_MAX_DEPTH = 32


@dataclass
class PruningPlan:
    removed: dict[str, list[int]] = field(default_factory=dict)  # group key -> removed classes
    widths: dict[str, int] = field(default_factory=dict)         # group key -> width it was made for
    meta: dict = field(default_factory=dict)                     # how it was made (criterion, target…)

    def is_empty(self) -> bool:
        return not any(self.removed.values())

    def to_json(self) -> dict:
        return {"spa_plan": PLAN_FORMAT, "meta": self.meta,
                "groups": [{"key": k, "width": self.widths.get(k), "remove": sorted(v)}
                           for k, v in sorted(self.removed.items()) if v]}

    @classmethod
    def from_json(cls, data: dict) -> "PruningPlan":
        if not isinstance(data, dict) or data.get("spa_plan") != PLAN_FORMAT:
            raise PlanError("not an SPA plan (missing 'spa_plan': 1)")
        meta = data.get("meta", {})
        entries = data.get("groups", [])
        if not isinstance(meta, dict) or not isinstance(entries, list):
            raise PlanError("plan 'meta' must be an object and 'groups' a list")
        plan = cls(meta=meta)
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) \
                    or not isinstance(entry.get("remove"), list) \
                    or not all(_is_int(i) for i in entry["remove"]) \
                    or not (entry.get("width") is None or _is_int(entry["width"])):
                raise PlanError("each plan group needs a string 'key', an integer list 'remove' "
                               "and an optional integer 'width'")
            if entry["key"] in plan.removed:
                raise PlanError(f"plan lists group '{entry['key']}' twice")
            # a channel listed twice is removed once: de-duplicate so counts say what happens
            plan.removed[entry["key"]] = sorted(set(entry["remove"]))
            if entry.get("width") is not None:
                plan.widths[entry["key"]] = entry["width"]
        return plan

    def save(self, path: str | os.PathLike, *, inputs=()) -> None:
        from spa.core.output import write_text

        write_text(path, json.dumps(self.to_json(), indent=1), inputs=inputs, what="--plan-out")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PruningPlan":
        from spa.graph.io import read_bounded

        raw = read_bounded(path, PLAN_MAX_BYTES, "plan", error=PlanError)
        check_json_depth(raw, PLAN_MAX_DEPTH, f"{path}: plan", error=PlanError)
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise PlanError(f"{path}: not a readable JSON plan ({str(exc)[:200]})") from None
        return cls.from_json(data)

    def check_against(self, analysis) -> None:
        """Refuse a plan that does not fit this model's groups. A plan saved before groups had
        readable keys names them by a member (`onnx::MatMul_8677:0`): those keys are renamed."""
        self.rename_old_keys(analysis)
        groups = analysis.group_by_key()
        for key, remove in self.removed.items():
            if not remove:
                continue
            group = groups.get(key)
            if group is None:
                raise PlanError(f"plan names group '{key}', which this model does not have")
            if not group.prunable:
                raise PlanError(f"plan prunes group '{key}', which is not prunable: {group.reason}")
            if self.widths.get(key, group.width) != group.width:
                raise PlanError(f"plan was made for width {self.widths[key]} of group '{key}', the model has {group.width}")
            if min(remove) < 0 or max(remove) >= group.width:
                raise PlanError(f"plan removes channel indices outside group '{key}' (width {group.width})")
            if len(set(remove)) >= group.width:
                raise PlanError(f"plan removes every channel of group '{key}'")

    def rename_old_keys(self, analysis) -> None:
        """Key this plan's groups by the analysis' keys where it uses a group's old key."""
        current = analysis.group_by_key()
        renames = {}
        for key in self.removed:
            group = None if key in current else analysis.group_named(key)
            if group is not None:
                renames[key] = group.key
        for old, new in renames.items():
            if new in self.removed or list(renames.values()).count(new) > 1:
                raise PlanError(f"plan lists group '{new}' twice (also as '{old}')")
        self.removed = {renames.get(k, k): v for k, v in self.removed.items()}
        self.widths = {renames.get(k, k): v for k, v in self.widths.items()}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_json_depth(raw: bytes, limit: int, what: str, error=PlanError) -> None:
    """Refuse JSON nested deeper than `limit` before parsing it (the parser would recurse until
    RecursionError). Brackets inside strings do not count."""
    import re

    depth = 0
    for match in re.finditer(rb'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise error(f"{what} is nested more than {limit} levels deep")
        elif token in (b"]", b"}"):
            depth -= 1

"""The pruning plan: which root channels of which group are removed. Plain data, saved as JSON,
so a plan can be inspected, edited and re-applied to another copy of the same model."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from spa.errors import OutputError, PlanError

PLAN_FORMAT = 1


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
            plan.removed[entry["key"]] = list(entry["remove"])
            if entry.get("width") is not None:
                plan.widths[entry["key"]] = entry["width"]
        return plan

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PruningPlan":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise PlanError(f"{path}: no such plan file") from None
        except (OSError, ValueError) as exc:
            raise PlanError(f"{path}: not a readable JSON plan ({exc})") from None
        return cls.from_json(data)

    def check_against(self, analysis) -> None:
        """Refuse a plan that does not fit this model's groups."""
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


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def write_text_atomic(path: Path, text: str) -> None:
    if not path.parent.exists():
        raise OutputError(f"{path.parent}: output folder does not exist")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder")
    fd, tmp = tempfile.mkstemp(prefix=".spa-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

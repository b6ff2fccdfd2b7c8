"""The channel-dependency graph as Graphviz DOT, for viewing: one cluster per group, one node per
channel space (weights as boxes, activations as ellipses), one edge per coupling. Prunable groups
get a colour each; groups that may not be pruned are grey and their label says why."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from spa.core.errors import SpaError

# ColorBrewer "Set3"-like pastel fills; cycled over prunable groups.
_PALETTE = ["#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
            "#bc80bd", "#ccebc5", "#ffed6f"]
_BLOCKED = "#d9d9d9"


def _quote(text: str) -> str:
    """A DOT double-quoted string (names contain '/', ':', '.', quotes…)."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(analysis, plan=None) -> str:
    """DOT text for `analysis` (spa.analysis.groups.Analysis); with a plan, pruned groups show kept/width."""
    lines = ["graph spa_groups {", "  graph [rankdir=LR, fontname=Helvetica, fontsize=10];",
             "  node [fontname=Helvetica, fontsize=9, style=filled];"]
    colour = 0
    for g in analysis.groups:
        if g.prunable:
            fill, colour = _PALETTE[colour % len(_PALETTE)], colour + 1
            status = "prunable"
            if plan is not None and plan.removed.get(g.key):
                status = f"kept {g.width - len(plan.removed[g.key])}/{g.width}"
        else:
            fill, status = _BLOCKED, f"not prunable: {g.reason}"
        label = f"group {g.id}: {g.key}\nwidth {g.width}, {status}"
        lines.append(f"  subgraph cluster_{g.id} {{")
        lines.append(f"    label={_quote(label)}; style=rounded; color={_quote('#555555' if g.prunable else '#cc0000')};")
        for m in g.members:
            shape = {"param": "box", "virtual": "diamond"}.get(m.kind, "ellipse")
            lines.append(f"    {_quote(m.key)} [shape={shape}, fillcolor={_quote(fill)}, group={g.id}];")
        lines.append("  }")
    for c in analysis.couplings:
        style = "solid" if c.a_to_b is None else "dashed"  # dashed: an index map, not identity
        lines.append(f"  {_quote(c.a.key)} -- {_quote(c.b.key)} [style={style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_png(dot_text: str, path: Path, *, inputs=()) -> None:
    """Render with Graphviz's `dot` into `path`, atomically; SpaError when Graphviz is missing."""
    from spa.core.output import write_files

    exe = shutil.which("dot")
    if exe is None:
        raise SpaError("--png needs Graphviz's 'dot' program (apt-get install graphviz); the .dot file "
                       "can be viewed without it")

    def run_graphviz(tmp: Path) -> None:  # Graphviz writes the file by name
        done = subprocess.run([exe, "-Tpng", "-o", str(tmp)], input=dot_text.encode(), capture_output=True)
        if done.returncode != 0:
            raise SpaError(f"Graphviz failed: {done.stderr.decode(errors='replace').strip()[:200]}")

    write_files({Path(path): run_graphviz}, inputs=inputs, what="--png")

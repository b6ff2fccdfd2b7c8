"""`spa report` as a file: HTML (self-contained page, plots as PNG files beside it) or Markdown.

The report dict (spa.api.report) is laid out once as a list of sections — paragraphs, tables and
images — and each format renders that list, so HTML and Markdown always say the same thing."""
from __future__ import annotations

import html
import io as _io
from dataclasses import dataclass, field
from pathlib import Path

from spa.core.errors import InputError
from spa.report.tables import before_after, block_rows, change, human, macs_label, number

FORMATS = {".html": "html", ".htm": "html", ".md": "md"}


@dataclass
class Section:
    title: str
    items: list = field(default_factory=list)   # ("p", text) | ("table", headers, rows) | ("img", file, alt)


def write(rep: dict, path: Path, *, inputs=()) -> list[Path]:
    """Write the report and its plots; all files appear together or none do. No target may be
    one of `inputs` (spa.core.output's policy)."""
    from spa.core.errors import OutputError
    from spa.core.output import check_target, write_files

    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise OutputError(f"{path}: the report must end in .html or .md")
    check_target(path, inputs=inputs, what="the report")
    try:
        images = {}
        if rep.get("layers"):
            images[f"{path.stem}.widths.png"] = width_plot(rep["layers"])
        if rep.get("scores") and rep["scores"].get("edges"):
            images[f"{path.stem}.scores.png"] = score_plot(rep["scores"], rep.get("criterion"))
        sections = layout(rep, list(images))
        text = render_html(rep, sections) if kind == "html" else render_markdown(rep, sections)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        # the stored report is the model's metadata: a file from anywhere may carry anything there
        raise InputError(f"{rep.get('model', 'the model')}: its stored SPA report is malformed "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    files = {path.parent / name: data for name, data in images.items()}
    files[path] = text.encode()
    return write_files(files, inputs=inputs, what="the report")


# ---------------------------------------------------------------- plots (matplotlib, no pyplot state)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def width_plot(layers: list[dict]) -> bytes:
    """Output width of every layer: original (grey) behind kept (blue)."""
    from matplotlib.figure import Figure

    n = len(layers)
    fig = Figure(figsize=(min(max(6.0, 0.18 * n + 2), 24.0), 4.0))
    ax = fig.add_subplot()
    x = range(n)
    ax.bar(x, [r["out_before"] for r in layers], color="#cccccc", label="original", width=0.8)
    ax.bar(x, [r["out_after"] for r in layers], color="#2b6cb0", label="kept", width=0.8)
    ax.set_ylabel("output channels")
    ax.set_xlabel("layer (graph order)")
    ax.set_title("kept width per layer")
    if n <= 80:
        ax.set_xticks(list(x), [_short(r["layer"]) for r in layers], rotation=90, fontsize=6)
    ax.legend(loc="upper left")
    return _png(fig)


def score_plot(hist: dict, criterion: str | None) -> bytes:
    """Stacked histogram of channel scores: kept vs removed."""
    from matplotlib.figure import Figure

    edges = hist["edges"]
    lefts, widths = edges[:-1], [b - a for a, b in zip(edges, edges[1:])]
    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.add_subplot()
    ax.bar(lefts, hist["removed"], width=widths, align="edge", color="#c53030", label="removed")
    ax.bar(lefts, hist["kept"], width=widths, align="edge", bottom=hist["removed"], color="#2b6cb0", label="kept")
    ax.set_xlabel(f"{criterion or 'criterion'} score (normalised per group)")
    ax.set_ylabel("channels")
    ax.legend()
    return _png(fig)


def _short(name: str) -> str:
    return name if len(name) <= 32 else "…" + name[-31:]


# ---------------------------------------------------------------- layout


def layout(rep: dict, images: list[str]) -> list[Section]:
    """The report's sections, the outcome first (a browser's first screen), the long tables last."""
    def image(suffix: str) -> str | None:
        return next((i for i in images if i.endswith(suffix)), None)

    sections = [_summary(rep), _measured(rep)]
    layers = rep.get("layers") or []
    macs = macs_label(rep.get("before"), rep["after"])
    if layers:
        sections.append(Section("Width per layer", [("img", image(".widths.png"), "kept width per layer")]))
        sections.append(Section("Parameters and MACs per block", [("table", [
            "block", "layers", "params", macs, "MACs after/before"],
            [[b["block"], str(b["layers"]), change(b["params_before"], b["params_after"], human),
              change(b["macs_before"], b["macs_after"], human),
              f"{b['macs_after'] / b['macs_before']:.1%}" if b["macs_before"] else "-"] for b in block_rows(layers)])]))
    else:
        sections.append(Section("Width per layer", [
            ("p", "Per-layer widths are unknown: give the original model (--original).")]))
    sections += [_scores(rep, image(".scores.png")), _plan(rep)]
    if layers:
        sections.append(Section("Layers", [("table", ["layer", "op", "in", "out", "params", macs], [
            [r["layer"], r["op"], change(r["in_before"], r["in_after"]), change(r["out_before"], r["out_after"]),
             change(r["params_before"], r["params_after"], human), change(r["macs_before"], r["macs_after"], human)]
            for r in layers])]))
    return sections


def _summary(rep: dict) -> Section:
    summary = Section("Summary")
    before, after = rep.get("before"), rep["after"]
    if rep.get("original"):
        summary.items.append(("p", f"Original: {rep['original']} (canonicalized as SPA prunes it)."))
    if before:
        summary.items.append(("table", ["", "before", "after", "after/before"], before_after(before, after)))
    else:
        summary.items.append(("p", "No before→after: the model carries no SPA report and no --original was given."))
        summary.items.append(("table", ["", "value"], [["parameters", human(after["params"])],
                                                       [macs_label(after), human(after["macs"])],
                                                       ["nodes", str(after["nodes"])]]))
    if rep.get("groups_prunable") is not None:
        summary.items.append(("p", f"{len(rep['groups'])} of {rep['groups_prunable']} prunable groups pruned "
                                   f"({rep['groups_total']} groups in all), {rep['channels_removed']} channels removed."))
    return summary


def _measured(rep: dict) -> Section:
    measured = Section("Fidelity and latency")
    if rep.get("oracle_error") is not None:
        measured.items.append(("p", f"Oracle (sliced vs masked original): relative error {rep['oracle_error']:.1e}."))
    if rep.get("fidelity"):
        f = rep["fidelity"]
        measured.items.append(("p", f"Outputs against the original on {f['samples']} {f['inputs']} inputs:"))
        measured.items.append(("table", ["output", "max |diff|", "mean |diff|", "cosine"],
                               [[o["name"], number(o["max_abs"]), number(o["mean_abs"]), number(o["cosine"], ".4f")]
                                for o in f["outputs"]]))
    else:
        measured.items.append(("p", "Fidelity not measured (spa report PRUNED --original MODEL --measure)."))
    if rep.get("latency"):
        lat = rep["latency"]
        measured.items.append(("p", f"{lat['runtime']} latency, median of {lat['rounds']} alternated runs: "
                                    f"{lat['before_ms']:.2f} ms → {lat['after_ms']:.2f} ms "
                                    f"({lat['speedup']:.2f}× faster)."))
    else:
        measured.items.append(("p", "Latency not measured."))
    return measured


def _scores(rep: dict, image: str | None) -> Section:
    scores = Section("Criterion scores")
    if image:
        scores.items.append(("img", image, "score histogram"))
        scores.items.append(("p", f"Criterion {rep.get('criterion')}: "
                                  f"{sum(rep['scores']['removed'])} channels removed, "
                                  f"{sum(rep['scores']['kept'])} kept among the ranked groups."))
    else:
        scores.items.append(("p", "No scores recorded" + (f": {rep['scores_note']}." if rep.get("scores_note") else ".")))
    return scores


def _plan(rep: dict) -> Section:
    plan = Section("Plan")
    if rep.get("plan"):
        meta = rep["plan"].get("meta", {})
        plan.items.append(("p", ", ".join(f"{k} {v}" for k, v in meta.items()) or "no settings recorded"))
        plan.items.append(("table", ["group", "width", "kept", "removed"],
                           [[g["key"], str(g["width"]), str(g["kept"]), f"{1 - g['kept'] / g['width']:.0%}"]
                            for g in rep.get("groups", [])]))
    else:
        plan.items.append(("p", "No plan: the model was not written by spa prune."))
    return plan


# ---------------------------------------------------------------- renderers

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#1a202c;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #cbd5e0;padding:2px 8px;
font-size:13px;text-align:left}th{background:#edf2f7}img{max-width:100%;border:1px solid #e2e8f0}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #e2e8f0}"""


def render_html(rep: dict, sections: list[Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8"/>',
           f"<title>SPA report: {e(rep['model'])}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>SPA report: {e(rep['model'])}</h1>"]
    for section in sections:
        out.append(f"<h2>{e(section.title)}</h2>")
        for item in section.items:
            if item[0] == "p":
                out.append(f"<p>{e(item[1])}</p>")
            elif item[0] == "img":
                out.append(f'<p><img src="{e(item[1])}" alt="{e(item[2])}"/></p>')
            else:
                _, headers, rows = item
                out.append("<table>")
                out.append("<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in headers) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
                out.append("</table>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def render_markdown(rep: dict, sections: list[Section]) -> str:
    def cell(c) -> str:
        return str(c).replace("|", "\\|")

    out = [f"# SPA report: {rep['model']}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for item in section.items:
            if item[0] == "p":
                out += [item[1], ""]
            elif item[0] == "img":
                out += [f"![{item[2]}]({item[1]})", ""]
            else:
                _, headers, rows = item
                out.append("| " + " | ".join(cell(h) for h in headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
                out.append("")
    return "\n".join(out)

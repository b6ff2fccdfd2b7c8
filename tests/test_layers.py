"""The house rules of the layout (DESIGN.md, issue 15), checked on the source with `ast`, imports inside
functions included:

(a) no module imports a module of a higher layer,
(b) no import cycle between sub-packages,
(c) no module is longer than MAX_LINES.

Layers, bottom to top (spa/__init__.py is the facade and exempt; `import spa` resolves to it):
spa.core < spa.graph < spa.runtime < spa.analysis < spa.statistics < spa.importance < spa.passes
(passes/) < spa.allocation < spa.report < spa.flow < spa.training < spa.api < spa.exporters (exporters/) < spa.cli."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["spa.core", "spa.graph", "spa.runtime", "spa.analysis", "spa.statistics", "spa.importance", "spa.passes",
          "spa.allocation", "spa.report", "spa.flow",
          "spa.training", "spa.api", "spa.exporters", "spa.cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}
# source folder → package name (pyproject's package-dir)
FOLDERS = {"spa": "spa", "passes": "spa.passes", "exporters": "spa.exporters"}
MAX_LINES = 350


def modules() -> dict[str, Path]:
    """Dotted name → file, for every module of spa/, passes/ and exporters/."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (None: the spa facade, or not SPA)."""
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def imports_of(module: str, path: Path) -> set[str]:
    """The SPA modules `module` imports, anywhere in the file (resolved to modules where a name is one)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {name for name in found if name == "spa" or name.startswith("spa.")}


def import_edges() -> list[tuple[str, str, str, str]]:
    """(importer, its layer, imported, its layer) for every import between two layered modules."""
    edges = []
    for module, path in MODULES.items():
        own = layer_of(module)
        if own is None:  # the facade
            continue
        for target in sorted(imports_of(module, path)):
            theirs = layer_of(target)
            if theirs is not None:
                edges.append((module, own, target, theirs))
    return edges


def upward_imports() -> list[str]:
    return [f"{m} ({own}) imports {t} ({theirs})" for m, own, t, theirs in import_edges() if RANK[theirs] > RANK[own]]


def package_cycles() -> list[list[str]]:
    graph = nx.DiGraph()
    graph.add_edges_from((own, theirs) for _, own, _, theirs in import_edges() if own != theirs)
    cycles = [c[c.index(min(c)):] + c[:c.index(min(c))] for c in nx.simple_cycles(graph)]  # from a fixed start
    return sorted(cycles)


def long_modules() -> list[tuple[int, str]]:
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in MODULES.items()), reverse=True)
    return [(n, m) for n, m in sizes if n > MAX_LINES]


def test_every_module_has_a_layer():
    assert {m for m in MODULES if layer_of(m) is None} == {"spa"}
    assert "spa.passes.slice" in MODULES and "spa.exporters.hf" in MODULES and "spa.graph.io" in MODULES


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """A lazy upward import is an import: the parser finds it (the cycle in issue 15 was one)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from spa.exporters.hf import model_file\n    from spa.graph import io\n")
    assert imports_of("spa.runtime.probe", probe) == {"spa.exporters.hf", "spa.graph.io"}


def test_no_module_imports_a_higher_layer():
    found = upward_imports()
    assert not found, f"{len(found)} upward imports:\n" + "\n".join(found)


def test_no_cycle_between_subpackages():
    cycles = package_cycles()
    assert not cycles, "import cycles between sub-packages:\n" + "\n".join(" → ".join(c + c[:1]) for c in cycles)


def test_no_module_is_too_long():
    sizes = sorted(((len(p.read_text().splitlines()), m) for m, p in MODULES.items()), reverse=True)
    too_long = long_modules()
    assert not too_long, (f"modules over {MAX_LINES} lines (largest first; largest overall {sizes[0][1]}, "
                          f"{sizes[0][0]}): " + ", ".join(f"{m} ({n})" for n, m in too_long))


if __name__ == "__main__":  # the findings, for a report: python tests/test_layers.py
    print("\n".join(upward_imports()) or "no upward imports")
    print("\n".join(" → ".join(c + c[:1]) for c in package_cycles()) or "no cycles")
    print(", ".join(f"{m} ({n})" for n, m in long_modules()) or f"no module over {MAX_LINES} lines")

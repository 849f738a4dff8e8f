"""The layer table of docs/developer.rst is the package's import graph, both ways."""

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skvaeinv"


def _group(module: str) -> str:
    """``skvaeinv.engine.mcmc.kernels`` -> ``engine.mcmc``; ``skvaeinv.forward._base`` ->
    ``forward``; ``skvaeinv`` -> ``skvaeinv``."""
    parts = module.split(".")
    if parts[1:3] == ["engine", "mcmc"]:
        return "engine.mcmc"
    return parts[1] if len(parts) > 1 else "skvaeinv"


def _imports(path: Path) -> set[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            else:
                found.add(node.module or "")
    return {m for m in found if m.split(".")[0] == "skvaeinv"}


def code_graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        module = ".".join(parts if parts[-1] != "__init__" else parts[:-1])
        graph[_group(module)]
        for target in _imports(path):
            if _group(target) != _group(module):
                graph[_group(module)].add(_group(target))
    return dict(graph)


def documented_graph() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "developer.rst").read_text()
    block = text.split("who imports whom")[1].split(".. code-block:: text")[1]
    block = block.split("Drawn as layers")[0]
    graph = {}
    for line in block.splitlines():
        match = re.match(r"\s+([\w.]+)\s+->(.*)$", line)
        if match:
            graph[match[1]] = {t.strip() for t in match[2].split(",") if t.strip()}
    return graph


def test_layer_table_matches_the_imports():
    code, docs = code_graph(), documented_graph()
    assert docs, "no layer table found in docs/developer.rst"
    code = {k: v for k, v in code.items() if k != "skvaeinv"}   # the package's __init__
    assert set(code) <= set(docs), sorted(set(code) - set(docs))
    for module, targets in docs.items():
        assert code.get(module, set()) == targets, (module, sorted(code.get(module, set())))


@pytest.mark.parametrize("module", ["engine", "engine.mcmc"])
def test_the_engine_needs_no_scikit_learn(module):
    folder = PACKAGE / module.replace(".", "/")
    files = folder.glob("*.py") if module == "engine.mcmc" else [
        p for p in folder.rglob("*.py") if "mcmc" not in p.parts]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "sklearn" for n in names), path

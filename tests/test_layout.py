"""The package's layout: its import graph, drawn from the code's own imports, has no circle and no
import against the layering that the README describes.

    ddpm_helpers            the package's face (version, profiles) and the command line
    ├── measuring           metric, classifier, intervals, guidance trade-off, U-Net costs
    ├── playground          the 2-D diffusion of chapter "Diffusion in two dimensions"
    ├── engine              data, pipelines, the training loop, checkpoints, runs, compiled samplers
    ├── method              the math a reader studies: schedules, forward process, reverse steps, U-Net
    └── notebook            what a chapter calls to show things: glue, checks, figures, progress

A module may import from its own subpackage and from the subpackages below it in RANKS (the face,
``ddpm_helpers/__init__.py`` and ``profiles``, is below everything; the command line above all).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ddpm_helpers"
# Lower rank: may be imported by higher ranks. Equal ranks may not import each other.
RANKS = {"ddpm_helpers": 0, "ddpm_helpers.profiles": 0, "ddpm_helpers.notebook": 1, "ddpm_helpers.method": 2,
         "ddpm_helpers.engine": 3, "ddpm_helpers.playground": 4, "ddpm_helpers.measuring": 4,
         "ddpm_helpers.cli": 5, "ddpm_helpers.__main__": 6}
SUBPACKAGES = ("notebook", "method", "engine", "playground", "measuring")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ddpm_helpers module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ddpm_helpers")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ddpm_helpers"):
            for alias in node.names:  # `from ddpm_helpers.engine import training` imports a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if module_path(candidate) else node.module)
    return found


def module_path(name: str) -> Path | None:
    base = PACKAGE.parent / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    return {name: {m for m in imports_of(path) if m != name} for name, path in modules.items()}


def rank(module: str) -> tuple[int, str]:
    """``(rank, layer)`` of a module: its subpackage's, or its own for the modules at the top."""
    parts = module.split(".")
    layer = ".".join(parts[:2]) if len(parts) > 1 and parts[1] in SUBPACKAGES else module
    if layer not in RANKS:
        raise AssertionError(f"{module} belongs to no layer: put it in one of {SUBPACKAGES} or add it to RANKS")
    return RANKS[layer], layer


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def against_layering(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in edges.items():
        own, own_layer = rank(module)
        for target in targets:
            other, other_layer = rank(target)
            if other_layer != own_layer and other >= own and not (own == other == 0):
                wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def test_the_package_has_no_import_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_import_runs_down_the_layers():
    assert against_layering(graph()) == []


def test_every_module_sits_in_a_layer_and_the_tooling_is_outside():
    modules = graph()
    for module in modules:
        rank(module)
    assert not any(name.split(".")[-1] in ("booktools", "bookbuild", "sitescan") for name in modules)


def test_the_checks_find_a_circle_and_an_upward_import():
    """The two checks above can fail: a made-up circle and a method module importing the engine."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    upward = {"ddpm_helpers.method.diffusion": {"ddpm_helpers.engine.training"},
              "ddpm_helpers.engine.training": {"ddpm_helpers.method.diffusion"}}
    assert against_layering(upward) == ["ddpm_helpers.method.diffusion -> ddpm_helpers.engine.training"]
    with pytest.raises(AssertionError, match="belongs to no layer"):
        rank("ddpm_helpers.somewhere_new")

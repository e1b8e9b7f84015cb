"""The appendix "API reference" (book/api.md) documents the whole package, each object once.

Sphinx's autodoc writes the page from the docstrings at build time, and the strict build of
``make test`` (``-W -n``) fails on any docstring it cannot read or any reference that does not
resolve. What the build cannot see is checked here, without a build: a module missing from the
page, a module whose re-exported names would be documented a second time, and a public function,
class or method without a docstring (autodoc leaves those out silently).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "api.md"
AUTOMODULE = re.compile(r"^\.\. automodule:: (\S+)\n((?:   :[^\n]*\n)*)", re.MULTILINE)
# Methods of the Keras protocol (a layer's build/call/...): the class docstring describes the
# layer, and the chapter shows its call(); the page leaves Keras' own docstrings out.
KERAS_PROTOCOL = {"build", "call", "compute_output_shape", "get_config"}


def modules() -> set[str]:
    names = set()
    for path in (ROOT / "ddpm_helpers").rglob("*.py"):
        if "__pycache__" in path.parts or path.name == "__main__.py":
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def documented() -> dict[str, list[str]]:
    """``{module: [its options]}`` for every ``automodule`` of the page (a repeat is an error)."""
    found: dict[str, list[str]] = {}
    for name, options in AUTOMODULE.findall(PAGE.read_text()):
        assert name not in found, f"{name} is documented twice in book/api.md"
        found[name] = [line.strip() for line in options.splitlines()]
    return found


def test_every_module_is_on_the_page_once():
    assert set(documented()) == modules()


def test_members_are_documented_where_they_are_defined():
    """``:ignore-module-all:``: a module's ``__all__`` may list names it re-exports; without the
    option autodoc would document those again under the re-exporting module."""
    for name, options in documented().items():
        if ":members:" in options:
            assert ":ignore-module-all:" in options, name
            assert ":imported-members:" not in options, name
        else:  # the package and its subpackages: their docstring only
            assert name.count(".") <= 1, f"{name}: add :members: and :ignore-module-all:"


def test_every_public_object_has_a_docstring():
    missing = []
    for path in sorted((ROOT / "ddpm_helpers").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            if not ast.get_docstring(node):
                missing.append(f"{path.relative_to(ROOT)}: {node.name}")
            if isinstance(node, ast.ClassDef):
                missing += [f"{path.relative_to(ROOT)}: {node.name}.{item.name}"
                            for item in node.body
                            if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")
                            and item.name not in KERAS_PROTOCOL and not ast.get_docstring(item)]
    assert not missing, "public objects without a docstring (the API page would omit them):\n" + \
        "\n".join(missing)


def test_the_page_is_built_in_the_appendix_with_autodoc():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert {"file": "book/api"} in toc["parts"][-1]["chapters"]
    sphinx = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]
    assert "sphinx.ext.autodoc" in sphinx["extra_extensions"]
    # Only other libraries' types may go unresolved: the package's own references must resolve.
    for kind, pattern in sphinx["config"].get("nitpick_ignore_regex", []):
        assert not re.fullmatch(pattern, "ddpm_helpers.method.schedules.NoiseSchedule"), pattern
        assert "ddpm" not in pattern, pattern

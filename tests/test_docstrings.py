"""Every equation a package docstring cites, ``Eq. (2.5) (``eq-...``)``, is a ``:label:`` of a
chapter in book/*.md. (The number is checked against the built book after the strict build, by
``python -m booktools.equations``: tests/test_equation_numbers.py.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = re.compile(r"\(\s*(?:``)?(eq-[A-Za-z0-9_-]+)(?:``)?\s*\)")  # (2.5) (``eq-a``), or (eq-a)
LABEL = re.compile(r"^:label:\s*(eq-[A-Za-z0-9_-]+)\s*$", re.MULTILINE)


def book_labels(root: Path = ROOT) -> set[str]:
    return {label for md in (root / "book").glob("*.md") for label in LABEL.findall(md.read_text())}


def cited_labels(root: Path = ROOT) -> dict[str, list[str]]:
    """``{label: [where it is cited]}`` over the docstrings of every module, class and function."""
    cited: dict[str, list[str]] = {}
    for module in sorted((root / "ddpm_helpers").rglob("*.py")):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for label in CITED.findall(doc):
                    cited.setdefault(label, []).append(f"{module.name}:{getattr(node, 'name', '<module>')}")
    return cited


def test_every_cited_equation_exists_in_the_book():
    labels, cited = book_labels(), cited_labels()
    assert len(labels) > 30 and len(cited) > 20  # the parsing found them
    missing = {label: where for label, where in cited.items() if label not in labels}
    assert not missing, f"docstrings cite equations that no chapter labels: {missing}"


def test_a_wrong_label_would_be_caught(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch.md").write_text("```{math}\n:label: eq-one\nx\n```\n")
    (tmp_path / "ddpm_helpers").mkdir()
    (tmp_path / "ddpm_helpers" / "m.py").write_text(
        'def f():\n    """Eqs. (1.1) (``eq-one``) and (1.2) (``eq-two``), (eq-three)."""\n')
    assert book_labels(tmp_path) == {"eq-one"}
    assert set(cited_labels(tmp_path)) == {"eq-one", "eq-two", "eq-three"}

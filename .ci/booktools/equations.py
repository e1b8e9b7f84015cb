"""Equation numbers in the package's docstrings, checked against the built book (``make test``).

The chapters number their equations per chapter (Eq. (2.5) is the fifth of chapter 2), and a
docstring cites an equation by the number a reader sees, followed by its label, which does not
change when equations are added or moved::

    Chapter "Forward and reverse process", Eq. (2.5) (``eq-q-xt-x0``).

The numbers come from the built pages: every numbered display equation is
``<div class="math ..." id="equation-LABEL"><span class="eqno">(2.5)...``. This tool reads that
map from a built site and compares it with every citation in the docstrings of ``ddpm_helpers``
(modules, classes, functions): a number that disagrees with its label's, a label the book does
not have, a label cited without its number (the old form, ``Eq. (eq-q-xt-x0)``) and a number
cited without its label (which nothing could check) are reported, with file and line.

    python -m booktools.equations _build/strict/_build/html        # check (make strict-build)
    python -m booktools.equations --fix _build/html                # rewrite the numbers

``--fix`` rewrites every number (and gives a label cited without one its number) from the built
book, in place, so that renumbering the chapters is one command after a build. Labels the book
does not have are left as they are, and reported.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

LABEL = r"eq-[A-Za-z0-9_-]+"
NUMBER = r"[0-9A-Z]+(?:\.[0-9]+)*"
# "(2.5) (``eq-q-xt-x0``)": the number a reader sees, then the label; any white space between
# (a docstring may wrap there).
CITATION = re.compile(rf"\((?P<number>{NUMBER})\)(?P<space>\s+)\(``(?P<label>{LABEL})``\)")
# A label without its number: "(``eq-q-xt-x0``)" or the old form "(eq-q-xt-x0)".
LABEL_ONLY = re.compile(rf"\((?P<ticks>``)?(?P<label>{LABEL})(?P=ticks)?\)")
# A chapter's number after "Eq.", "Eqs.", "and" or a comma that no label follows.
NUMBER_ONLY = re.compile(rf"(?:\bEqs?\.|\band|,)\s+\((?P<number>[0-9A-Z]+\.[0-9]+)\)"
                         rf"(?!\s+\(``{LABEL}``\))")
EQUATION = re.compile(r'<div class="math[^"]*" id="equation-(?P<label>[^"]+)">\s*'
                      r'<span class="eqno">\((?P<number>[^)<]+)\)')


@dataclass(frozen=True)
class Citation:
    """One equation cited in a docstring: where, the number it states (None: none) and the label."""

    path: Path
    line: int
    number: str | None
    label: str
    start: int  # offsets of the citation in the file's text
    end: int


def html_id(label: str) -> str:
    """The label as the page's id spells it (Sphinx's ``make_id``: lower case, ``_`` -> ``-``),
    without ``equation-``."""
    from docutils.nodes import make_id

    return make_id(f"equation-{label}").removeprefix("equation-")


def book_numbers(html: Path) -> dict[str, str]:
    """``{label: number}`` of every numbered display equation of a built site, e.g.
    ``{"eq-q-xt-x0": "2.5"}``; each label as :func:`html_id` spells it."""
    numbers: dict[str, str] = {}
    for page in sorted(html.rglob("*.html")):
        if {"_static", "_sources", "_images"} & set(page.relative_to(html).parts):
            continue
        for match in EQUATION.finditer(page.read_text(encoding="utf-8")):
            numbers[match["label"]] = match["number"]
    return numbers


def docstring_spans(source: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets in ``source`` of the docstring of the module and of every class
    and function in it."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())

    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                doc = body[0].value
                spans.append((offset(doc.lineno, doc.col_offset),
                              offset(doc.end_lineno, doc.end_col_offset)))
    return sorted(spans)


def comment_spans(source: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets in ``source`` of every ``#`` comment (code the chapters show cites
    equations in comments too)."""
    import io
    import tokenize

    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    spans = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            (row, col), (end_row, end_col) = token.start, token.end
            spans.append((starts[row - 1] + col, starts[end_row - 1] + end_col))
    return spans


def package_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "ddpm_helpers").rglob("*.py") if "__pycache__" not in p.parts)


def citations_in(path: Path, source: str | None = None) -> tuple[list[Citation], list[Citation]]:
    """The equation citations in the docstrings and comments of one file, in order, and the
    numbers cited there without a label (``label`` empty)."""
    source = path.read_text() if source is None else source
    found, problems = [], []

    def line_of(offset: int) -> int:
        return source.count("\n", 0, offset) + 1

    for start, end in sorted(docstring_spans(source) + comment_spans(source)):
        text = source[start:end]
        taken = []
        for match in CITATION.finditer(text):
            found.append(Citation(path, line_of(start + match.start()), match["number"],
                                  match["label"], start + match.start(), start + match.end()))
            taken.append(match.span())
        for match in LABEL_ONLY.finditer(text):
            if not any(a <= match.start() < b for a, b in taken):
                found.append(Citation(path, line_of(start + match.start()), None, match["label"],
                                      start + match.start(), start + match.end()))
        for match in NUMBER_ONLY.finditer(text):
            problems.append(Citation(path, line_of(start + match.start()), match["number"], "",
                                     start + match.start(), start + match.end()))
    return sorted(found, key=lambda c: c.start), problems


def check(root: Path, numbers: dict[str, str]) -> tuple[list[str], int]:
    """Problems with the equation citations of the package's docstrings, and how many there are."""
    problems, count = [], 0
    for path in package_files(root):
        citations, unlabelled = citations_in(path)
        problems += [f"{c.path.relative_to(root)}:{c.line}: Eq. ({c.number}) is cited without "
                     "its label, which nothing could check: write (N.M) (``eq-label``)"
                     for c in unlabelled]
        for c in citations:
            count += 1
            where = f"{c.path.relative_to(root)}:{c.line}"
            number = numbers.get(html_id(c.label))
            if number is None:
                problems.append(f"{where}: ``{c.label}`` is not an equation of the built book")
            elif c.number is None:
                problems.append(f"{where}: ``{c.label}`` is cited without its number, ({number})")
            elif c.number != number:
                problems.append(f"{where}: Eq. ({c.number}) (``{c.label}``): the book numbers "
                                f"it ({number})")
    return problems, count


def fix(root: Path, numbers: dict[str, str]) -> list[Path]:
    """Rewrite every cited number from ``numbers`` (and number the labels cited without one);
    the files changed."""
    changed = []
    for path in package_files(root):
        source = path.read_text()
        citations, _ = citations_in(path, source)
        pieces, last = [], 0
        for c in citations:
            number = numbers.get(html_id(c.label))
            if number is None:
                continue
            if c.number is None:
                new = f"({number}) (``{c.label}``)"
            else:
                match = CITATION.fullmatch(source, c.start, c.end)
                new = f"({number}){match['space']}(``{c.label}``)"
            pieces += [source[last:c.start], new]
            last = c.end
        new_source = "".join(pieces) + source[last:]
        if new_source != source:
            path.write_text(new_source)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m booktools.equations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="a built site, e.g. _build/html")
    parser.add_argument("--fix", action="store_true", help="rewrite the numbers from the site")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository's top folder")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    numbers = book_numbers(args.html)
    if not numbers:
        print(f"equations: no numbered equation in {args.html}: build the book first "
              "(make book, or make strict-build for _build/strict/_build/html)", file=sys.stderr)
        return 1
    if args.fix:
        for path in fix(root, numbers):
            print(f"renumbered {path.relative_to(root)}")
    problems, count = check(root, numbers)
    for problem in problems:
        print(f"EQUATION: {problem}", file=sys.stderr)
    if problems:
        if not args.fix:
            print("equations: fix the numbers with "
                  f"python -m booktools.equations --fix {args.html}", file=sys.stderr)
        return 1
    print(f"equations: {count} citations in docstrings agree with the {len(numbers)} numbered "
          f"equations of {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

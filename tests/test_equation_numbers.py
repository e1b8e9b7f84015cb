"""Docstrings cite equations by the number the reader sees, checked against the built book.

``python -m booktools.equations HTML`` (run by ``make strict-build`` after the build) reads every
numbered equation's label and number from a built site and fails when a docstring's
``Eq. (N.M) (``eq-label``)`` disagrees with it; ``--fix`` rewrites the numbers. Here it runs, with
the command line the Makefile runs, on a tiny two-chapter book built with the real configuration
and on a throw-away package of one module: it passes with the right numbers, fails with a wrong
one (broken on purpose), and ``--fix`` repairs it. The rest checks the parsing without a build.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from booktools import equations
from test_book_checks import ROOT, make_command, output, strict_build

MODULE = '''"""A module citing Eq. ({one}) (``eq-one-a``) of chapter one."""


def f():
    """Chapter two, Eqs. ({two_a}) (``eq-two-a``) and ({two_b})
    (``eq-two-b``), the second wrapped onto a line of its own."""
    return 1  # Eq. ({comment}) (``eq-two-a``): comments cite what the reader sees too
'''
RIGHT = {"one": "1.1", "two_a": "2.1", "two_b": "2.2", "comment": "2.1"}


def equations_command(html: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run the ``booktools.equations`` line of ``make -n strict-build`` on ``html`` and the
    package under ``root``: the same program and options as ``make test``."""
    env, words = make_command("strict-build", "booktools.equations")
    assert words[-1] == "_build/strict/_build/html", words
    argv = [*words[:-1], str(html), "--root", str(root), *extra]
    return subprocess.run(argv, check=False, cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def package(root: Path, **numbers: str) -> Path:
    (root / "ddpm_helpers").mkdir(parents=True, exist_ok=True)
    module = root / "ddpm_helpers" / "m.py"
    module.write_text(MODULE.format(**{**RIGHT, **numbers}))
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The two-chapter book of test_numbering_citations (eq-one-a, eq-one-b in chapter 1,
    eq-two-a, eq-two-b in chapter 2, as {math} and as $$ ... $$ (label)), built as make test
    does."""
    from test_numbering_citations import two_chapter_book

    tmp_path = tmp_path_factory.mktemp("equations")
    result = strict_build(two_chapter_book(tmp_path))
    assert result.returncode == 0, output(result)
    return tmp_path / "out" / "_build" / "html"


def test_the_built_pages_give_every_label_its_number(built):
    assert equations.book_numbers(built) == {
        "eq-one-a": "1.1", "eq-one-b": "1.2", "eq-two-a": "2.1", "eq-two-b": "2.2"}


def test_right_numbers_pass_a_wrong_one_fails_and_fix_repairs_it(built, tmp_path):
    module = package(tmp_path)
    passed = equations_command(built, tmp_path)
    assert passed.returncode == 0, output(passed)
    assert "4 citations" in passed.stdout

    # Broken on purpose: chapter two's second equation cited as (2.3), and a comment's (9.9).
    package(tmp_path, two_b="2.3", comment="9.9")
    failed = equations_command(built, tmp_path)
    assert failed.returncode == 1
    assert ("ddpm_helpers/m.py:5: Eq. (2.3) (``eq-two-b``): the book numbers it (2.2)"
            in failed.stderr), output(failed)
    assert ("ddpm_helpers/m.py:7: Eq. (9.9) (``eq-two-a``): the book numbers it (2.1)"
            in failed.stderr), output(failed)
    assert "--fix" in failed.stderr

    fixed = equations_command(built, tmp_path, "--fix")
    assert fixed.returncode == 0, output(fixed)
    # The numbers right again, the line break kept.
    assert module.read_text() == MODULE.format(**RIGHT)


def test_fix_numbers_old_style_citations_and_leaves_unknown_labels(built, tmp_path):
    (tmp_path / "ddpm_helpers").mkdir()
    module = tmp_path / "ddpm_helpers" / "m.py"
    module.write_text('def f():\n    """Eqs. (eq-two-a) and (eq-nowhere)."""\n')
    failed = equations_command(built, tmp_path, "--fix")
    assert failed.returncode == 1
    assert module.read_text() == 'def f():\n    """Eqs. (2.1) (``eq-two-a``) and (eq-nowhere)."""\n'
    assert "``eq-nowhere`` is not an equation of the built book" in failed.stderr


def test_a_folder_without_equations_is_an_error(tmp_path):
    package(tmp_path)
    (tmp_path / "html").mkdir()
    result = equations_command(tmp_path / "html", tmp_path)
    assert result.returncode == 1
    assert "no numbered equation" in result.stderr


# --- parsing, without a build ---------------------------------------------------------------

PAGE = """<p>text</p>
<div class="math notranslate nohighlight" id="equation-eq-q-xt-x0">
<span class="eqno">(2.5)<a class="headerlink" href="#x">#</a></span>\\[q\\]</div>
<div class="math notranslate nohighlight">\\[unnumbered\\]</div>
<div class="math notranslate nohighlight" id="equation-eq-alpha-bar-t-linear">
<span class="eqno">(3.6)<a class="headerlink" href="#x">#</a></span>\\[a\\]</div>
"""


def test_numbers_are_read_from_the_equation_markup(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch.html").write_text(PAGE)
    (tmp_path / "_sources").mkdir()
    (tmp_path / "_sources" / "copy.html").write_text(PAGE.replace("(2.5)", "(9.9)"))
    numbers = equations.book_numbers(tmp_path)
    assert numbers == {"eq-q-xt-x0": "2.5", "eq-alpha-bar-t-linear": "3.6"}
    # Sphinx writes ids in lower case: a label with capitals is found all the same.
    assert numbers[equations.html_id("eq-alpha-bar-T-linear")] == "3.6"


def test_citations_are_found_in_docstrings_and_comments_only(tmp_path):
    source = '''"""Module: Eq. (2.5) (``eq-a``), Eqs. (eq-b) and (``eq-c``)."""
X = "Eq. (1.1) (``eq-not-a-docstring``)"


class C:
    """Eq. (3.1)
    (``eq-d``); and a number alone, Eq. (3.2), which nothing could check."""

    def g(self):
        # Eq. (eq-comment)
        return "(eq-string)"
'''
    path = tmp_path / "m.py"
    path.write_text(source)
    found, unlabelled = equations.citations_in(path)
    assert [(c.line, c.number, c.label) for c in found] == [
        (1, "2.5", "eq-a"), (1, None, "eq-b"), (1, None, "eq-c"), (6, "3.1", "eq-d"),
        (10, None, "eq-comment")]
    assert [(c.line, c.number) for c in unlabelled] == [(7, "3.2")]


def test_the_package_cites_numbers_with_labels_only():
    """In the repository: every citation in a docstring has a number and a label (the check of
    the numbers themselves needs the built book: make strict-build)."""
    problems = []
    for path in equations.package_files(ROOT):
        found, unlabelled = equations.citations_in(path)
        problems += [f"{path.name}:{c.line}: ({c.label}) without its number" for c in found
                     if c.number is None]
        problems += [f"{path.name}:{c.line}: ({c.number}) without its label" for c in unlabelled]
        assert all(c.path == path for c in found)
    assert not problems, problems

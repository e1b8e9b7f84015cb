"""Nothing scrolls sideways on a laptop: ``make site-check`` measures it, and the book's CSS makes
it so. A tiny book with the real configuration (``_config.yml``, ``_static/book.css``) is built
with the command of ``make strict-build`` and opened with ``tests/site_check.py`` at 1024 and
1280 px: a page written as the chapters are (long equations split over lines, code lines of at
most 79 characters, a cell that prints a very long line, a table with long names in code font)
must pass, and a page with one equation on a single long line, one 100-character code line and
a table with a very long word must fail, each named.

Needs Debian's chromium and chromium-driver (``make site-check`` installs them).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from test_book_checks import FRONT_MATTER, ROOT, output, strict_build, tiny_book

pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="chromium and chromium-driver are not installed (make site-check installs them)")

LONG_SUM = r"\sum_{i=1}^{n} x_i\, p_i + \int x\, p(x)\, \mathrm{d}x + \mathbb{E}[XY] - \mathbb{E}[X]\,\mathbb{E}[Y]"
EQUATION = r"y = " + LONG_SUM + r" = " + LONG_SUM + r" = " + LONG_SUM  # one line
SPLIT = r"y &= " + LONG_SUM + r" \\ &= " + LONG_SUM + r" \\ &= " + LONG_SUM  # three lines
CODE_79 = "values = [0.001 * step for step in range(100)]  # a line of exactly 79 chars!!!"
CODE_100 = CODE_79 + "  # twenty-one more.."
# A row as in the chapter "The U-Net": long names in code font in every column.
TABLE_ROW = " | ".join(["group normalisation", "`tfa.layers.GroupNormalization`",
                        "`keras.layers.GroupNormalization`",
                        "TensorFlow Addons is end-of-life: no Keras 3, no wheel for Python 3.12"])

FITS = FRONT_MATTER + f"""
# Fits

```{{math}}
:label: eq-fits
{SPLIT}
```

```{{code-cell}} ipython3
{CODE_79}
print(" ".join(["a long printed line"] * 20), "x" * 150)
```

| part | before | after | why |
|---|---|---|---|
| {TABLE_ROW} |
"""

OVERFLOWS = """
# Overflows

```{{math}}
:label: eq-overflows
{equation}
```

```python
{code}
```

| a table with a long word |
|---|
| {word} |
""".format(equation=EQUATION, code=CODE_100, word="unbreakable" * 12)


def site_check():
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import site_check
    finally:
        sys.path.pop(0)
    return site_check


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[int, dict]:
    """The tiny book built and checked once: site_check's exit status and report."""
    import booktools

    tmp_path = tmp_path_factory.mktemp("layout")
    book = tiny_book(tmp_path)
    (book / "book" / "fits.md").write_text(FITS)
    (book / "book" / "overflows.md").write_text(OVERFLOWS)
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/index\n"
                                    "chapters:\n- file: book/fits\n- file: book/overflows\n")
    booktools.sync(book)
    assert len(CODE_79) == 79 and len(CODE_100) == 100
    built = strict_build(book)
    assert built.returncode == 0, output(built)
    html = tmp_path / "out" / "_build" / "html"
    status = site_check().main([str(html), "--out", str(tmp_path / "check"), "--timeout", "240"])
    return status, json.loads((tmp_path / "check" / "report.json").read_text())


def page(report: dict, name: str) -> dict:
    return next(p for p in report["pages"] if p["page"] == f"book/{name}.html")


def test_split_equations_79_columns_and_wrapped_output_fit_at_both_widths(checked):
    _, report = checked
    fits = page(report, "fits")
    assert fits["problems"] == []
    for width in ("1024", "1280"):
        counts = fits["widths"][width]
        assert counts["equations"] == 1 and counts["equations_overflowing"] == 0
        assert counts["blocks"] >= 2 and counts["blocks_overflowing"] == 0  # code and output
        assert counts["tables"] == 1 and counts["tables_overflowing"] == 0


def test_a_long_equation_and_a_long_code_line_fail_the_check_by_name(checked):
    status, report = checked
    assert status == 1
    problems = page(report, "overflows")["problems"]
    for width in (1024, 1280):
        assert any(p.startswith(f"{width} px: display equation (") for p in problems), problems
        assert any(p.startswith(f"{width} px: table") for p in problems), problems
        assert any(p.startswith(f"{width} px: code/output block") and "values = [0.001" in p
                   for p in problems), problems
    summary = report["overflow"]
    for width in ("1024", "1280"):
        assert summary[width]["equations_overflowing"] == 1
        assert summary[width]["blocks_overflowing"] == 1
        assert summary[width]["tables_overflowing"] == 1
        assert summary[width]["pages"] == {"book/overflows.html": {
            "equations": "1 of 1", "blocks": "1 of 1", "tables": "1 of 1"}}

"""The book's own machinery: code-cell formatting and width, parallel execution into the
cache Jupyter Book renders from, the display helpers of ``pages``, the check API, and the
benchmark-results reader. Each test plants the fault its check exists to catch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import booktools
from booktools import bookbuild
from ddpm_helpers.notebook import bench_results, pages
from ddpm_helpers.notebook.checks import CheckLog

ROOT = Path(__file__).resolve().parents[1]
FRONT_MATTER = (ROOT / "book" / "index.md").read_text().split("\n---\n", 1)[0] + "\n---\n"


def tiny_book(tmp_path: Path, code: str) -> Path:
    """A one-page book (the repository's configuration) whose page has one code cell."""
    book = tmp_path / "copy"
    (book / "book").mkdir(parents=True)
    for name in ("_config.yml", "references.bib"):
        shutil.copy(ROOT / name, book / name)
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/index\n")
    page = f"\n(sec-tiny)=\n# A tiny page\n\n```{{code-cell}} ipython3\n{code}\n```\n"
    (book / "book" / "index.md").write_text(FRONT_MATTER + page)
    booktools.sync(book)
    return book


def test_long_code_line_fails_the_check_and_format_fixes_it(tmp_path):
    long_call = "value = max(" + ", ".join(f"number_{i}" for i in range(12)) + ")"
    assert len(long_call) > booktools.LINE_LENGTH
    book = tiny_book(tmp_path, "number_0 = number_1 = 1\n" + long_call.replace(
        "number_0 = ", ""))
    problems = booktools.check(book)
    assert any("over 79 characters" in problem for problem in problems), problems
    assert booktools.format_pages(book) == [book / "book" / "index.md"]
    assert booktools.check(book) == []
    text = (book / "book" / "index.md").read_text()
    assert all(len(line) <= booktools.LINE_LENGTH for line in text.split("```{code-cell}")[-1]
               .splitlines())


def test_colab_cell_is_within_the_width():
    source = booktools.colab_cell_source("https://github.com/someone/a-long-book-name", "main")
    assert max(len(line) for line in source.splitlines()) <= booktools.LINE_LENGTH


def test_bookbuild_caches_pages_for_jupyter_book_and_reports_failures(tmp_path):
    good = tiny_book(tmp_path / "good",
                     "import os\nprint(6 * 7, 'threads', os.environ.get('TF_NUM_INTRAOP_THREADS'))")
    cache = good / "_build" / ".jupyter_cache"
    seconds = bookbuild.execute_book(good, cache, jobs=1, timeout=120, pretrain=False)
    assert list(seconds) == ["book/index.md"]
    from jupyter_cache import get_cache

    # The notebook myst-nb will read matches the executed one in the cache, outputs included.
    notebook = bookbuild.read_page(good / "book" / "index.md")
    record = get_cache(cache).match_cache_notebook(notebook)
    _, merged = get_cache(cache).merge_match_into_notebook(notebook)
    assert record.data["execution_seconds"] >= 0
    outputs = [o for cell in merged.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("42 threads" in o.get("text", "") for o in outputs)
    # The kernel was told how many threads TensorFlow may use (bookbuild.share_cores).
    assert not any("threads None" in o.get("text", "") for o in outputs)

    bad = tiny_book(tmp_path / "bad", "1 / 0")
    with pytest.raises(RuntimeError, match=r"(?s)book/index\.md.*ZeroDivisionError"):
        bookbuild.execute_book(bad, bad / "cache", jobs=1, timeout=120, pretrain=False)


def test_share_cores_splits_the_cores_between_jobs_and_keeps_a_user_setting(monkeypatch):
    monkeypatch.setattr(bookbuild.os, "cpu_count", lambda: 8)
    environ = {}
    assert bookbuild.share_cores(2, environ) == 4
    assert environ == {"TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "4"}
    assert bookbuild.share_cores(16, {}) == 1
    mine = {"TF_NUM_INTRAOP_THREADS": "3"}
    bookbuild.share_cores(2, mine)
    assert mine["TF_NUM_INTRAOP_THREADS"] == "3"


def test_toc_pages_follow_the_parts_of_the_toc(tmp_path):
    book = tiny_book(tmp_path, "pass")
    (book / "book" / "other.md").write_text((book / "book" / "index.md").read_text())
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nparts:\n  - caption: A\n    chapters:\n"
        "      - file: book/other\n      - file: book/missing\n")
    assert bookbuild.toc_pages(book) == [book / "book" / "index.md", book / "book" / "other.md"]


def _example(x):
    """A docstring the page explains in prose."""
    if x < 0:
        raise ValueError("x must be >= 0")
    y = x + 1  # the algorithm starts here
    return 2 * y


def test_source_lines_drop_the_docstring_and_slice():
    full = pages.source_lines(_example)
    assert "docstring" not in full and full.startswith("def _example(x):")
    core = pages.source_lines(_example, start="y = x + 1", stop="return")
    assert core.splitlines() == ["y = x + 1  # the algorithm starts here", "return 2 * y"]
    assert pages.source_lines(_example, start="if x < 0", until="y = x + 1").splitlines() == [
        "if x < 0:", '    raise ValueError("x must be >= 0")']
    with pytest.raises(ValueError, match="no line of _example contains 'nowhere'"):
        pages.source_lines(_example, start="nowhere")


def test_progress_bar_prints_one_summary_line_in_a_book_build(monkeypatch, capsys):
    monkeypatch.setenv(pages.BOOK_BUILD_ENV_VAR, "1")
    bar = pages.ProgressBar(10, unit="step", label="training")
    for step in range(1, 11):
        bar.update(step, [("loss", 0.5)])
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("training: 10 steps in ")
    assert "loss 0.5" in lines[0]


def test_on_a_page_of_the_build_progress_and_cache_messages_stay_off(monkeypatch, capsys):
    """In a notebook kernel of a book build the page shows no progress line (nor the messages
    with this machine's paths and timings that check on_page()); outside a build it does."""
    import IPython

    class ZMQInteractiveShell:  # what get_ipython() returns in a Jupyter kernel
        pass

    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    monkeypatch.setenv(pages.BOOK_BUILD_ENV_VAR, "1")
    assert pages.on_page()
    bar = pages.ProgressBar(3, label="training")
    for step in range(1, 4):
        bar.update(step, [("loss", 0.5)])
    bar.close()
    assert capsys.readouterr().out == ""
    monkeypatch.delenv(pages.BOOK_BUILD_ENV_VAR)
    assert not pages.on_page()


def test_glue_returns_nothing_so_a_cell_echoes_no_number():
    assert pages.glue("tiny_test_value", 0.123456, ".2f") is None


def test_a_glued_numpy_scalar_reads_as_a_plain_number():
    import numpy as np

    assert repr(pages.prose_value(np.int64(3))) == "3"
    assert repr(pages.prose_value(np.float64(0.5))) == "0.5"
    assert pages.prose_value(np.float32(0.123456), ".2f") == "0.12"
    assert pages.prose_value("text") == "text"


@pytest.mark.parametrize("text, prose", [
    ("2.4e-09", "2.4 × 10⁻⁹"), ("4e-05", "4 × 10⁻⁵"), ("-3.2e+12", "-3.2 × 10¹²"),
    ("1.5e+00", "1.5"), ("0.25", "0.25"), ("12%", "12%"), ("1,234", "1,234"), ("e-05", "e-05"),
])
def test_a_glued_exponent_reads_as_prose(text, prose):
    assert pages.as_prose_number(text) == prose


def test_check_log_asserts_and_returns_nothing(capsys):
    check = CheckLog()
    assert check("eq-x", "an error", 1e-9, 1e-6) is None
    with pytest.raises(AssertionError, match="is not <= "):
        check("eq-x", "an error", 2e-6, 1e-6)
    with pytest.raises(AssertionError, match="is not >= "):
        check("eq-x", "a count", 3, 4, at_least=True)
    with pytest.raises(AssertionError):
        check("eq-x", "a NaN", float("nan"), 1.0)
    with pytest.raises(AssertionError, match="The text says: A beats B"):
        check.claim("A beats B", False, "A 2.0, B 1.0")
    check.claim("B beats A", True)
    assert len(check) == 2  # the passing check and the passing claim
    assert "holds" in check.table().data


def test_latest_benchmark_record_and_unreadable_records(tmp_path):
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    for stamp, value in (("20260101-000000", 1), ("20260301-000000", 3),
                         ("20260201-000000", 2)):
        (folder / f"training-{stamp}.json").write_text(json.dumps({"value": value}))
    (folder / "sampling-20260101-000000.json").write_text("{not json")
    assert bench_results.results_folder(tmp_path / "benchmarks") == folder
    newest = bench_results.latest("training", folder)
    assert newest["value"] == 3 and newest["file"] == "training-20260301-000000.json"
    assert bench_results.latest("memory", folder) is None
    with pytest.raises(ValueError, match="sampling-20260101-000000.json is not a readable"):
        bench_results.latest("sampling", folder)
    busy = {"load_average": {"start": [3.1], "end": [1.0]}, "machine": {"cores": 2}}
    assert bench_results.was_busy(busy) and "busy" in bench_results.context_text(busy)


def _shown_sources():
    """(page, target, start, stop, object) of every ``show_source(...)`` call in the chapters,
    the object resolved through the page's own imports from ``ddpm_helpers``."""
    import ast
    import importlib

    import jupytext

    found = []
    for md in booktools.chapters(ROOT):
        aliases = {}
        calls = []
        for cell in jupytext.read(md).cells:
            if cell.cell_type != "code":
                continue
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                        "ddpm_helpers"):
                    for name in node.names:
                        aliases[name.asname or name.name] = (node.module, name.name)
                elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "show_source":
                    calls.append(node)
        for call in calls:
            dotted = ast.unparse(call.args[0]).split(".")
            module, attribute = aliases.get(dotted[0], (None, None))
            if module is None:
                continue
            obj = importlib.import_module(module)
            try:
                obj = getattr(obj, attribute)
            except AttributeError:
                obj = importlib.import_module(f"{module}.{attribute}")
            for part in dotted[1:]:
                obj = getattr(obj, part)
            kwargs = {k.arg: k.value.value for k in call.keywords
                      if isinstance(k.value, ast.Constant)}
            found.append((md.name, ".".join(dotted), kwargs.get("start"),
                          kwargs.get("stop"), kwargs.get("until"), obj))
    return found


def test_code_shown_from_the_package_fits_the_page():
    """Package code shown with show_source obeys the same 79 columns as the cells."""
    shown = _shown_sources()
    assert len(shown) >= 10, "show_source calls were not found in the chapters"
    wide = []
    for page, target, start, stop, until, obj in shown:
        for line in pages.source_lines(obj, start=start, stop=stop, until=until).splitlines():
            if len(line) > booktools.LINE_LENGTH:
                wide.append(f"{page}: {target}: {line.strip()[:50]}")
    assert not wide, "Wrap these package lines at 79 columns:\n" + "\n".join(wide)


# What a page shows of the package at once reads like a paper's algorithm: about 25 lines.
SHOWN_LINES = 30


def test_code_shown_from_the_package_is_short():
    long = [f"{page}: {target} ({n} lines)" for page, target, start, stop, until, obj in _shown_sources()
            if (n := len(pages.source_lines(obj, start=start, stop=stop, until=until).splitlines())) > SHOWN_LINES]
    assert not long, f"Show at most {SHOWN_LINES} lines at once (split with start/until):\n" + "\n".join(long)


def test_a_check_in_an_unfolded_cell_fails_the_check(tmp_path):
    book = tiny_book(tmp_path, "check = print\ncheck('eq', 'what', 0.0, 1.0)")
    problems = booktools.check(book)
    assert any("check is shown unfolded" in problem for problem in problems), problems
    page = book / "book" / "index.md"
    page.write_text(page.read_text().replace(
        "```{code-cell} ipython3\ncheck = print", "```{code-cell} ipython3\n:tags: [hide-cell]\n\ncheck = print"))
    booktools.sync(book)
    assert booktools.check(book) == []


def test_long_figure_captions_are_rewrapped_within_the_width(tmp_path):
    book = tiny_book(tmp_path, "print(1)")
    page = book / "book" / "index.md"
    caption = " ".join(["a caption word"] * 12) + " $\\hat{\\mathbf{x}}_0$ at the end"
    page.write_text(page.read_text().replace(
        "```{code-cell} ipython3\nprint(1)",
        "```{code-cell} ipython3\n---\nmystnb:\n  figure:\n    caption: " + caption
        + "\n    name: fig-tiny\ntags: [hide-input]\n---\nprint(1)"))
    assert any("cell metadata line over" in p for p in booktools.check(book))
    booktools.sync(book)
    assert booktools.check(book) == []
    text = page.read_text()
    assert "tags: [hide-input]" in text and "name: fig-tiny" in text
    import jupytext

    cell = [c for c in jupytext.read(page).cells if c.cell_type == "code"][-1]
    assert cell.metadata["mystnb"]["figure"]["caption"] == caption


def test_visible_machinery_is_found_where_the_reader_sees_code():
    import nbformat

    def cell(source, *tags):
        return nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})

    notebook = nbformat.v4.new_notebook(cells=[
        cell("glue('setup', 1)"),  # the Colab install cell: never counted
        cell("x = 1\nglue('x', x)"),
        cell("glue('y', 2)", "remove-cell"),
        cell("assert x == 1", "hide-cell"),
        cell("run = train(profile, progress=False)"),
        cell("print(x)\nassert x == 1", "hide-output"),  # its code is on the page
        cell("os.environ['DDPM_PROFILE']", "hide-input"),
    ])
    assert booktools.visible_machinery(notebook) == [
        "cell 1: glue(", "cell 4: progress=False", "cell 5: assert"]


def test_a_glued_number_after_math_is_found():
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("with $T =$ {glue:text}`T` steps and $t \\approx$\n{glue:text}`x`"),
        nbformat.v4.new_markdown_cell("with {glue:text}`T` steps, $a = b$ and {glue:text}`y`"),
    ])
    found = booktools.glue_after_math(notebook)
    assert len(found) == 2 and all(f.startswith("cell 0") for f in found)

"""The checks of `make test` can fail: each is run on a throw-away copy of a tiny book.

The copy has the real ``_config.yml`` and ``references.bib`` and one small page. The commands
are not repeated here: they are read from the Makefile (``make -n TARGET`` prints the exact
command line a target runs), so the strict build, nbval and the pairing check tested here are
the ones ``make test`` runs, flags included. A positive control shows the unbroken copy passes.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import booktools

ROOT = Path(__file__).resolve().parents[1]

# The line of `make -n TARGET` that is the check itself (the rest may be the install step).
MARKERS = {
    "strict-build": "jupyter-book build",
    "nbval": "--nbval-lax",
    "notebooks-check": "booktools check",
}

FRONT_MATTER = (ROOT / "book" / "index.md").read_text().split("\n---\n", 1)[0] + "\n---\n"

PAGE = """
(sec-tiny)=
# A tiny page

Diffusion models were introduced by {{cite}}`{cite}`.

```{{code-cell}} ipython3
{code}
```

## References

```{{bibliography}}
```
"""


def make_command(target: str, marker: str | None = None) -> tuple[dict[str, str], list[str]]:
    """The environment and argv of the command that ``make TARGET`` runs, from ``make -n``: its
    line that holds ``marker`` (default: the target's check, ``MARKERS``)."""
    marker = marker or MARKERS[target]
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry_run = subprocess.run(["make", "--no-print-directory", "-n", "-C", str(ROOT), target],
                             capture_output=True, text=True, check=True, env=clean).stdout
    lines = [line for line in dry_run.splitlines() if marker in line]
    assert len(lines) == 1, f"expected one '{marker}' line in make -n {target}:\n{dry_run}"
    words = shlex.split(lines[0])
    env = {}
    while "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if not Path(words[0]).is_absolute() and "/" in words[0]:
        words[0] = str(ROOT / words[0])  # e.g. .venv/bin/python
    return env, words


def run_target(target: str, book: Path, replace: dict[str, str] | None = None,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run a Makefile check on ``book`` instead of the repository: the same program and flags,
    with the arguments that name the repository's files swapped for the copy's."""
    env, argv = make_command(target)
    replace = replace or {}
    argv = [replace.get(word, word) for word in argv]
    if "--path-output" in argv:
        argv[argv.index("--path-output") + 1] = str(book.parent / "out")
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    return subprocess.run(argv + list(extra), cwd=book, env=full_env, capture_output=True,
                          text=True, timeout=300)


def tiny_book(tmp_path: Path, code: str = "print(6 * 7)", cite: str = "ho2020ddpm") -> Path:
    """A one-page book with the repository's configuration, its notebook synced."""
    path = tmp_path / "copy"
    path.mkdir()
    for name in ("_config.yml", "references.bib"):
        shutil.copy(ROOT / name, path / name)
    # The folders _config.yml loads Sphinx extensions from (local_extensions), and its CSS.
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    folders = set(config.get("sphinx", {}).get("local_extensions", {}).values()) | {"_static"}
    for name in sorted(folders):
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    (path / "_toc.yml").write_text("format: jb-book\nroot: book/index\n")
    (path / "book").mkdir()
    (path / "book" / "index.md").write_text(FRONT_MATTER + PAGE.format(code=code, cite=cite))
    booktools.sync(path)
    return path


def strict_build(book: Path) -> subprocess.CompletedProcess:
    return run_target("strict-build", book, replace={".": str(book)})


def nbval(book: Path) -> subprocess.CompletedProcess:
    return run_target("nbval", book, replace={"book/*.ipynb": str(book / "book" / "index.ipynb")})


def pairing_check(book: Path) -> subprocess.CompletedProcess:
    return run_target("notebooks-check", book, extra=("--root", str(book)))


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


# --- (a)-(b): cell errors and unknown citations fail the strict build (and nbval) -------------

def test_unbroken_copy_passes_every_check(tmp_path):
    """Positive control: without a planted fault, all three checks pass."""
    book = tiny_book(tmp_path)
    for result in (pairing_check(book), nbval(book), strict_build(book)):
        assert result.returncode == 0, output(result)
    html = (book.parent / "out" / "_build" / "html" / "book" / "index.html").read_text()
    assert "42" in html  # the cell was executed
    assert "Denoising diffusion probabilistic models" in html  # the bibliography rendered


def test_cell_error_fails_strict_build_and_nbval(tmp_path):
    book = tiny_book(tmp_path, code="1 / 0")
    built = strict_build(book)
    assert built.returncode != 0
    assert "ZeroDivisionError" in output(built)
    tested = nbval(book)
    assert tested.returncode != 0
    assert "ZeroDivisionError" in output(tested)


def test_unknown_citation_fails_strict_build(tmp_path):
    book = tiny_book(tmp_path, cite="nosuchauthor2099")
    built = strict_build(book)
    assert built.returncode != 0
    assert "nosuchauthor2099" in output(built)


# --- (c): the .md/.ipynb pairing and the Colab cell ---------------------------------------------

def _edit_notebook_only(book: Path) -> None:
    path = book / "book" / "index.ipynb"
    notebook = nbformat.read(path, as_version=4)
    cell = [c for c in notebook.cells if c.cell_type == "code"][-1]
    cell.source = "print('edited in Colab, .md not updated')"
    nbformat.write(notebook, path)


def _drop_colab_cell(book: Path) -> None:
    import jupytext

    for path, fmt in ((book / "book" / "index.md", "md:myst"), (book / "book" / "index.ipynb", "ipynb")):
        notebook = jupytext.read(path)
        notebook.cells = [c for c in notebook.cells if not c.source.startswith(booktools.COLAB_MARKER)]
        jupytext.write(notebook, path, fmt=fmt)


def _move_repository(book: Path) -> None:
    config = book / "_config.yml"
    config.write_text(config.read_text().replace(booktools.repository(book)[0],
                                                 "https://example.org/elsewhere/book"))


def _store_outputs(book: Path) -> None:
    path = book / "book" / "index.ipynb"
    notebook = nbformat.read(path, as_version=4)
    cell = [c for c in notebook.cells if c.cell_type == "code"][-1]
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nbformat.write(notebook, path)


def _orphan_notebook(book: Path) -> None:
    shutil.copy(book / "book" / "index.ipynb", book / "book" / "orphan.ipynb")


@pytest.mark.parametrize("breakage, message", [
    (_edit_notebook_only, "differ"),
    (_drop_colab_cell, "is not the Colab install cell"),
    (_move_repository, "is not the Colab install cell for https://example.org/elsewhere/book"),
    (_store_outputs, "has stored outputs"),
    (_orphan_notebook, "orphan.ipynb: no paired .md"),
])
def test_pairing_check_fails_on_drift(tmp_path, breakage, message):
    book = tiny_book(tmp_path)
    assert pairing_check(book).returncode == 0
    breakage(book)
    result = pairing_check(book)
    assert result.returncode != 0
    assert message in result.stderr


def test_sync_then_check_passes_and_url_comes_from_config(tmp_path):
    book = tiny_book(tmp_path)
    config = yaml.safe_load((book / "_config.yml").read_text())
    config["repository"].update(url="https://example.org/someone/book/", branch="dev")
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    assert booktools.check(book)  # the cells still name the old URL
    assert booktools.sync(book) == [book / "book" / "index.md"]
    assert booktools.check(book) == []
    first = nbformat.read(book / "book" / "index.ipynb", as_version=4).cells[0]
    strings = [node.value for node in ast.walk(ast.parse(first.source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert "ddpm_helpers @ git+https://example.org/someone/book@dev" in strings
    for path in (book / "book" / "index.md", book / "book" / "index.ipynb"):
        assert "https://example.org/someone/book@dev" in path.read_text()
    first = nbformat.read(book / "book" / "index.ipynb", as_version=4).cells[0]
    assert first.source.startswith(booktools.COLAB_MARKER)
    assert first.metadata["tags"] == ["remove-cell"]
    assert booktools.sync(book) and booktools.check(book) == []  # sync is idempotent


def test_colab_cell_installs_only_in_colab(monkeypatch):
    import subprocess
    import types

    source = booktools.colab_cell_source("https://example.org/x/y", "main")
    calls, real_run = [], subprocess.run

    def fake_run(argv, *args, **kwargs):  # record pip; let anything else (platform.processor) run
        if "pip" not in argv:
            return real_run(argv, *args, **kwargs)
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "<colab cell>", "exec"), {})  # outside Colab: installs nothing
    assert calls == []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(source, "<colab cell>", "exec"), {})  # in Colab: one pip install of the package
    assert calls == [([sys.executable, "-m", "pip", "install", "-q",
                       "ddpm_helpers @ git+https://example.org/x/y@main"], {"check": True})]

    # A Colab TPU runtime without TensorFlow: TensorFlow's TPU build first, then the package
    # without its dependencies (pip would otherwise add the CPU build of TensorFlow).
    import importlib.util

    real_find_spec = importlib.util.find_spec
    fake_specs = {"libtpu": object(), "tensorflow": None}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: fake_specs[name] if name in fake_specs
                        else real_find_spec(name, *a))
    calls.clear()
    exec(compile(source, "<colab cell>", "exec"), {})
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert calls == [(pip + [booktools.COLAB_TPU_TENSORFLOW], {"check": True}),
                     (pip + ["--no-deps", "ddpm_helpers @ git+https://example.org/x/y@main"],
                      {"check": True})]


def test_repository_url_is_required(tmp_path):
    (tmp_path / "_config.yml").write_text("title: no repository\n")
    with pytest.raises(ValueError, match="repository.url"):
        booktools.repository(tmp_path)


def test_citation_file_names_the_configured_repository():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["repository-code"] == booktools.repository(ROOT)[0]


# --- make site-check can fail too (needs Debian's chromium; it is not part of make test) ------

SITE_PAGE = """<!DOCTYPE html><html><head><title>{title}</title></head><body>
<h1 id="top">{title}</h1>{body}</body></html>"""


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="chromium and chromium-driver are not installed (make site-check installs them)")
def test_site_check_finds_broken_images_links_and_anchors(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import site_check
    finally:
        sys.path.pop(0)
    site = tmp_path / "html"
    site.mkdir()
    pixel = site / "pixel.svg"
    pixel.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>')
    good = '<img src="pixel.svg"><a href="other.html#top">ok</a>'
    (site / "index.html").write_text(SITE_PAGE.format(title="index", body=good))
    (site / "other.html").write_text(SITE_PAGE.format(title="other", body=good))
    assert site_check.main([str(site), "--out", str(tmp_path / "good"), "--timeout", "120"]) == 0
    assert (tmp_path / "good" / "other.png").stat().st_size > 0

    bad = '<img src="missing.png"><a href="gone.html">x</a><a href="other.html#nowhere">y</a>'
    (site / "other.html").write_text(SITE_PAGE.format(title="other", body=bad))
    assert site_check.main([str(site), "--out", str(tmp_path / "bad"), "--timeout", "120"]) == 1
    report = json.loads((tmp_path / "bad" / "report.json").read_text())
    problems = {p["page"]: p["problems"] for p in report["pages"]}
    assert problems["index.html"] == []
    assert any("image did not load" in p and "missing.png" in p for p in problems["other.html"])
    assert any("broken link" in p and "gone.html" in p for p in problems["other.html"])
    assert any("broken anchor" in p and "nowhere" in p for p in problems["other.html"])


# --- the GitHub Actions workflow --------------------------------------------------------------

# actionlint in the environment's bin folder (a pinned wheel) or on PATH.
ACTIONLINT = shutil.which("actionlint", path=os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


@pytest.mark.skipif(ACTIONLINT is None, reason="actionlint is not installed")
def test_workflow_passes_actionlint():
    # Without arguments it checks every file in .github/workflows.
    result = subprocess.run([ACTIONLINT, "-no-color"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_the_readme_commands():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    runs = {name: [step.get("run", "") for step in job["steps"]] for name, job in workflow["jobs"].items()}
    assert "bash .ci/run" in runs["test"]
    assert "make book" in runs["build"]
    uses = [step.get("uses", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    assert workflow["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}

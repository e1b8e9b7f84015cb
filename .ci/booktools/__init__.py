"""The book's own build tooling (not part of the package readers install; run by ``make``).

This module: maintenance of the book's pages, Colab install cells and the MyST <-> .ipynb pairs.
:mod:`booktools.bookbuild` executes the chapters; :mod:`booktools.sitescan` scans the built pages;
:mod:`booktools.equations` checks (and ``--fix`` rewrites) the equation numbers docstrings cite.
Run with ``PYTHONPATH=.ci`` (the Makefile sets it).

Each chapter ``book/NN_name.md`` (MyST, read by Sphinx) has a paired ``book/NN_name.ipynb``
(no outputs) for editing in Jupyter; the launch button opens the Colab edition instead,
``book/colab/NN_name.ipynb``, written by :mod:`booktools.colab`. The first code cell of every
chapter installs this package when, and only when, it runs in Colab; its URL is generated
from ``repository.url`` in ``_config.yml``, the one place that holds it.

    python -m booktools sync    # rewrite install cells, regenerate every .ipynb
    python -m booktools format [PAGES]  # ruff-format code cells at 79 columns
    python -m booktools check   # fail if anything drifted (run by make test)
    python -m booktools run PAGE [--out NB]  # execute one page, print its outputs

Code cells are formatted by ruff at a line length of 79, the width of the rendered page's code
column; ``check`` fails on any code-cell line longer than that.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

COLAB_MARKER = "# Colab only: install the book's helper package"
LINE_LENGTH = 79  # the rendered page's code column shows about 76-80 characters


def repository(root: Path) -> tuple[str, str]:
    """Return ``(url, branch)`` from the ``repository`` section of ``_config.yml``."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    repo = config.get("repository") or {}
    if not repo.get("url"):
        raise ValueError(f"{root / '_config.yml'} has no repository.url: add the public URL there.")
    return repo["url"].rstrip("/"), repo.get("branch", "main")


# Colab's TPU runtimes come without TensorFlow: the TPU build of the TensorFlow
# of Colab's CPU/GPU runtime (.ci/colab-requirements-2026.08.txt).
COLAB_TPU_TENSORFLOW = "tensorflow-tpu==2.20.0"


def colab_cell_source(url: str, branch: str) -> str:
    """Source of the first code cell of every chapter: in Colab, install the package (on a TPU
    runtime without TensorFlow, first TensorFlow's TPU build, then the package without pip
    adding the CPU build); everywhere, start TensorFlow quietly and set the book's plot style."""
    return "\n".join(
        [
            f"{COLAB_MARKER}",
            "# (generated from _config.yml).",
            "import importlib.util",
            "import os",
            "import subprocess",
            "import sys",
            "",
            'if "google.colab" in sys.modules:',
            '    pip = [sys.executable, "-m", "pip", "install", "-q"]',
            "    package = (",
            '        "ddpm_helpers @ git+"',
            f'        "{url}@{branch}"',
            "    )",
            '    tpu = importlib.util.find_spec("libtpu") is not None',
            '    tpu = tpu or os.path.exists("/dev/accel0")',
            '    if tpu and importlib.util.find_spec("tensorflow") is None:',
            "        # A TPU runtime comes without TensorFlow: install its TPU",
            "        # build, and the package without pip adding the CPU build.",
            f'        subprocess.run([*pip, "{COLAB_TPU_TENSORFLOW}"], check=True)',
            '        subprocess.run([*pip, "--no-deps", package], check=True)',
            "    else:",
            "        subprocess.run([*pip, package], check=True)",
            "",
            "# Start TensorFlow first, so that its start-up messages appear here",
            "# rather than in the middle of the chapter; use the book's plot style.",
            "import tensorflow  # noqa: E402",
            "",
            "from ddpm_helpers.notebook.plotting import use_book_style  # noqa: E402",
            "",
            "use_book_style()",
            "_ = tensorflow.config.list_logical_devices()",
        ]
    )


def chapters(root: Path) -> list[Path]:
    """Every jupytext page under ``book/`` (MyST files whose header names jupytext)."""
    pages = []
    for md in sorted((root / "book").glob("*.md")):
        if "jupytext:" in md.read_text().split("\n---", 1)[0]:
            pages.append(md)
    return pages


def _signature(notebook) -> list[tuple[str, str, tuple]]:
    """What must agree between the two files: cell kinds, sources and tags."""
    return [
        (cell.cell_type, cell.source.strip(), tuple(cell.get("metadata", {}).get("tags", ())))
        for cell in notebook.cells
    ]


def _colab_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(COLAB_MARKER)


def _stable_ids(notebook) -> None:
    """Give cells ids derived from their content, so regenerating a notebook leaves git diffs quiet."""
    import hashlib

    seen: dict[str, int] = {}
    for cell in notebook.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:10]
        seen[digest] = seen.get(digest, 0) + 1
        cell["id"] = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"


CELL_YAML = re.compile(r"(```\{code-cell\}[^\n]*\n---\n)(.*?)(\n---\n)", re.S)


def narrow_cell_metadata(md: Path) -> None:
    """Re-wrap the YAML metadata of ``md``'s code cells (figure captions) within
    :data:`LINE_LENGTH` columns; jupytext writes it up to 80 columns plus indentation."""
    import yaml

    class Dumper(yaml.SafeDumper):  # lists on one line (tags: [hide-input]), the rest blocks
        pass

    Dumper.add_representer(list, lambda dumper, value: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", value, flow_style=True))

    def rewrap(match):
        data = yaml.safe_load(match.group(2))
        text = yaml.dump(data, Dumper=Dumper, default_flow_style=False, sort_keys=False,
                         width=LINE_LENGTH - 24, allow_unicode=True).rstrip("\n")
        return match.group(1) + text + match.group(3)

    text = md.read_text()
    narrowed = CELL_YAML.sub(rewrap, text)
    if narrowed != text:
        md.write_text(narrowed)


def sync(root: Path) -> list[Path]:
    """Rewrite each chapter's Colab cell from ``_config.yml`` and regenerate its ``.ipynb``."""
    import jupytext
    import nbformat

    url, branch = repository(root)
    source = colab_cell_source(url, branch)
    written = []
    for md in chapters(root):
        notebook = jupytext.read(md)
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["remove-cell"]})
        if notebook.cells and _colab_cell(notebook.cells[0]):
            notebook.cells[0] = cell
        else:
            notebook.cells.insert(0, cell)
        jupytext.write(notebook, md, fmt="md:myst")
        narrow_cell_metadata(md)
        for c in notebook.cells:
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        _stable_ids(notebook)
        jupytext.write(notebook, md.with_suffix(".ipynb"), fmt="ipynb")
        written.append(md)
    return written


def format_cell(source: str) -> str:
    """``source`` formatted by ruff at :data:`LINE_LENGTH` (unchanged if ruff cannot parse it)."""
    import subprocess

    if not source.strip() or source.lstrip().startswith(("%", "!")):
        return source
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", f"--line-length={LINE_LENGTH}",
         "--stdin-filename=cell.py", "-"],
        input=source, capture_output=True, text=True)
    if result.returncode != 0:
        raise ValueError(f"ruff could not format this cell:\n{source}\n{result.stderr}")
    return result.stdout.rstrip("\n")


def format_pages(root: Path, pages: list[Path] | None = None) -> list[Path]:
    """Format every code cell of ``pages`` (default: all chapters) in place, then sync."""
    import jupytext

    changed = []
    for md in pages or chapters(root):
        notebook = jupytext.read(md)
        touched = False
        for cell in notebook.cells:
            if cell.cell_type == "code" and not _colab_cell(cell):
                new = format_cell(cell.source)
                if new != cell.source:
                    cell.source, touched = new, True
        if touched:
            jupytext.write(notebook, md, fmt="md:myst")
            changed.append(md)
    sync(root)
    return changed


def long_lines(notebook) -> list[str]:
    """Code-cell lines longer than :data:`LINE_LENGTH` (cell metadata lines excluded)."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if len(line) > LINE_LENGTH:
                found.append(f"cell {index}: {line.strip()[:60]}...")
    return found


CHECK_CALL = re.compile(r"^\s*check(\.claim)?\(", re.M)
FOLDED_TAGS = {"hide-cell", "hide-output", "remove-output", "remove-cell"}
# Cells whose code the page folds or leaves out (a hide-output cell shows its code).
CODE_HIDDEN_TAGS = {"hide-cell", "remove-cell", "hide-input", "remove-input"}


def unfolded_checks(notebook) -> list[str]:
    """Code cells that call ``check(...)``/``check.claim(...)`` but whose output a reader sees:
    checks belong in folded cells (exercise solutions are folded dropdowns already)."""
    found, in_solution = [], False
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            for marker in re.findall(r"\{solution-(start|end)\}", cell.source):
                in_solution = marker == "start"
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        if not in_solution and CHECK_CALL.search(cell.source) and not tags & FOLDED_TAGS:
            first = cell.source.strip().splitlines()[0]
            found.append(f"cell {index}: {first[:50]}")
    return found


# What a reader's page must not show: the build's own calls and flags (glue fills the prose,
# on_page() quiets progress and paths, so none of these is needed in a visible cell).
MACHINERY = re.compile(r"\bglue\(|\bis_book_build\b|\bredirect_stdout\b|\bDDPM_[A-Z_]+\b|"
                       r"^\s*assert\b|\b(?:verbose|progress)=False\b", re.M)


def visible_machinery(notebook) -> list[str]:
    """Code cells a reader sees (not folded or removed) that hold book machinery."""
    found = []
    for index, cell in enumerate(notebook.cells):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type == "code" and not tags & CODE_HIDDEN_TAGS and index > 0:
            hit = MACHINERY.search(cell.source)
            if hit:
                found.append(f"cell {index}: {hit.group(0).strip()}")
    return found


# A number filled in by the build right after a piece of math ("$T =$ {glue:text}`x`") renders
# as math, then text in another font: write the number into the sentence instead.
GLUE_AFTER_MATH = re.compile(r"(?:=|\\approx)\$\s*\{glue:text\}")


def glue_after_math(notebook) -> list[str]:
    """Markdown cells where a glued number follows an equals sign inside math."""
    return [f"cell {index}: ...{hit.group(0)}"
            for index, cell in enumerate(notebook.cells) if cell.cell_type == "markdown"
            for hit in GLUE_AFTER_MATH.finditer(cell.source)]


def check(root: Path) -> list[str]:
    """Every way the pages have drifted from their pairs or from ``_config.yml``."""
    import jupytext
    import nbformat

    url, branch = repository(root)
    expected = colab_cell_source(url, branch)
    problems = []
    for md in chapters(root):
        ipynb = md.with_suffix(".ipynb")
        name = md.relative_to(root)
        text = jupytext.read(md)
        if not text.cells or not _colab_cell(text.cells[0]) or text.cells[0].source.strip() != expected:
            problems.append(f"{name}: first cell is not the Colab install cell for {url}@{branch}")
        if not ipynb.exists():
            problems.append(f"{name}: no paired {ipynb.name}")
            continue
        paired = nbformat.read(ipynb, as_version=4)
        if any(c.get("outputs") for c in paired.cells if c.cell_type == "code"):
            problems.append(f"{ipynb.relative_to(root)}: has stored outputs (commit it without)")
        for where in visible_machinery(text):
            problems.append(f"{name}: a cell the reader sees holds book machinery ({where}); move "
                            "it to a cell tagged remove-cell, or drop it")
        for where in glue_after_math(text):
            problems.append(f"{name}: a glued number follows math ({where}); write it into "
                            "the sentence (e.g. 'with {glue:text}`T` steps')")
        for where in unfolded_checks(text):
            problems.append(f"{name}: a check is shown unfolded ({where}); move it to a "
                            "cell tagged hide-cell")
        for block in CELL_YAML.finditer(md.read_text()):
            for line in block.group(2).splitlines():
                if len(line) > LINE_LENGTH:
                    problems.append(f"{name}: cell metadata line over {LINE_LENGTH} characters "
                                    f"({line.strip()[:50]}...); run `booktools sync`")
        for where in long_lines(text):
            problems.append(f"{name}: code line over {LINE_LENGTH} characters ({where}); "
                            "run `python -m booktools format`, then shorten it")
        if _signature(text) != _signature(paired):
            problems.append(f"{name} and {ipynb.name} differ: edit the .md, then run sync")
    for ipynb in sorted((root / "book").glob("*.ipynb")):
        if not ipynb.with_suffix(".md").exists():
            problems.append(f"{ipynb.relative_to(root)}: no paired .md")
    return problems


def run_page(md: Path, out: Path | None = None, timeout: int = 1800) -> str:
    """Execute one page top to bottom (profile from ``$DDPM_PROFILE``) and return a digest of
    its outputs: each code cell's first line, tags, text output and the kinds of rich output.
    Used to re-read a chapter's prose against what its cells print."""
    import jupytext
    import nbclient
    import nbformat

    notebook = jupytext.read(md)
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(md.parent)}}).execute()
    if out is not None:
        nbformat.write(notebook, out)
    digest = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        tags = cell.get("metadata", {}).get("tags", [])
        digest.append(f"--- cell {index} {tags or ''}: {first[:70]}")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                digest.append(output.get("text", "").rstrip())
            else:
                data = output.get("data", {})
                kinds = ", ".join(sorted(data))
                text = data.get("text/plain", "")
                digest.append(f"[{kinds}] {text[:300]}" if "image/png" not in data
                              else f"[{kinds}]")
    return "\n".join(digest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m booktools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["sync", "format", "check", "run"])
    parser.add_argument("pages", nargs="*", type=Path, help="format/run: these pages only")
    parser.add_argument("--out", type=Path, help="run: also write the executed notebook here")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the book's top folder")
    args = parser.parse_args(argv)
    if args.command == "sync":
        for md in sync(args.root):
            print(f"synced {md.relative_to(args.root)} -> {md.with_suffix('.ipynb').name}")
        return 0
    if args.command == "format":
        pages = [page.resolve() for page in args.pages] or None
        for md in format_pages(args.root.resolve(), pages):
            print(f"formatted {md}")
        return 0
    if args.command == "run":
        for md in args.pages:
            print(run_page(md.resolve(), args.out))
        return 0
    problems = check(args.root)
    for problem in problems:
        print(f"DRIFT: {problem}", file=sys.stderr)
    if not problems:
        print(f"{len(chapters(args.root))} chapters in sync with their notebooks and _config.yml")
    return 1 if problems else 0



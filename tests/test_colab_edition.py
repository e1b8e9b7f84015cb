"""The Colab edition (book/colab/*.ipynb, written by booktools.colab's Sphinx builder): what Colab
opens must read like the page (no MyST left, numbers and citations resolved), fold what the page
folds, start with a short install and a settings cell, and run the page's code. Each check is
also shown to fail on the fault it exists to catch."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import booktools
import pytest
from booktools import colab

ROOT = Path(__file__).resolve().parents[1]
COLAB = ROOT / "book" / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_chapter_has_a_colab_notebook():
    chapters = {md.stem for md in booktools.chapters(ROOT)}
    assert chapters and {path.stem for path in NOTEBOOKS} == chapters


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_colab_notebook_reads_like_the_page_and_folds_what_it_folds(path):
    assert colab.lint(read(path), ROOT / "book" / f"{path.stem}.md") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_colab_notebook_install_and_settings(path):
    notebook = read(path)
    url, branch = booktools.repository(ROOT)
    ref = colab.installed_ref(notebook["cells"][0]["source"])
    assert notebook["cells"][0]["source"] == colab.install_source(url, ref)
    # pinned to the commit it was built from (or a tag), not to a branch that moves on
    assert ref != branch and ref not in ("main", "master"), (
        f"{path.name} installs the package from the branch {ref!r}: rebuild it with make "
        "colab-notebooks, which pins the commit being built")
    settings = notebook["cells"][2]["source"]
    assert f'PROFILE = "{colab.PUBLISHED_PROFILE}"' in settings
    assert notebook["cells"][2]["metadata"]["cellView"] == "form"
    assert "## Settings" in notebook["cells"][1]["source"]
    assert all(cell["outputs"] == [] for cell in notebook["cells"] if cell["cell_type"] == "code")


def test_the_chapters_numbers_and_citations_are_resolved():
    """Spot checks on the committed notebooks: equation tags, figure captions, exercise labels,
    author-year citations linking to the references page, glued values filled in."""
    text = "\n".join(cell["source"] for path in NOTEBOOKS for cell in read(path)["cells"]
                     if cell["cell_type"] == "markdown")
    assert "\\tag{" in text
    assert "**Fig. " in text
    assert "Solution to Exercise" in text and "**Exercise " in text
    assert "references.html#" in text
    glued = [cell for path in NOTEBOOKS for cell in read(path)["cells"]
             if cell.get("metadata", {}).get(colab.METADATA_KEY, {}).get("glue")]
    assert glued
    for cell in glued:
        for _key, value in cell["metadata"][colab.METADATA_KEY]["glue"]:
            assert value in cell["source"]


# --- the checks fail when they should --------------------------------------------------------


def small_notebook() -> dict:
    url, _branch = booktools.repository(ROOT)
    return {"cells": [
        colab.code_cell(colab.install_source(url, "0123456789abcdef0123456789abcdef01234567")),
        colab.markdown_cell("## Settings"),
        colab.code_cell('#@title Settings\nPROFILE = "default"  #@param ["smoke"]\n'
                        'import os\nos.environ["DDPM_PROFILE"] = PROFILE', form=True),
        colab.markdown_cell("# A page\n\nThe loss falls to 0.12 (Eq. 2.3)."),
        {**colab.code_cell("#@title Check: it falls\ncheck('it falls', True)", form=True),
         "metadata": {"cellView": "form", "tags": ["hide-cell"]}},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.parametrize("myst", [
    "the loss {glue:text}`loss`", "see {eq}`eq-loss`", "{ref}`sec-training`",
    "{cite}`ho2020ddpm`", "{numref}`fig-loss`", "```{math}\nx\n```", ":::{note}\nx\n:::",
    "(sec-training)=\n# Training", "```{code-cell} ipython3\n:tags: [hide-cell]\nx\n```",
    f"the loss {colab.OPEN}loss{colab.CLOSE}",
])
def test_lint_finds_myst_left_in_markdown(myst):
    notebook = small_notebook()
    assert colab.lint(notebook) == []
    notebook["cells"][3]["source"] += "\n\n" + myst
    assert any("left in the Markdown" in problem for problem in colab.lint(notebook))


def test_lint_finds_an_unfolded_check_a_long_install_and_no_settings():
    unfolded = small_notebook()
    unfolded["cells"][4]["metadata"].pop("cellView")
    assert any("not a form cell" in p for p in colab.lint(unfolded))
    long_install = small_notebook()
    long_install["cells"][0]["source"] = "import sys\n" * 3 + "%pip install -q x"
    assert any("cell 0" in p for p in colab.lint(long_install))
    no_settings = small_notebook()
    del no_settings["cells"][2]
    assert any("no settings cell" in p for p in colab.lint(no_settings))


def test_lint_finds_a_lost_code_cell():
    path = COLAB / "06_training.ipynb"
    notebook = read(path)
    md = ROOT / "book" / "06_training.md"
    assert colab.lint(notebook, md) == []
    code = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"]
    del notebook["cells"][code[5]]
    assert any("not the page's" in p for p in colab.lint(notebook, md))


def built_with_glue(tmp_path, text: str) -> tuple[dict, Path]:
    """A builder's notebook whose cell 3 reads ``text`` with a placeholder for the glued
    ``loss`` (0.9 in this build), written to ``tmp_path/built``."""
    notebook = small_notebook()
    notebook["cells"][3] = {"cell_type": "markdown",
                            "source": text.format(key=f"{colab.OPEN}loss{colab.CLOSE}"),
                            "metadata": {colab.METADATA_KEY: {"glue": [["loss", "0.9"]]}}}
    built = tmp_path / "built"
    built.mkdir()
    (built / "page.ipynb").write_text(colab.dumps(notebook))
    return notebook, built


def test_drift_ignores_glued_values_but_nothing_else(tmp_path):
    _, built = built_with_glue(tmp_path, "The loss falls to {key}.")
    committed = tmp_path / "committed"
    colab.write(built, committed)
    assert "falls to 0.9." in read(committed / "page.ipynb")["cells"][3]["source"]
    assert colab.drift(built, committed) == []
    # The published build's value (another profile) is not drift...
    published = read(committed / "page.ipynb")
    published["cells"][3]["source"] = "The loss falls to 0.12."
    published["cells"][3]["metadata"][colab.METADATA_KEY]["glue"] = [["loss", "0.12"]]
    (committed / "page.ipynb").write_text(colab.dumps(published))
    assert colab.drift(built, committed) == []
    # ...but a changed sentence, another key or a hand-edited value is.
    for source, glue in [("The loss drops to 0.12.", [["loss", "0.12"]]),
                         ("The loss falls to 0.12.", [["other", "0.12"]]),
                         ("The loss falls to 0.13.", [["loss", "0.12"]])]:
        edited = copy.deepcopy(published)
        edited["cells"][3]["source"] = source
        edited["cells"][3]["metadata"][colab.METADATA_KEY]["glue"] = glue
        (committed / "page.ipynb").write_text(colab.dumps(edited))
        assert colab.drift(built, committed), source
    (committed / "page.ipynb").unlink()
    assert any("not in" in p for p in colab.drift(built, committed))


def test_write_can_keep_the_published_values(tmp_path):
    smoke, built = built_with_glue(tmp_path, "Now the loss falls to {key}.")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no published values"):
        colab.write(built, out, keep=True)
    published = copy.deepcopy(smoke)
    published["cells"][3]["source"] = "The loss falls to 0.12."
    published["cells"][3]["metadata"][colab.METADATA_KEY]["glue"] = [["loss", "0.12"]]
    out.mkdir()
    (out / "page.ipynb").write_text(colab.dumps(published))
    colab.write(built, out, keep=True)
    assert read(out / "page.ipynb")["cells"][3]["source"] == "Now the loss falls to 0.12."
    smoke["cells"][3]["metadata"][colab.METADATA_KEY]["glue"] = [["new_key", "1"]]
    smoke["cells"][3]["source"] = f"{colab.OPEN}new_key{colab.CLOSE}"
    (built / "page.ipynb").write_text(colab.dumps(smoke))
    (built / "another.ipynb").write_text(colab.dumps(small_notebook()))
    (out / "another.ipynb").write_text(colab.dumps(small_notebook()))
    before = {path.name: path.read_text() for path in out.iterdir()}
    with pytest.raises(ValueError, match="no published value yet"):
        colab.write(built, out, keep=True)
    assert {path.name: path.read_text() for path in out.iterdir()} == before  # nothing written


def test_localize_installs_from_a_copy_and_runs_smoke(tmp_path):
    for path in NOTEBOOKS[:2]:
        shutil.copy(path, tmp_path / path.name)
    colab.localize(tmp_path, "file:///tmp/copy", "smoke")
    notebook = read(tmp_path / NOTEBOOKS[0].name)
    assert '"ddpm_helpers @ file:///tmp/copy"' in notebook["cells"][0]["source"]
    assert 'PROFILE = "smoke"' in notebook["cells"][2]["source"]
    broken = small_notebook()
    broken["cells"][2]["source"] = "x = 1"
    (tmp_path / "broken.ipynb").write_text(colab.dumps(broken))
    with pytest.raises(ValueError, match="no install line or no PROFILE"):
        colab.localize(tmp_path, "file:///tmp/copy", "smoke")


def test_launch_button_opens_the_colab_notebook():
    base = "https://colab.research.google.com/github/ddpm-book/diffusion-from-scratch-tf/blob/main"
    buttons = [{"label": "launch-buttons", "buttons": [
        {"text": "Colab", "url": f"{base}/book/06_training.ipynb"}]}]
    context = {"header_buttons": copy.deepcopy(buttons)}
    colab.colab_launch_button(None, "book/06_training", "page.html", context, None)
    assert context["header_buttons"][0]["buttons"][0]["url"] == (
        f"{base}/book/colab/06_training.ipynb")
    other = {"header_buttons": copy.deepcopy(buttons)}  # a page without a Colab notebook
    colab.colab_launch_button(None, "book/status", "page.html", other, None)
    assert other["header_buttons"] == buttons


# --- the builder itself, on a small book --------------------------------------------------------


PAGE = r"""
(sec-tiny)=
# A tiny page

The value is {glue:text}`tiny_value` ({glue:text}`tiny_share:.1%`); see {eq}`eq-tiny`,
{numref}`fig-tiny` and {cite}`ho2020ddpm`; a \$5 note and $x_t$.

```{math}
:label: eq-tiny
x_t = \sqrt{\bar\alpha_t}\,x_0
```

```{code-cell} ipython3
:tags: [hide-cell]

from myst_nb import glue

glue("tiny_value", 42, display=False)
glue("tiny_share", 0.1234, display=False)
```

```{code-cell} ipython3
:tags: [remove-cell]

hidden = 3
```

## A section

```{code-cell} ipython3
---
mystnb:
  figure:
    caption: A figure of {glue:text}`tiny_value` points.
    name: fig-tiny
---
import matplotlib.pyplot as plt

plt.plot([1, 2, hidden])
plt.show()
```

```{exercise-start}
:label: ex-tiny
```
Add one.
```{code-cell} ipython3
x = 1
```
```{exercise-end}
```

```{solution-start} ex-tiny
:class: dropdown
```
Like this:
```{code-cell} ipython3
y = x + 1
```
```{solution-end}
```

```{bibliography}
```
"""


def test_builder_writes_a_notebook_that_reads_like_the_page(tmp_path):
    book = tmp_path / "book"
    (book / "book").mkdir(parents=True)
    for name in ("_config.yml", "references.bib"):
        shutil.copy(ROOT / name, book / name)
    for name in (".ci", "_ext", "_static"):
        if (ROOT / name).exists():
            (book / name).symlink_to(ROOT / name)
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/index\n")
    front = (ROOT / "book" / "index.md").read_text().split("\n---\n", 1)[0] + "\n---\n"
    (book / "book" / "index.md").write_text(front + PAGE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "DDPM_PROFILE": "smoke",
           colab.INSTALL_REF_ENV: "v9.9-test"}
    jb = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(book), "-W", "-n",
          "--keep-going", "--builder", "custom", "--custom-builder", "colab"]
    done = subprocess.run(jb, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    built = read(book / "_build" / "colab" / "index.ipynb")
    filled = colab.fill(built)
    assert colab.lint(filled) == []
    text = "\n".join(c["source"] for c in filled["cells"] if c["cell_type"] == "markdown")
    assert "The value is 42 (12.3%)" in text
    assert "\\tag{1}" in text and "[Eq. 1](" in text and "#equation-eq-tiny" in text
    assert "**Fig. 1.** A figure of 42 points." in text
    assert "**Exercise 1**" in text and "<summary>Solution to Exercise 1</summary>" in text
    assert "a \\$5 note and $x_t$" in text
    assert "2020" in text and "index.html#" in text
    code = [c for c in filled["cells"] if c["cell_type"] == "code"]
    sources = [c["source"] for c in code]
    assert "#@title Solution to Exercise 1\ny = x + 1" in sources
    solution = next(c for c in code if c["source"].startswith("#@title Solution to"))
    assert solution["metadata"]["cellView"] == "form"  # folded: Colab shows its title only
    url, _branch = booktools.repository(ROOT)
    assert filled["cells"][0]["source"] == colab.install_source(url, "v9.9-test")
    hidden = next(c for c in code if "hidden = 3" in c["source"])  # remove-cell: still runs
    assert hidden["metadata"]["cellView"] == "form"
    assert sources.index(hidden["source"]) < next(
        i for i, s in enumerate(sources) if "plt.plot" in s)


def test_a_folded_cell_is_titled_by_the_first_sentence_of_its_comment():
    source = ("# A batch of digits noised to random steps, and a noise prediction with\n"
              "# an error of 0.3 per pixel. More detail here.\nx = 1\n")
    assert colab.cell_title(source) == (
        "A batch of digits noised to random steps, and a noise prediction with an error of 0.3 "
        "per pixel")
    assert colab.cell_title("# Gaussian data x_0 ~ N(0, s^2): q(x_t) is Gaussian\nx = 1") == (
        "Gaussian data x_0 ~ N(0, s^2)")
    # "Eq." does not end the sentence; the list of a chapter's checks has its own title
    assert colab.cell_title("# Eq. (14.3) against the KL. More.\nx = 1") == (
        "Eq. (14.3) against the KL")
    assert colab.cell_title("display(check.table())\n") == "All checks of this chapter"


def test_install_ref_pins_a_variable_or_the_commit_being_built_or_falls_back(tmp_path, monkeypatch):
    monkeypatch.delenv(colab.INSTALL_REF_ENV, raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert colab.install_ref(ROOT) == head
    assert colab.install_ref(tmp_path, fallback="main") == "main"  # no git checkout there
    monkeypatch.setenv(colab.INSTALL_REF_ENV, "v1.2")
    assert colab.install_ref(ROOT) == "v1.2"
    monkeypatch.setenv(colab.INSTALL_REF_ENV, 'main" && rm -rf ~')
    with pytest.raises(ValueError, match=colab.INSTALL_REF_ENV):
        colab.install_ref(ROOT)
    url = "https://github.com/o/r"
    assert colab.installed_ref(colab.install_source(url, head)) == head


def test_drift_ignores_the_pinned_commit_but_not_the_rest_of_the_install_cell(tmp_path):
    built, committed = tmp_path / "built", tmp_path / "committed"
    built.mkdir()
    committed.mkdir()
    old = small_notebook()
    (committed / "01_x.ipynb").write_text(colab.dumps(old))
    new = copy.deepcopy(old)
    new["cells"][0]["source"] = new["cells"][0]["source"].replace(
        "0123456789abcdef0123456789abcdef01234567", "f" * 40)
    (built / "01_x.ipynb").write_text(colab.dumps(new))
    assert colab.drift(built, committed) == []
    new["cells"][0]["source"] = new["cells"][0]["source"].replace("github.com", "example.org")
    (built / "01_x.ipynb").write_text(colab.dumps(new))
    assert colab.drift(built, committed)


def test_a_removed_cell_that_only_feeds_the_prose_is_left_out_of_colab():
    from types import SimpleNamespace

    def cell(source, tags=("remove-cell",)):
        return SimpleNamespace(cell_type="code", source=source, metadata={"tags": list(tags)})

    cells = [
        cell('glue("a", x, ".2f")'),                       # only the prose: left out
        cell('glue("a2", ", ".join(f"{w:.1f}" for w in x))'),  # w is the comprehension's own
        cell('words = f"{x:.1f}"\nglue("b", words)'),       # defines words, which cell 5 reads
        cell('glue("c", rng.standard_normal())'),           # draws random numbers
        cell('glue("c2", tf.random.normal([1]))'),          # draws random numbers too
        cell('glue("c3", seed_profile.train_steps)'),       # a name with "seed" in it is fine
        cell('glue("d", x)\ncheck("eq", "what", 0, 1)'),    # checks
        cell('glue("e", x)', tags=("hide-cell",)),          # folded, not removed
        cell("print(words, w)", tags=()),
    ]
    found = [colab.feeds_prose_only(cells, i) for i in range(len(cells))]
    assert found == [True, True, False, False, False, True, False, False, False]
    # and no committed notebook keeps a removed cell that only glues
    for path in sorted(COLAB.glob("*.ipynb")):
        for c in read(path)["cells"]:
            body = [line for line in _strip(c["source"]).splitlines() if line.strip()]
            assert not (c["cell_type"] == "code" and body and all(
                line.startswith("glue(") for line in body)), (path.name, c["source"][:80])


def _strip(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.startswith("#@title"))

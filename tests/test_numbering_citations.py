"""Numbers by chapter and author-year citations, in a tiny book built with the real configuration.

The tiny book has the repository's ``_config.yml``, ``references.bib``, ``_ext`` and ``_static``
and a ``_toc.yml`` whose parts keep every setting of the real ``_toc.yml`` (``numbered``, ...)
with two small chapters in place of the real ones, plus a Build status and a References page. It is built with the
command of ``make strict-build`` (warnings are errors). A chapter's equations, figures and
exercises must read 2.1, 2.2, ..., its citations "Ho et al. (2020)" and "(Ho et al., 2020)",
the two Song et al. papers of 2021 must get 2021a and 2021b, every citation must link to
``references.html``, and the Build status page must say "passed" in words.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

from test_book_checks import FRONT_MATTER, ROOT, output, strict_build

CHAPTER = """(sec-{name})=
# Chapter {name}

Intro: {{cite:t}}`ho2020ddpm` defined it {{cite:p}}`ho2020ddpm`; see {{eq}}`eq-{name}-a`,
{{numref}}`fig-{name}` and {{numref}}`ex-{name}`. Two papers of one year:
{{cite:t}}`song2021ddim` and {{cite}}`song2021sde`.

## A section

```{{math}}
:label: eq-{name}-a
a = b
```

$$
c = d
$$ (eq-{name}-b)

```{{figure}} ../pixel.svg
:name: fig-{name}

A figure.
```

```{{exercise}}
:label: ex-{name}

Do it.
```
"""

INDEX = """(sec-index)=
# Front page

No bibliography here: it is on its own page, {ref}`sec-references`.

```{code-cell} ipython3
print(6 * 7)
```
"""

STATUS = """# Build status

```{nb-exec-table}
```
"""


def two_chapter_book(tmp_path: Path) -> Path:
    """The real configuration, the real _toc.yml's parts with two chapters and References."""
    from test_book_checks import tiny_book

    import booktools

    book = tiny_book(tmp_path)
    (book / "book" / "index.md").write_text(FRONT_MATTER + INDEX)
    (book / "pixel.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>')
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    parts = toc["parts"]
    assert len(parts) >= 2, "the test needs two parts to check numbering across parts"
    files = iter(["book/one", "book/two"])
    tiny_parts = []
    for part in (parts[0], parts[-1]):
        chapters = [{"file": next(files)}]
        if part is parts[-1]:
            chapters += [{"file": "book/status"}, {"file": "book/references"}]
        tiny_parts.append({**part, "chapters": chapters})
    toc["parts"] = tiny_parts
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    for name in ("one", "two"):
        (book / "book" / f"{name}.md").write_text(CHAPTER.format(name=name))
    (book / "book" / "references.md").write_text((ROOT / "book" / "references.md").read_text())
    (book / "book" / "status.md").write_text(STATUS)
    booktools.sync(book)  # the front page's notebook and Colab cell
    return book


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The tiny book, built once for all the tests of this file; its html folder."""
    tmp_path = tmp_path_factory.mktemp("numbering")
    book = two_chapter_book(tmp_path)
    result = strict_build(book)
    assert result.returncode == 0, output(result)
    return tmp_path / "out" / "_build" / "html"


def article(html: Path, page: str) -> BeautifulSoup:
    soup = BeautifulSoup((html / "book" / f"{page}.html").read_text(), "html.parser")
    return soup.find("article") or soup


def text(node) -> str:
    """What a reader sees of a node: its text, without the "#" of permalinks."""
    for link in node.select("a.headerlink"):
        link.decompose()
    return re.sub(r"\s+", " ", node.get_text()).strip()


@pytest.mark.parametrize("page, chapter", [("one", 1), ("two", 2)])
def test_numbers_run_within_each_chapter(built, page, chapter):
    soup = article(built, page)
    equation_numbers = [text(n) for n in soup.select("span.eqno")]
    assert equation_numbers == [f"({chapter}.1)", f"({chapter}.2)"]
    assert text(soup.select_one("figcaption .caption-number")) == f"Fig. {chapter}.1"
    assert text(soup.select_one(".exercise .caption-number")) == f"Exercise {chapter}.1"
    intro = text(soup.find("p"))
    assert f"Eq. {chapter}.1" in intro
    assert f"Fig. {chapter}.1" in intro
    assert f"Exercise {chapter}.1" in intro
    # The chapters are numbered, their sections are not (numbered: 1 in _toc.yml).
    assert text(soup.find("h1")).startswith(f"{chapter}. Chapter {page}")
    assert not soup.find("h2").select(".section-number")


def test_citations_are_author_year_and_link_to_the_references_page(built):
    soup = article(built, "two")
    intro = text(soup.find("p"))
    assert "Ho et al. (2020) defined it (Ho et al., 2020)" in intro
    assert "Song et al. (2021a) and (Song et al., 2021b)" in intro  # DDIM, then the SDE paper
    links = [a for span in soup.select("span.bibtex-citation") for a in span.find_all("a")]
    assert len(links) == 4
    assert all(a["href"].startswith("references.html#") for a in links), [a["href"] for a in links]
    references = article(built, "references")
    ids = {div["id"] for div in references.select("div.citation")}
    assert {a["href"].split("#", 1)[1] for a in links} <= ids


def test_the_references_page_lists_authors_then_year(built):
    entries = [text(div.find("p")) for div in article(built, "references").select("div.citation")]
    assert any(e.startswith("Ho, J., Jain, A., Abbeel, P. (2020). Denoising diffusion probabilistic "
                            "models.") for e in entries), entries
    songs = [e for e in entries if e.startswith("Song, ")]
    assert [e.split("(")[1][:5] for e in songs] == ["2021a", "2021b"]
    assert not article(built, "index").select("div.citation")  # no list on the front page


def test_the_real_book_has_one_references_page():
    toc = (ROOT / "_toc.yml").read_text()
    assert "file: book/references" in toc
    assert "{bibliography}" in (ROOT / "book" / "references.md").read_text()
    for page in sorted((ROOT / "book").glob("*.md")):
        if page.name != "references.md":
            assert "{bibliography}" not in page.read_text(), f"{page.name} has a bibliography"


def test_the_build_status_page_says_passed_in_words(built):
    """myst-nb's emoji (U+2705, U+274C) are empty boxes without a colour-emoji font."""
    status = article(built, "status")
    rows = [[text(cell) for cell in row.find_all("td")] for row in status.select("tbody tr")]
    assert rows and all(row[-1] == "passed" for row in rows), rows
    assert "\u2705" not in text(status) and "\u274c" not in text(status)

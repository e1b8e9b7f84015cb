"""What a reader must never see in the built book: a scan of the rendered pages (``make test``).

Every chapter's checks run in the build but stay folded, and the text speaks to a reader. This
scan reads the article of every page of a built site (``_build/html/book/*.html``) and reports:

- machine noise in an output: a Python traceback, a TensorFlow/absl log line
  (``E0000 00:00:... util.cc:131] ...``) or a Python warning (``UserWarning: ...``);
- a path of the machine that built the book (the repository, ``$DDPM_RUNS_DIR``, the home folder);
- words only the book's makers use (PASS/FAIL, "the seed chapter");
- a NumPy scalar's repr in the text (``np.int64(1)``, what NumPy 2 prints for a glued scalar);
- an equation label where its number belongs (a table cell ``eq-jackknife`` in a list of checks:
  ``_ext/check_equations.py`` numbers them).

    python -m booktools.sitescan _build/html
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

NOISE = {
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
    "a TensorFlow log line": re.compile(r"\b[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\]"),
    "a Python warning": re.compile(r"\b[A-Z]\w*Warning: "),
    "a word for the makers": re.compile(r"\bPASS(ED)?\b|\bFAIL(ED)?\b|the seed chapter"),
    "a NumPy repr": re.compile(r"\bnp\.(?:u?int\d+|float\d+|bool_|str_)\((?:-?[\d.e+-]+|True|False)\)"),
}


LABEL_CELL = re.compile(r"<td>(eq-[A-Za-z0-9_-]+)</td>")


def machine_paths(root: Path) -> list[str]:
    """Absolute paths of this machine that must not appear in a page (longest first)."""
    paths = {str(root.resolve()), str(Path.home())}
    if os.environ.get("DDPM_RUNS_DIR"):
        paths.add(str(Path(os.environ["DDPM_RUNS_DIR"]).resolve()))
    return sorted((p for p in paths if len(p) > 1), key=len, reverse=True)


def article_text(html: str) -> str:
    """The text of a page's article (the chapter, without navigation and sidebars)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    article = soup.find("article") or soup.find("main") or soup
    return article.get_text("\n")


def scan_page(text: str, paths: list[str]) -> list[str]:
    """The problems in one page's article text, each with the line it was found on."""
    problems = []
    for line in text.splitlines():
        for what, pattern in NOISE.items():
            if pattern.search(line):
                problems.append(f"{what}: {line.strip()[:160]}")
        for path in paths:
            if path in line:
                problems.append(f"a path of this machine ({path}): {line.strip()[:160]}")
                break
    return problems


def scan_site(html_dir: Path, root: Path | None = None) -> dict[str, list[str]]:
    """Problems per page of the built site ``html_dir`` (pages without problems left out)."""
    pages = sorted(Path(html_dir).glob("book/*.html"))
    if not pages:
        raise FileNotFoundError(f"No pages in {html_dir}/book: build the book first (make book).")
    paths = machine_paths(root or Path.cwd())
    found = {}
    for page in pages:
        html = page.read_text(encoding="utf-8")
        problems = scan_page(article_text(html), paths)
        problems += [f"an equation label instead of its number: {label}"
                     for label in LABEL_CELL.findall(html)]
        if problems:
            found[page.name] = problems
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m booktools.sitescan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="the built site, e.g. _build/html")
    args = parser.parse_args(argv)
    found = scan_site(args.html)
    for page, problems in found.items():
        print(f"{page}:")
        for problem in problems:
            print(f"  {problem}")
    pages = len(list(args.html.glob("book/*.html")))
    print(f"sitescan: {sum(map(len, found.values()))} problems in {len(found)} of {pages} pages")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""The Colab edition: notebooks written by a Sphinx builder from the book's resolved doctrees.

The launch buttons open ``book/colab/NN_name.ipynb``, which this module writes; the paired
``book/NN_name.ipynb`` (jupytext) is the editing copy only. The notebooks are produced by the
``colab`` builder below, a Sphinx builder that walks each chapter's doctree *after* Sphinx has
resolved it, so everything MyST and its extensions computed for the page is already there:
equation, figure and exercise numbers (``env.toc_fignumbers``), resolved ``{eq}``/``{ref}``/
``{numref}`` references, author-year citations from sphinxcontrib-bibtex and the glued values
of myst-nb. Prose becomes Markdown (Colab renders it, math through its own typesetter); every
reference links to the published page (``html.baseurl`` in ``_config.yml``). Code cells are not
taken from the doctree (myst-nb drops ``remove-cell`` cells and the source of ``remove-input``
cells) but from the chapter itself, by cell index, so the notebook runs exactly the page's code.

Differences from the page, on purpose:

- cell 0 is a two-line install (``%pip install`` of the package from ``repository.url``), pinned
  to the commit the notebooks were built from (:func:`install_ref`), so that a notebook runs the
  package it was written with rather than whatever ``main`` holds later;
  cell 1-2 are the settings: which profile runs, what the chapter trains and how long it takes;
  the page's own first cell (TensorFlow start-up, plot style) runs inside the settings cell;
- cells the page folds or hides (``hide-cell``, ``hide-input``, ``remove-input``,
  ``remove-cell``) and the code of exercise solutions are Colab form cells (``#@title`` and
  ``cellView: form``): their code is folded, their output shown;
- solutions sit in ``<details>`` blocks, folded like the page's dropdowns.

Glued values (``{glue:text}``) depend on the profile a build ran. The builder writes each one
as a placeholder and keeps the value in the cell's metadata (``ddpm_book.glue``: ``[key,
value]`` pairs, in order); :func:`fill` puts the values in. ``make colab-notebooks`` writes the
filled notebooks from the ``default`` build (the published one), so the text reads the
published numbers. ``make test`` builds the notebooks again from its ``smoke`` build and
:func:`drift` compares them with the committed ones after filling the fresh placeholders with the
committed values: every character but the values (and the keys and their order) must agree.

    jupyter-book build . --builder custom --custom-builder colab   # writes _build/colab
    python -m booktools.colab write _build/colab book/colab        # fill in, commit these
    python -m booktools.colab check _build/strict/_build/colab book/colab   # drift (make test)
    python -m booktools.colab lint book/colab                      # MyST left, folding, cell 0
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.builders import Builder
from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
METADATA_KEY = "ddpm_book"
OPEN, CLOSE = "\ue000", "\ue001"  # private-use characters around a glue key
PLACEHOLDER = re.compile(f"{OPEN}([^{CLOSE}]*){CLOSE}")
FOLDED_TAGS = ("hide-cell", "hide-input", "remove-input", "remove-cell")
PUBLISHED_PROFILE = "default"
TITLE_WIDTH = 72


# --- configuration -----------------------------------------------------------------------------


def site_url(config) -> str:
    """The published book's address, ending in ``/`` (``html.baseurl`` in ``_config.yml``)."""
    url = (getattr(config, "html_baseurl", "") or "").strip()
    if not url:
        raise ValueError("_config.yml has no html.baseurl: the Colab edition links its "
                         "references to the published pages there.")
    return url.rstrip("/") + "/"


INSTALL_REF_ENV = "DDPM_BOOK_INSTALL_REF"
GIT_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def install_ref(root: Path = ROOT, fallback: str = "main") -> str:
    """The git ref cell 0 installs the package from: ``$DDPM_BOOK_INSTALL_REF`` when set (e.g. a
    release tag), else the commit being built (``git rev-parse HEAD`` in ``root``), else
    ``fallback`` (the branch of ``_config.yml``) where there is no git checkout."""
    ref = os.environ.get(INSTALL_REF_ENV, "").strip()
    if ref:
        if not GIT_REF.fullmatch(ref):
            raise ValueError(f"{INSTALL_REF_ENV}={ref!r} is not a git tag, branch or commit; set "
                             "it to e.g. v1.0 or a commit hash, or unset it to pin the commit "
                             "being built.")
        return ref
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return fallback
    head = done.stdout.strip()
    return head if re.fullmatch(r"[0-9a-f]{40}", head) else fallback


def install_source(url: str, ref: str) -> str:
    """Cell 0 of every Colab notebook: two lines, installing the package at ``ref``."""
    return ("# The book's helper package and its pinned dependencies (about a minute):\n"
            f'%pip install -q "ddpm_helpers @ git+{url}@{ref}"')


INSTALLED_REF = re.compile(r'(%pip install -q "ddpm_helpers @ git\+[^"@\s]+@)([^"\s]+)(")')


def installed_ref(source: str) -> str | None:
    """The ref an install cell's source pins (None when it has no such line)."""
    found = INSTALLED_REF.search(source)
    return found.group(2) if found else None


# --- the Sphinx side: glue keys, the builder, the launch button --------------------------------


def _annotated_paste_text_role():
    """myst-nb's ``{glue:text}`` role, which also records the key on the node it makes."""
    from myst_nb.ext.glue.roles import PasteTextRole

    class KeyedPasteTextRole(PasteTextRole):
        def run(self):
            made, messages = super().run()
            key = self.text.rsplit(":", 1)[0] if ":" in self.text.split("::")[-1] else self.text
            for node in made:
                node["glue_key"] = key.split("::")[-1]
            return made, messages

    return KeyedPasteTextRole()


def colab_launch_button(app, pagename, templatename, context, doctree) -> None:
    """Point the page's Colab launch button at ``book/colab/<page>.ipynb`` (html-page-context,
    after sphinx-book-theme made the button: it opens the page's own path)."""
    url = colab_url_for(context.get("header_buttons", []), pagename)
    if url is None:
        return
    for group in context["header_buttons"]:
        for button in group.get("buttons", []) if group.get("label") == "launch-buttons" else []:
            if button.get("text") == "Colab":
                button["url"] = url


def colab_url_for(header_buttons, pagename: str) -> str | None:
    """The launch URL the page's Colab button should have, or None if it has none (or the page
    has no Colab notebook)."""
    notebook = ROOT / "book" / "colab" / (Path(pagename).name + ".ipynb")
    for group in header_buttons:
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("text") == "Colab" and notebook.exists():
                head = button["url"].split("/blob/", 1)[0]
                branch = button["url"].split("/blob/", 1)[1].split("/", 1)[0]
                return f"{head}/blob/{branch}/book/colab/{notebook.name}"
    return None


class ColabBuilder(Builder):
    """Writes one notebook per chapter (a page with a jupytext header) from its resolved
    doctree. Reads nothing itself: it renders from the environment and the execution cache of
    the HTML build."""

    name = "colab"
    format = "ipynb"
    epilog = "The Colab notebooks are in %(outdir)s."
    allow_parallel = False

    def init(self) -> None:
        self.site = site_url(self.config)

    def get_outdated_docs(self):
        return [doc for doc in sorted(self.env.found_docs) if _is_chapter(self.env.doc2path(doc))]

    def get_target_uri(self, docname: str, typ: str | None = None) -> str:
        return f"{self.site}{docname}.html"

    def get_relative_uri(self, from_: str, to: str, typ: str | None = None) -> str:
        return self.get_target_uri(to)

    def prepare_writing(self, docnames) -> None:
        Path(self.outdir).mkdir(parents=True, exist_ok=True)

    def write_doc(self, docname: str, doctree: nodes.document) -> None:
        path = Path(self.env.doc2path(docname))
        if not _is_chapter(path):
            return
        notebook = NotebookWriter(self, docname, doctree, path).notebook()
        out = Path(self.outdir) / (path.stem + ".ipynb")
        out.write_text(dumps(notebook))

    def finish(self) -> None:
        pass


def _is_chapter(path) -> bool:
    path = Path(path)
    return path.suffix == ".md" and "jupytext:" in path.read_text().split("\n---", 1)[0]


def _colab_mime_priority(app, config) -> None:
    """myst-nb picks each output's MIME type per builder; the notebooks carry no outputs, so
    any will do (without one, every figure warns)."""
    overrides = list(config.nb_mime_priority_overrides or [])
    if not any(entry[0] == ColabBuilder.name for entry in overrides):
        config.nb_mime_priority_overrides = [*overrides, (ColabBuilder.name, "text/plain", 10)]


def setup(app):
    app.add_builder(ColabBuilder)
    app.connect("config-inited", _colab_mime_priority)
    app.add_role_to_domain("glue", "text", _annotated_paste_text_role(), override=True)
    app.connect("html-page-context", colab_launch_button, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


# --- doctree -> notebook ----------------------------------------------------------------------


MD_SPECIAL = re.compile(r"([\\`*_\[\]<>$|])")


def _escape(text: str) -> str:
    return MD_SPECIAL.sub(r"\\\1", text)


def _line(node) -> int | None:
    for each in node.findall(include_self=True):
        if getattr(each, "line", None):
            return each.line
    return None


class NotebookWriter:
    """Renders one resolved chapter doctree as notebook cells."""

    def __init__(self, builder: ColabBuilder, docname: str, doctree, path: Path):
        from myst_nb.core.read import read_myst_markdown_notebook

        self.builder, self.docname, self.doctree, self.path = builder, docname, doctree, path
        self.env, self.config = builder.env, builder.config
        self.source = read_myst_markdown_notebook(path.read_text(), add_source_map=True)
        self.lines = self.source.metadata.get("source_map", [])
        self.fignumbers = self.env.toc_fignumbers.get(docname, {})
        self.secnumbers = self.env.toc_secnumbers.get(docname, {})
        self.cells: list[dict] = []
        self.md: list[str] = []  # blocks of the current markdown cell
        self.glue: list[list[str]] = []  # [key, value] of the current markdown cell
        rendered = {c["cell_index"] for c in doctree.findall(nodes.container)
                    if c.get("nb_element") == "cell_code"}
        code = [i for i, c in enumerate(self.source.cells) if c.cell_type == "code"]
        self.setup_index = code[0] if code and _is_setup_cell(self.source.cells[code[0]]) else None
        self.pending = [i for i in code if i not in rendered and i != self.setup_index]

    # cells

    def notebook(self) -> dict:
        self.walk_blocks(self.doctree.children, top=True)
        self.flush_pending(None)
        self.end_markdown()
        return self.assemble()

    def end_markdown(self) -> None:
        text = "\n\n".join(block for block in self.md if block.strip()).strip("\n")
        if text:
            cell = {"cell_type": "markdown", "metadata": {}, "source": text}
            if self.glue:
                cell["metadata"][METADATA_KEY] = {"glue": self.glue}
            self.cells.append(cell)
        self.md, self.glue = [], []

    def add_code(self, index: int, title: str | None = None) -> None:
        self.end_markdown()
        if title is None and feeds_prose_only(self.source.cells, index):
            return
        cell = self.source.cells[index]
        source, metadata = cell.source.strip("\n"), {}
        tags = list(cell.metadata.get("tags", []))
        if title is None and any(tag in FOLDED_TAGS for tag in tags):
            title = cell_title(cell.source, tags)
            title = re.sub(r"\beq-[\w-]+", self.equation, title)
        if title:
            source = f"#@title {_shorten(title)}\n{source}"
            metadata["cellView"] = "form"
        if tags:
            metadata["tags"] = tags
        self.cells.append({"cell_type": "code", "execution_count": None, "metadata": metadata,
                           "outputs": [], "source": source})

    def flush_pending(self, before_line: int | None, before_index: int | None = None) -> None:
        """Emit the code cells the page does not show that come before a source line / cell."""
        while self.pending:
            index = self.pending[0]
            due = (before_index is not None and index < before_index) or (
                before_line is not None and bool(self.lines)
                and self.lines[index] < before_line) or (
                before_line is None and before_index is None)
            if not due:
                return
            self.pending.pop(0)
            self.add_code(index)

    # blocks

    def walk_blocks(self, children, top=False, prefix="") -> None:
        for child in children:
            if top and not isinstance(child, (nodes.section, nodes.target)):
                line = _line(child)
                if line is not None and not (isinstance(child, nodes.container)
                                             and child.get("nb_element") == "cell_code"):
                    self.flush_pending(line)
            self.block(child, prefix)

    def block(self, node, prefix="") -> None:
        if isinstance(node, nodes.section):
            self.end_markdown()
            self.walk_blocks(node.children, top=True, prefix=prefix)
        elif isinstance(node, nodes.title):
            level = min(sum(1 for p in _ancestors(node) if isinstance(p, nodes.section)), 6)
            self.end_markdown()
            self.md.append("#" * max(level, 1) + " " + self.secnumber(node) + self.inline(node))
        elif isinstance(node, nodes.container) and node.get("nb_element") == "cell_code":
            self.code_cell(node)
        elif isinstance(node, nodes.paragraph):
            self.md.append(self.inline(node))
        elif isinstance(node, (nodes.target, nodes.comment, nodes.substitution_definition,
                               addnodes.index, nodes.meta, addnodes.toctree)):
            return
        elif isinstance(node, nodes.math_block):
            self.md.append(self.display_math(node))
        elif isinstance(node, nodes.bullet_list):
            self.md.append("\n".join(self.list_items(node, lambda i: "- ")))
        elif isinstance(node, nodes.enumerated_list):
            start = node.get("start", 1)
            self.md.append("\n".join(self.list_items(node, lambda i: f"{start + i}. ")))
        elif isinstance(node, nodes.definition_list):
            items = []
            for item in node.children:
                term = "".join(self.inline(t) for t in item.children if isinstance(t, nodes.term))
                body = [self.sub_markdown(d.children) for d in item.children
                        if isinstance(d, nodes.definition)]
                items.append(f"**{term}**  \n" + "\n\n".join(body))
            self.md.append("\n\n".join(items))
        elif isinstance(node, nodes.literal_block):
            language = node.get("language", "")
            language = "" if language in ("default", "none") else language
            self.md.append(f"```{language}\n{node.astext()}\n```")
        elif isinstance(node, nodes.table):
            self.md.append(self.table(node))
        elif isinstance(node, nodes.figure):
            self.md.append(self.figure(node))
        elif isinstance(node, nodes.image):
            self.md.append(self.image(node))
        elif isinstance(node, nodes.block_quote):
            self.md.append(_quote(self.sub_markdown(node.children)))
        elif type(node).__name__ in ("exercise_enumerable_node", "exercise_node"):
            self.exercise(node)
        elif type(node).__name__ == "solution_node":
            self.solution(node)
        elif isinstance(node, nodes.Admonition):
            self.admonition(node)
        elif isinstance(node, nodes.rubric):
            self.md.append(f"**{self.inline(node)}**")
        elif isinstance(node, nodes.transition):
            self.md.append("---")
        elif isinstance(node, nodes.raw):
            # Raw HTML of the page's own (scripts of the theme's extensions) has no place here.
            if "html" in node.get("format", "").split() and "<script" not in node.astext():
                self.md.append(node.astext())
        elif isinstance(node, (nodes.container, nodes.compound)) and not node.children:
            return
        elif isinstance(node, nodes.citation):  # a bibliography on a chapter
            label = next((c for c in node.children if isinstance(c, nodes.label)), None)
            body = self.sub_markdown([c for c in node.children if c is not label])
            self.md.append((f"[{self.inline(label)}] " if label is not None else "") + body)
        elif isinstance(node, nodes.TextElement):
            self.md.append(self.inline(node))
        elif isinstance(node, nodes.Text):
            self.md.append(_escape(node.astext()))
        elif isinstance(node, (nodes.container, nodes.compound, nodes.Element)) and node.children:
            self.walk_blocks(node.children, prefix=prefix)
        else:
            logger.warning(f"colab: no Markdown for {type(node).__name__} in {self.docname}",
                           location=node)

    def sub_markdown(self, children) -> str:
        """Markdown of block children, as one string (code cells are not allowed inside)."""
        saved, self.md = self.md, []
        for child in children:
            self.block(child)
        text, self.md = "\n\n".join(b for b in self.md if b.strip()), saved
        return text

    def list_items(self, node, marker):
        lines = []
        for i, item in enumerate(c for c in node.children if isinstance(c, nodes.list_item)):
            head = marker(i)
            body = self.sub_markdown(item.children)
            pad = " " * len(head)
            lines.append(head + body.replace("\n", "\n" + pad).replace("\n" + pad + "\n",
                                                                         "\n\n"))
        return lines

    def secnumber(self, title) -> str:
        section = title.parent
        if not isinstance(section, nodes.section) or not self.secnumbers:
            return ""
        anchor = "" if section.parent is self.doctree else "#" + section["ids"][0]
        number = self.secnumbers.get(anchor)
        suffix = getattr(self.config, "html_secnumber_suffix", ". ")
        return ".".join(map(str, number)) + suffix if number else ""

    def equation(self, match) -> str:
        """``eq-label`` as the page writes it (``Eq. 6.3``); unchanged if it is no label."""
        label = match.group(0)
        found = self.env.get_domain("math").equations.get(label)
        if not found:
            return label
        number = self.env.toc_fignumbers.get(found[0], {}).get("displaymath", {}).get(
            f"equation-{label}")
        number = ".".join(map(str, number)) if number else str(found[1])
        return self.config.math_eqref_format.format(number=number)

    def number(self, figtype: str, node) -> str:
        ids = node.get("ids") or [node.get("label", "")]
        for ident in ids:
            number = self.fignumbers.get(figtype, {}).get(ident)
            if number:
                return ".".join(map(str, number))
        return ""

    def display_math(self, node) -> str:
        body = node.astext().strip()
        if not node.get("nowrap"):
            parts = [part for part in body.split("\n\n") if part.strip()]
            if len(parts) > 1:
                body = ("\\begin{aligned}" + "\\\\\n".join(parts) + "\\end{aligned}")
            elif "\\\\" in body or "&" in body:
                body = "\\begin{split}" + body + "\\end{split}"
        number = self.number("displaymath", node) if node.get("ids") else ""
        tag = f" \\tag{{{number}}}" if number else ""
        return f"$$\n{body}{tag}\n$$"

    def code_cell(self, container) -> None:
        index = container["cell_index"]
        self.flush_pending(None, before_index=index)
        if index == self.setup_index:
            return
        figure = next(container.findall(nodes.figure), None)
        title = None
        if self.in_solution(container):
            title = f"Solution to {self.solution_label(container)}"
        self.add_code(index, title=title)
        if figure is not None:
            self.md.append(self.figure_caption(figure))
            self.end_markdown()

    def in_solution(self, node) -> bool:
        return any(type(p).__name__ == "solution_node" for p in _ancestors(node))

    def solution_label(self, node) -> str:
        solution = next(p for p in _ancestors(node) if type(p).__name__ == "solution_node")
        return self.exercise_label(solution.get("target_label", ""))

    def exercise_label(self, label: str) -> str:
        registry = getattr(self.env, "sphinx_exercise_registry", {})
        target = registry.get(label, {})
        node = target.get("node")
        docname = target.get("docname", self.docname)
        number = self.env.toc_fignumbers.get(docname, {}).get("exercise", {}).get(label)
        if number and node is not None:
            text = self.config.numfig_format["exercise"] % ".".join(map(str, number))
        else:
            text = "Exercise"
        return text

    def figure_caption(self, figure) -> str:
        figtype = "table" if type(figure).__name__ == "table_output" else "figure"
        number = self.number(figtype, figure)
        default = "Table" if figtype == "table" else "Figure"
        label = (self.config.numfig_format[figtype] % number) if number else default
        caption = next(figure.findall(nodes.caption), None)
        text = self.inline(caption) if caption is not None else ""
        return f"**{label}.** {text}".rstrip()

    def figure(self, node) -> str:
        images = [self.image(image) for image in node.findall(nodes.image)]
        return "\n\n".join(images + [self.figure_caption(node)])

    def image(self, node) -> str:
        uri = node.get("uri", "")
        if not re.match(r"https?://", uri):
            uri = f"{self.builder.site}_images/{Path(uri).name}"
        return f"![{_escape(node.get('alt', ''))}]({uri})"

    def table(self, node) -> str:
        rows = []
        for row in node.findall(nodes.row):
            cells = []
            for entry in row.children:
                text = self.sub_markdown(entry.children).replace("\n\n", "<br>")
                cells.append(text.replace("\n", " ").replace("|", "\\|"))
            rows.append("| " + " | ".join(cells) + " |")
        if not rows:
            return ""
        width = rows[0].count(" | ") + 1
        body = "\n".join([rows[0], "|" + "---|" * width, *rows[1:]])
        title = next((c for c in node.children if isinstance(c, nodes.title)), None)
        if title is None:
            return body
        number = self.number("table", node)
        label = (self.config.numfig_format["table"] % number) if number else "Table"
        return f"**{label}.** {self.inline(title)}\n\n{body}"

    def admonition(self, node) -> None:
        title = next((c for c in node.children if isinstance(c, nodes.title)), None)
        name = self.inline(title) if title is not None else type(node).__name__.capitalize()
        body = [c for c in node.children if not isinstance(c, nodes.title)]
        self.md.append(_quote(f"**{name}**\n\n" + self.sub_markdown(body)))

    def exercise(self, node) -> None:
        title = next((c for c in node.children if isinstance(c, nodes.title)), None)
        label = self.exercise_label(node.get("label", ""))
        extra = self.inline(title).strip() if title is not None else ""
        extra = re.sub(r"^Exercise( %s)?\s*", "", extra)
        self.end_markdown()
        self.md.append(f"**{label}** {extra}".rstrip())
        self.walk_blocks(_body(node))
        self.end_markdown()

    def solution(self, node) -> None:
        """A solution folds like the page's dropdown: its prose in ``<details>`` blocks, its
        code in form cells titled after it."""
        label = "Solution to " + self.exercise_label(node.get("target_label", ""))
        self.end_markdown()
        opened, parts = False, 0
        for child in _body(node):
            is_code = isinstance(child, nodes.container) and child.get("nb_element") == "cell_code"
            if is_code or any(c.get("nb_element") == "cell_code"
                              for c in child.findall(nodes.container)):
                if opened:
                    self.md.append("</details>")
                    opened = False
                self.block(child)
                parts += 1
                continue
            if not opened:
                more = " (continued)" if parts else ""
                self.md.append(f"<details>\n<summary>{label}{more}</summary>")
                opened = True
                parts += 1
            self.block(child)
        if opened:
            self.md.append("</details>")
        self.end_markdown()

    # inline

    def inline(self, node) -> str:
        if node is None:
            return ""
        out = []
        for child in node.children:
            out.append(self.inline_node(child))
        return "".join(out)

    def inline_node(self, node) -> str:
        if isinstance(node, nodes.Text):
            return _escape(node.astext())
        if isinstance(node, nodes.inline) and "pasted-text" in node.get("classes", []):
            key = node.get("glue_key")
            if not key:
                raise ValueError(f"{self.docname}: a glued value without its key "
                                 "(is booktools.colab loaded as an extension?)")
            self.glue.append([key, node.astext()])
            return f"{OPEN}{key}{CLOSE}"
        if isinstance(node, nodes.math):
            return f"${node.astext().strip()}$"
        if isinstance(node, (nodes.literal, addnodes.literal_emphasis)) and not node.children[1:]:
            text = node.astext()
            fence = "``" if "`" in text else "`"
            return f"{fence}{text}{fence}"
        if isinstance(node, nodes.strong):
            return f"**{self.inline(node)}**"
        if isinstance(node, nodes.emphasis):
            return f"*{self.inline(node)}*"
        if isinstance(node, nodes.reference):
            text = self.inline(node)
            url = node.get("refuri") or (f"{self.builder.get_target_uri(self.docname)}"
                                         f"#{node['refid']}" if node.get("refid") else "")
            return f"[{text}]({url})" if url else text
        if isinstance(node, (nodes.footnote_reference, nodes.citation_reference)):
            return f"[{self.inline(node)}]"
        if isinstance(node, nodes.image):
            return self.image(node)
        if isinstance(node, nodes.subscript):
            return f"<sub>{self.inline(node)}</sub>"
        if isinstance(node, nodes.superscript):
            return f"<sup>{self.inline(node)}</sup>"
        if isinstance(node, nodes.raw):
            return node.astext() if "html" in node.get("format", "") else ""
        if isinstance(node, (nodes.target, nodes.substitution_definition, addnodes.index)):
            return ""
        if isinstance(node, (addnodes.pending_xref, nodes.problematic)):
            logger.warning(f"colab: unresolved reference {node.astext()!r} in {self.docname}",
                           location=node)
            return _escape(node.astext())
        if isinstance(node, nodes.Element):
            return self.inline(node)
        return _escape(node.astext())

    # the notebook

    def assemble(self) -> dict:
        from booktools import repository

        url, branch = repository(ROOT)
        cells = [code_cell(install_source(url, install_ref(ROOT, branch))),
                 markdown_cell(self.settings_text()),
                 code_cell(self.settings_source(), form=True)]
        cells += self.cells
        for number, cell in enumerate(cells):
            cell["id"] = f"c{number:03d}"
        title = self.env.titles[self.docname].astext()
        metadata = {
            "colab": {"name": self.path.stem + ".ipynb", "provenance": [], "toc_visible": True},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            METADATA_KEY: {"page": f"{self.builder.site}{self.docname}.html", "title": title,
                           "generated_by": "booktools.colab (make colab-notebooks)"},
        }
        return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}

    def settings_text(self) -> str:
        return settings_text(self.docname, self.path.read_text(), self.builder.site)

    def settings_source(self) -> str:
        tail = ""
        if self.setup_index is not None:
            tail = page_setup_lines(self.source.cells[self.setup_index].source)
        lines = ["#@title Settings: the profile this notebook runs",
                 f'PROFILE = "{PUBLISHED_PROFILE}"  #@param {json.dumps(profile_names())}',
                 "import os", "", 'os.environ["DDPM_PROFILE"] = PROFILE']
        if tail:
            lines += ["", tail]
        return "\n".join(lines)


def _shorten(title: str) -> str:
    """A form title within :data:`TITLE_WIDTH` characters, cut at a word."""
    title = " ".join(title.split())
    if len(title) <= TITLE_WIDTH:
        return title
    return title[:TITLE_WIDTH - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."


def _ancestors(node):
    node = node.parent
    while node is not None:
        yield node
        node = node.parent


def _body(node) -> list:
    """An exercise's or solution's content: its children but the title, with the section
    sphinx-exercise wraps the content in unwrapped."""
    body = []
    for child in node.children:
        if isinstance(child, nodes.title):
            continue
        if isinstance(child, nodes.section) and not any(
                isinstance(c, nodes.title) for c in child.children):
            body.extend(child.children)
        else:
            body.append(child)
    return body


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def _is_setup_cell(cell) -> bool:
    from booktools import COLAB_MARKER

    return cell.cell_type == "code" and cell.source.startswith(COLAB_MARKER)


def page_setup_lines(source: str) -> str:
    """The page's first cell without its (Colab-only) install part: what follows the
    ``if "google.colab" in sys.modules:`` block, with ``# noqa`` comments dropped."""
    tree = ast.parse(source)
    lines = source.splitlines()
    end = 0
    for statement in tree.body:
        if isinstance(statement, ast.If) and "google.colab" in ast.unparse(statement.test):
            end = statement.end_lineno
    tail = [re.sub(r"\s+# noqa: \w+$", "", line) for line in lines[end:]]
    while tail and not tail[0].strip():
        tail.pop(0)
    return "\n".join(tail)


def feeds_prose_only(cells, index: int) -> bool:
    """Whether code cell ``index`` of a page's ``cells`` (jupytext or myst-nb cells) is one the
    page removes whose work only reaches the page's prose (``glue``): it defines or changes
    nothing a later cell reads, checks and shows nothing, and draws no random numbers. The Colab
    edition, whose text already holds those numbers, leaves it out."""
    cell = cells[index]
    if "remove-cell" not in cell.metadata.get("tags", []):
        return False
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return False
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    if "glue" not in calls or calls & {"check", "check.claim", "print", "display"}:
        return False
    if re.search(r"\brng\b|\brandom\b|\bseed\s*=", cell.source):
        return False
    comprehensions = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
    local = {id(n) for c in ast.walk(tree) if isinstance(c, comprehensions)
             for g in c.generators for n in ast.walk(g.target)}  # a comprehension's own names
    touched = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
               and isinstance(n.ctx, (ast.Store, ast.Del)) and id(n) not in local}
    touched |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    touched |= {(alias.asname or alias.name).split(".")[0] for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for alias in n.names}
    touched |= {n.func.value.id for n in ast.walk(tree) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
                and n.func.attr in ("append", "extend", "update", "insert", "pop", "setdefault")}
    later = set()
    for other in cells[index + 1:]:
        if other.cell_type == "code":
            later |= set(re.findall(r"[A-Za-z_]\w*", other.source))
    return not touched & later


def cell_title(source: str, tags=()) -> str:
    """A form title for a folded cell: its first comment, what it checks, or what it does."""
    lines = [line.strip() for line in source.strip().splitlines()]
    comment = []
    for line in lines:  # a leading comment, however many lines it spans: its first sentence
        if not line.startswith("#") or line.startswith("#@"):
            break
        comment.append(line.lstrip("# "))
    if comment:  # the first sentence; "Eq." and "Fig." do not end one
        return re.split(r"(?<!Eq\.)(?<!Fig\.)(?<=[.:;])\s", " ".join(comment),
                        maxsplit=1)[0].rstrip(".:;")
    if "check.table()" in source:
        return "All checks of this chapter"
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "Supporting code"
    checks = [node.args[0].value for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
              and ast.unparse(node.func) in ("check", "check.claim") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]
    if checks:
        more = f" (and {len(checks) - 1} more)" if len(checks) > 1 else ""
        return f"Check: {' '.join(checks[0].split())}{more}"
    if tree.body and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body[:2]):
        return "Imports and set-up"
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    if "glue" in calls:
        return "Numbers for the text"
    if any(c.endswith(("subplots", "figure", "show_image_grid", "imshow", "plot")) for c in calls):
        return "Code of the figure"
    if "remove-input" in tags or "hide-input" in tags:
        return "Code of the output below"
    return "Supporting code"


# --- the settings text ------------------------------------------------------------------------


def profile_names() -> list[str]:
    """The package's profiles, the small ones first (``ddpm_helpers.profiles.PROFILES``)."""
    from ddpm_helpers.profiles import PROFILES

    return list(PROFILES)


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    minutes = max(1, round(seconds / 60))
    return "about a minute" if minutes == 1 else f"about {minutes} minutes"


def chapter_costs() -> dict:
    """Per chapter, from the latest ``make bench-book`` record: its seconds on the 2-core CPU and
    what it trained; and how long training the shared model took."""
    records = sorted((ROOT / "benchmarks" / "results").glob("book-*.json"))
    if not records:
        return {}
    record = json.loads(records[-1].read_text())
    chapters = record.get("chapters", {})
    # the chapter that trained the shared model took about as long as training it
    shared = max((c["seconds"] for c in chapters.values()
                  if PUBLISHED_PROFILE in c.get("trained_runs", [])), default=None)
    return {"chapters": chapters, "shared_seconds": shared, "date": record.get("date", "")[:10]}


# How the settings cell describes each profile to a reader.
PROFILE_WORDS = {
    "smoke": "a tiny model that only checks that every cell runs (its results mean nothing)",
    "default": "8x8 handwritten digits and a small U-Net, sized for a CPU",
    "celeba": ("the original CelebA tutorial's 32x32 colour faces and full U-Net; it needs a GPU "
               "runtime and the CelebA images, prepared as the chapter \"Scaling up\" shows "
               "(without them, the first cell that loads data stops and says what to do)"),
}


def settings_text(docname: str, text: str, site: str) -> str:
    from ddpm_helpers import get_profile

    name = Path(docname).name
    costs = chapter_costs()
    chapter = costs.get("chapters", {}).get(name, {})
    trains = []
    uses_shared = re.search(r"load_or_train\(\s*profile\s*\)", text) is not None
    if uses_shared:
        trains.append("the book's shared model (once per runtime: later chapters in the same "
                      "runtime load it from `runs/`)")
    if re.search(r"load_or_train\(\s*\n?\s*profile\.replace|cond_run = training\.load_or_train",
                 text):
        trains.append("a class-conditional model, started from the shared one")
    if "train_toy(" in text:
        trains.append("small models on two-dimensional data")
    if "train_flow(" in text:
        trains.append("a velocity network by flow matching, started from the shared model")
    if "load_or_train_classifier(" in text:
        trains.append("a small classifier of digits")
    if re.search(r"def train_step\(", text):
        trains.append("the small network of this page, with its own loop")
    if not trains and "training.train(" in text:
        trains.append("short demonstration runs of a few steps")
    seconds = chapter.get("seconds")
    if (seconds is not None and uses_shared
            and PUBLISHED_PROFILE not in chapter.get("trained_runs", [])):
        seconds += costs.get("shared_seconds") or 0
    parts = [
        "## Settings",
        (f"This is the Colab edition of [the page]({site}{docname}.html), generated from it. "
         f"It runs the **`{PUBLISHED_PROFILE}`** profile, as the published book does: "
         f"{PROFILE_WORDS[PUBLISHED_PROFILE]}. The numbers in the text are the published "
         "book's: with another profile, what the cells print will differ from them."),
        ("This chapter trains " + "; ".join(trains) + "." if trains
         else "This chapter trains no model."),
    ]
    if seconds is not None:
        parts.append(
            f"With `{PUBLISHED_PROFILE}` it takes {_minutes(seconds)} on a 2-core CPU such as "
            f"Colab's CPU runtime (measured for the book on {costs['date']}"
            + (", training included" if trains else "") + "). A GPU runtime was not measured; "
            "the models are small enough that it is not needed.")
    others = "; ".join(f"`{name}`, {PROFILE_WORDS.get(name, get_profile(name).description)}"
                       for name in profile_names() if name != PUBLISHED_PROFILE)
    parts.append(
        "To change the profile, pick it in the cell below and run the notebook from there "
        f"(Runtime, Run all). The others: {others}.")
    from booktools import COLAB_TPU_TENSORFLOW

    parts.append(
        "On a TPU runtime, which comes without TensorFlow, install TensorFlow's TPU build "
        f"first (`%pip install -q {COLAB_TPU_TENSORFLOW}`), then run the install cell above "
        "with `--no-deps` added, so that pip does not add the CPU build.")
    return "\n\n".join(parts)


def code_cell(source: str, form: bool = False) -> dict:
    return {"cell_type": "code", "execution_count": None,
            "metadata": {"cellView": "form"} if form else {}, "outputs": [], "source": source}


def markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


# --- glue values, writing, drift --------------------------------------------------------------


def dumps(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def fill(notebook: dict) -> dict:
    """The notebook with every glue placeholder replaced by the value in its cell's metadata."""
    notebook = json.loads(json.dumps(notebook))
    for cell in notebook["cells"]:
        values = cell.get("metadata", {}).get(METADATA_KEY, {}).get("glue", [])
        keys = PLACEHOLDER.findall(cell["source"])
        if keys != [key for key, _ in values]:
            raise ValueError(f"cell {cell.get('id')}: glue keys {keys} but values for "
                             f"{[key for key, _ in values]}")
        filled = iter([value for _, value in values])
        cell["source"] = PLACEHOLDER.sub(lambda _match, v=filled: next(v), cell["source"])
    return notebook


def keep_values(notebook: dict, committed: dict) -> dict:
    """``notebook`` (from any build) with the glued values of ``committed`` (the published ones),
    by key; fails on a key the committed notebook does not have."""
    known = {key: value for cell in committed["cells"]
             for key, value in cell.get("metadata", {}).get(METADATA_KEY, {}).get("glue", [])}
    notebook = json.loads(json.dumps(notebook))
    for cell in notebook["cells"]:
        glue = cell.get("metadata", {}).get(METADATA_KEY, {}).get("glue", [])
        missing = [key for key, _ in glue if key not in known]
        if missing:
            raise ValueError(f"glued keys {missing} have no published value yet: run make "
                             "colab-notebooks after make book (the default build)")
        for pair in glue:
            pair[1] = known[pair[0]]
    return notebook


def write(built: Path, out: Path, keep: bool = False) -> list[Path]:
    """Fill the builder's notebooks in ``built`` with their values and write them to ``out``
    (removing notebooks there that no chapter makes any more). ``keep``: fill them with the
    values the notebooks in ``out`` already have instead (after a build of another profile,
    e.g. make test's smoke build, when only text or code changed)."""
    ready = {}  # every notebook is filled before any is written: a failure writes nothing
    for path in sorted(built.glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        if keep:
            if not (out / path.name).exists():
                raise ValueError(f"{out / path.name}: no published values to keep")
            notebook = keep_values(notebook, json.loads((out / path.name).read_text()))
        ready[path.name] = dumps(fill(notebook))
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ready.items():
        (out / name).write_text(text)
    for stale in out.glob("*.ipynb"):
        if stale.name not in ready:
            stale.unlink()
    return [out / name for name in ready]


def drift(built: Path, committed: Path) -> list[str]:
    """How the committed notebooks differ from freshly built ones, glue values aside: the fresh
    placeholders are filled with the committed values (same keys, same order required)."""
    problems = []
    fresh_names = {p.name for p in built.glob("*.ipynb")}
    committed_names = {p.name for p in committed.glob("*.ipynb")}
    for name in sorted(fresh_names - committed_names):
        problems.append(f"{name}: not in {committed}; run make colab-notebooks")
    for name in sorted(committed_names - fresh_names):
        problems.append(f"{committed / name}: no chapter makes it any more")
    for name in sorted(fresh_names & committed_names):
        fresh = json.loads((built / name).read_text())
        old = json.loads((committed / name).read_text())
        # The install cell pins the commit each was built from: that may differ, nothing else.
        old_ref = installed_ref(old["cells"][0]["source"]) if old["cells"] else None
        if fresh["cells"] and old_ref is not None:
            fresh["cells"][0]["source"] = INSTALLED_REF.sub(
                lambda m: m.group(1) + old_ref + m.group(3), fresh["cells"][0]["source"])
        if len(fresh["cells"]) != len(old["cells"]):
            problems.append(f"{name}: {len(old['cells'])} cells, a fresh build has "
                            f"{len(fresh['cells'])}; run make colab-notebooks")
            continue
        for new_cell, old_cell in zip(fresh["cells"], old["cells"]):
            new_glue = new_cell.get("metadata", {}).get(METADATA_KEY, {}).get("glue")
            old_glue = old_cell.get("metadata", {}).get(METADATA_KEY, {}).get("glue")
            if new_glue:
                if [k for k, _ in new_glue] != [k for k, _ in old_glue or []]:
                    problems.append(f"{name} cell {old_cell.get('id')}: glued keys differ")
                    break
                new_cell["metadata"][METADATA_KEY]["glue"] = old_glue
        try:
            refilled = fill(fresh)
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        if refilled != old:
            for new_cell, old_cell in zip(refilled["cells"], old["cells"]):
                if new_cell != old_cell:
                    problems.append(f"{name} cell {old_cell.get('id')} differs from a fresh "
                                    f"build: {_first_difference(new_cell, old_cell)}; run make "
                                    "colab-notebooks")
                    break
            else:
                problems.append(f"{name}: notebook metadata differs; run make colab-notebooks")
    return problems


def _first_difference(new: dict, old: dict) -> str:
    a, b = json.dumps(new, sort_keys=True), json.dumps(old, sort_keys=True)
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    start = max(0, at - 40)
    return f"fresh ...{a[start:at + 40]!r}... vs committed ...{b[start:at + 40]!r}..."


# --- what a Colab notebook must not contain --------------------------------------------------


MYST_LEFT = [
    ("a MyST role", re.compile(r"\{[a-z][\w:-]*\}`")),
    ("a directive fence", re.compile(r"^\s*(```|~~~)\s*\{", re.MULTILINE)),
    ("a colon fence", re.compile(r"^\s*:::", re.MULTILINE)),
    ("a MyST target", re.compile(r"^\s*\([\w.:-]+\)=\s*$", re.MULTILINE)),
    ("a directive option", re.compile(r"^\s*:(label|name|class|tags|caption):", re.MULTILINE)),
    ("a glue placeholder", re.compile(f"[{OPEN}{CLOSE}]")),
]


def lint(notebook: dict, source_md: Path | None = None) -> list[str]:
    """What is wrong with one Colab notebook: MyST syntax left in its Markdown, a first cell
    that is not a short install, no settings cell, a cell the page folds that is not a form."""
    problems = []
    cells = notebook["cells"]
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for what, pattern in MYST_LEFT:
            found = pattern.search(cell["source"])
            if found:
                problems.append(f"cell {index}: {what} left in the Markdown: "
                                f"{cell['source'][max(0, found.start() - 30):found.end() + 30]!r}")
    first = cells[0] if cells else {"cell_type": "", "source": ""}
    lines = [line for line in first["source"].splitlines() if line.strip()]
    if first["cell_type"] != "code" or not 1 <= len(lines) <= 2 or not any(
            line.startswith("%pip install") for line in lines):
        problems.append("cell 0 is not one or two lines that %pip install the package")
    if not any(c["cell_type"] == "code" and "#@param" in c["source"]
               and "DDPM_PROFILE" in c["source"] for c in cells[:4]):
        problems.append("no settings cell (PROFILE #@param, DDPM_PROFILE) near the top")
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        folded = cell["source"].startswith("#@title ") and cell["metadata"].get(
            "cellView") == "form"
        if any(tag in FOLDED_TAGS for tag in tags) and not folded:
            problems.append(f"cell {index}: the page folds it ({tags}) but it is not a form cell")
    if source_md is not None:
        import jupytext

        page = jupytext.read(source_md)
        page_code = [c.source.strip() for i, c in enumerate(page.cells)
                     if c.cell_type == "code" and not _is_setup_cell(c)
                     and not feeds_prose_only(page.cells, i)]
        ours = [_strip_title(c["source"]).strip() for c in cells[3:] if c["cell_type"] == "code"]
        if ours != page_code:
            problems.append(f"its code cells are not the page's ({len(ours)} vs "
                            f"{len(page_code)} cells, or in another order)")
        page_folded = [any(t in FOLDED_TAGS for t in c.metadata.get("tags", []))
                       for c in page.cells if c.cell_type == "code" and not _is_setup_cell(c)]
        our_folded = [c["metadata"].get("cellView") == "form" for c in cells[3:]
                      if c["cell_type"] == "code"]
        if len(our_folded) == len(page_folded) and any(
                p and not o for p, o in zip(page_folded, our_folded)):
            problems.append("a cell the page folds is not folded")
    return problems


INSTALL_URL = re.compile(r'(%pip install -q ")ddpm_helpers @ [^"]+(")')
PROFILE_LINE = re.compile(r'^(PROFILE = )"\w+"', re.MULTILINE)


def localize(folder: Path, package: str, profile: str) -> list[Path]:
    """For ``make colab-check``: the notebooks in ``folder`` install the package from
    ``package`` (a ``file://`` URL of this checkout) and run ``profile``, changed in their
    install and settings cells only; fails if a notebook has no such cells."""
    changed = []
    for path in sorted(folder.glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        install, settings = notebook["cells"][0], notebook["cells"][2]
        install["source"], found = INSTALL_URL.subn(rf'\g<1>ddpm_helpers @ {package}\g<2>',
                                                    install["source"])
        settings["source"], set_profile = PROFILE_LINE.subn(rf'\g<1>"{profile}"',
                                                            settings["source"])
        if not (found and set_profile):
            raise ValueError(f"{path}: no install line or no PROFILE line to change")
        path.write_text(dumps(notebook))
        changed.append(path)
    return changed


def _strip_title(source: str) -> str:
    return source.split("\n", 1)[1] if source.startswith("#@title ") else source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m booktools.colab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("write", "check"):
        command = sub.add_parser(name)
        command.add_argument("built", type=Path, help="the colab builder's output folder")
        command.add_argument("notebooks", type=Path, help="the committed notebooks (book/colab)")
        if name == "write":
            command.add_argument("--keep-values", action="store_true",
                                 help="keep the glued values the notebooks have (the published "
                                      "ones) instead of this build's")
    command = sub.add_parser("lint")
    command.add_argument("notebooks", type=Path)
    command = sub.add_parser("localize", help="make colab-check: install from a local copy")
    command.add_argument("notebooks", type=Path)
    command.add_argument("--package", required=True, help="e.g. file:///path/to/a/copy")
    command.add_argument("--profile", required=True)
    args = parser.parse_args(argv)
    if args.command == "localize":
        changed = localize(args.notebooks, args.package, args.profile)
        print(f"{len(changed)} notebooks install {args.package} and run {args.profile}")
        return 0
    if args.command == "write":
        written = write(args.built, args.notebooks, keep=args.keep_values)
        problems = [f"{p}: {m}" for p in written for m in lint(
            json.loads(p.read_text()), ROOT / "book" / (p.stem + ".md"))]
        print(f"wrote {len(written)} Colab notebooks to {args.notebooks}")
    elif args.command == "check":
        if not any(args.built.glob("*.ipynb")):
            print(f"colab check: no notebooks in {args.built} (did the colab builder run?)",
                  file=sys.stderr)
            return 1
        problems = drift(args.built, args.notebooks)
        if not problems:
            print(f"{len(list(args.notebooks.glob('*.ipynb')))} Colab notebooks agree with a "
                  "fresh build (glued values aside)")
    else:
        problems = [f"{p}: {m}" for p in sorted(args.notebooks.glob("*.ipynb")) for m in lint(
            json.loads(p.read_text()), ROOT / "book" / (p.stem + ".md"))]
    for problem in problems:
        print(f"COLAB: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

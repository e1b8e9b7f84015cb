"""Tables computed by a code cell, numbered per chapter like figures (Table 8.2).

myst-nb wraps a cell's outputs in a figure when the cell's metadata asks for one (``mystnb:
figure: caption/name``), and Sphinx would number it as a figure. A cell whose output is a table
adds ``classes: book-table`` (and ``caption_before: true``, the caption above the table, as
tables have it). This extension, loaded by ``_config.yml`` (``sphinx.local_extensions``), turns
such a figure into a ``table_output`` node that Sphinx numbers as a *table*: its caption reads
"Table 8.2", and ``{numref}`` to its name gives the same number. In HTML it renders as the
figure did.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform

CLASS = "book-table"


class table_output(nodes.figure):  # noqa: N801 (docutils names node classes in lower case)
    """A code cell's table output with its numbered caption."""


class TableOutputs(SphinxTransform):
    """Figures of class ``book-table`` become ``table_output`` nodes (before labels are
    collected, so that ``{numref}`` finds a table)."""

    default_priority = 500

    def apply(self, **kwargs) -> None:
        for figure in list(self.document.findall(nodes.figure)):
            if CLASS not in figure.get("classes", []) or isinstance(figure, table_output):
                continue
            table = table_output(figure.rawsource, *figure.children, **figure.attributes)
            figure.replace_self(table)
            for ident in table["ids"]:
                self.document.ids[ident] = table


def caption_text(node) -> str:
    caption = next(node.findall(nodes.caption), None)
    return caption.astext() if caption is not None else ""


def visit_table_output(self, node) -> None:
    self.visit_figure(node)


def depart_table_output(self, node) -> None:
    self.depart_figure(node)


def setup(app):
    app.add_enumerable_node(table_output, "table", caption_text,
                            html=(visit_table_output, depart_table_output))
    app.add_transform(TableOutputs)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

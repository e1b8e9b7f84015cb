"""The Build status page (book/status.md, ``{nb-exec-table}``) in words that every browser shows.

myst-nb marks each executed page with the emoji U+2705 or U+274C, which render as empty boxes
where no colour-emoji font is installed (Chromium on a plain Linux, for one). This post-transform,
loaded by ``_config.yml`` (``sphinx.local_extensions``), runs after myst-nb has built the table
and writes "passed" or "failed" instead (a failed page keeps its error as the tooltip).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform

WORDS = {"\u2705": "passed", "\u274c": "failed"}


def is_exec_table(table: nodes.table) -> bool:
    head = table.next_node(nodes.thead)
    return head is not None and {"Run Time (s)", "Status"} <= {
        entry.astext() for entry in head.findall(nodes.entry)}


class ExecStatusText(SphinxPostTransform):
    default_priority = 9  # after myst-nb's ExecutionStatsPostTransform (8) makes the table

    def run(self, **kwargs) -> None:
        for table in list(self.document.findall(nodes.table)):
            if not is_exec_table(table):
                continue
            for text in list(table.findall(nodes.Text)):
                if text.astext() in WORDS:
                    text.parent.replace(text, nodes.Text(WORDS[text.astext()]))


def setup(app):
    app.add_post_transform(ExecStatusText)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

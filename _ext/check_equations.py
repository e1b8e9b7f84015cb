"""The equation numbers a reader sees, in the list of checks at the end of each chapter.

``CheckLog.table()`` (``ddpm_helpers.notebook.checks``) runs inside the notebook, before Sphinx
has numbered anything, so its first column holds each check's equation label (``eq-jackknife``).
This extension, loaded by ``_config.yml`` (``sphinx.local_extensions``), replaces every table cell
that holds exactly a known label with the equation's number as the text shows it, linked to the
equation (``Eq. 10.2``), the way the ``{eq}`` role resolves it. Cells with other names (a
sanity check, a claim of the text) are left alone.
"""

from __future__ import annotations

import re

from docutils import nodes

LABEL_CELL = re.compile(r"<td>(eq-[A-Za-z0-9_-]+)</td>")


def equation_link(app, fromdocname: str, label: str) -> str | None:
    """``<a href=...>Eq. 2.3</a>`` (``math_eqref_format``) for a known equation label, else None."""
    domain = app.env.get_domain("math")
    if label not in domain.equations:
        return None
    ref = domain.resolve_xref(app.env, fromdocname, app.builder, "eq", label, None,
                              nodes.Text(""))
    if ref is None:
        return None
    href = ref.get("refuri") or ""
    if ref.get("refid"):
        href += "#" + ref["refid"]
    return f'<a class="reference internal" href="{href}">{ref.astext()}</a>'


def number_check_tables(app, doctree, fromdocname: str) -> None:
    if app.builder.format != "html":
        return
    for raw in list(doctree.findall(nodes.raw)):
        text = raw.astext()
        if "html" not in raw.get("format", "") or "<td>eq-" not in text:
            continue

        def cell(match):
            link = equation_link(app, fromdocname, match.group(1))
            return f"<td>{link}</td>" if link else match.group(0)

        new = LABEL_CELL.sub(cell, text)
        if new != text:
            raw.parent.replace(raw, nodes.raw(new, new, format=raw["format"]))


def setup(app):
    app.connect("doctree-resolved", number_check_tables)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

"""Every figure's image gets an alt text: its caption, where the page gives none.

A figure made by a code cell (``mystnb: figure: {caption, name}``) carries the image of the cell's
output, whose alt text is empty or the file name of the image unless the cell also sets
``mystnb: image: alt``. Screen readers then read a hash. This post-transform, loaded by
``_config.yml`` (``sphinx.local_extensions``), copies the caption into the alt text of every
image in a figure that has none of its own.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform


def needs_alt(image: nodes.image) -> bool:
    """No alt text, or one that is only the image's file name."""
    alt = (image.get("alt") or "").strip()
    uri = image.get("uri", "")
    return not alt or alt == uri or alt.endswith((".png", ".jpg", ".svg", ".gif"))


def fill_alt(figure: nodes.figure) -> int:
    """Give each image of ``figure`` that needs one the caption as alt text; return how many."""
    caption = figure.next_node(nodes.caption)
    if caption is None:
        return 0
    text = " ".join(caption.astext().split())
    filled = 0
    for image in figure.findall(nodes.image):
        if needs_alt(image):
            image["alt"] = text
            filled += 1
    return filled


class FigureAltText(SphinxPostTransform):
    default_priority = 900

    def run(self, **kwargs) -> None:
        for figure in list(self.document.findall(nodes.figure)):
            fill_alt(figure)


def setup(app):
    app.add_post_transform(FigureAltText)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

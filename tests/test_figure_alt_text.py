"""Figures made by code cells get their caption as alt text (``_ext/figure_alt_text.py``)."""

import sys
from pathlib import Path

from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
import figure_alt_text  # noqa: E402


def figure(alt=None):
    image = nodes.image(uri="_build/jupyter_execute/3f9a.png")
    if alt is not None:
        image["alt"] = alt
    return nodes.figure("", image, nodes.caption("", "Samples of the\n  trained model."))


def test_a_figure_without_alt_text_gets_its_caption():
    fig = figure()
    assert figure_alt_text.fill_alt(fig) == 1
    assert fig.next_node(nodes.image)["alt"] == "Samples of the trained model."


def test_a_file_name_is_replaced_but_a_written_alt_text_is_kept():
    named = figure(alt="_build/jupyter_execute/3f9a.png")
    figure_alt_text.fill_alt(named)
    assert named.next_node(nodes.image)["alt"] == "Samples of the trained model."
    written = figure(alt="Eight rows of digits")
    assert figure_alt_text.fill_alt(written) == 0
    assert written.next_node(nodes.image)["alt"] == "Eight rows of digits"

"""Numerical checks that follow the equations of the book, and the table that lists them.

Every formula a chapter states is followed by a cell that compares it with an independent
computation (an exact sum, numerical integration, or Monte Carlo with a fixed seed). A
:class:`CheckLog` asserts each comparison, prints it, and renders all of them as a table at the
end of the chapter, so a reader sees the numbers behind every claim.
"""

from __future__ import annotations

import html
import math

import numpy as np


class CheckLog:
    """Call it as ``check(equation, what, value, bound)`` to assert ``value <= bound``.

    With ``at_least=True`` it asserts ``value >= bound`` instead. A non-finite value always fails.
    """

    def __init__(self):
        self.records: list[tuple[str, str, float, str, float]] = []

    def __call__(self, equation: str, what: str, value, bound: float, at_least: bool = False) -> float:
        value, relation = float(value), (">=" if at_least else "<=")
        passed = math.isfinite(value) and (value >= bound if at_least else value <= bound)
        assert passed, f"{equation}: {what}: {value:.3g} is not {relation} {bound:.3g}"
        self.records.append((equation, what, value, relation, bound))
        print(f"OK  {equation}: {what}: {value:.2e} {relation} {bound:.2e}")
        return value

    def __len__(self) -> int:
        return len(self.records)

    def table(self):
        """Every check so far as an HTML table (equation, what, measured value, pass condition)."""
        symbol = {"<=": "\u2264", ">=": "\u2265"}
        rows = [(eq, what, f"{value:.2e}", f"{symbol[rel]}\u00a0{bound:.2e}")
                for eq, what, value, rel, bound in self.records]
        return html_table(["equation", "what was compared", "measured", "passes if"], rows)


def standard_error(samples) -> float:
    """Standard error of the mean of independent samples (Monte Carlo tolerances use 5 of them)."""
    samples = np.asarray(samples)
    return float(np.std(samples) / math.sqrt(len(samples)))


def html_table(header, rows):
    """A small HTML table that renders the same in the book and in notebooks."""
    from IPython.display import HTML

    def cells(tag, row):
        return "".join(f"<{tag}>{html.escape(str(cell))}</{tag}>" for cell in row)

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return HTML(f"<table><tr>{cells('th', header)}</tr>{body}</table>")

"""Numerical checks that follow the equations of the book, and the list of them.

Every formula a chapter states is followed by a cell that compares it with an independent
computation (an exact sum, numerical integration, or Monte Carlo with a fixed seed). A
:class:`CheckLog` asserts each comparison and records it; the chapter's last cell lists all of
them. Check cells are folded in the rendered page (tag ``hide-cell``, or ``hide-output``), so
the reading path stays a story while every check still runs and asserts in every build.

This is the one check API of the book: chapters do not define their own ``check``.
"""

from __future__ import annotations

import math

import numpy as np

from ddpm_helpers.notebook.pages import html_table  # noqa: F401  (the book's table, re-exported)


class CheckLog:
    """Call it as ``check(equation, what, value, bound)`` to assert ``value <= bound``.

    With ``at_least=True`` it asserts ``value >= bound`` instead. A non-finite value always
    fails. Each call prints one line (inside the folded cell) and returns nothing, so a check
    at the end of a cell never echoes a bare number into the page.
    """

    def __init__(self):
        self.records: list[tuple[str, str, float, str, float]] = []

    def __call__(self, equation: str, what: str, value, bound: float,
                 at_least: bool = False) -> None:
        value, relation = float(value), (">=" if at_least else "<=")
        passed = math.isfinite(value) and (
            value >= bound if at_least else value <= bound)
        assert passed, (
            f"{equation}: {what}: {value:.3g} is not {relation} {bound:.3g}")
        self.records.append((equation, what, value, relation, bound))
        symbol = "\u2264" if relation == "<=" else "\u2265"
        print(f"\u2713 {what}: {value:.2e} {symbol} {bound:.2e}")

    def claim(self, what: str, condition: bool, detail: str = "") -> None:
        """Assert a statement the prose makes about a computed result (e.g. "A beats B").

        Recorded in the list like a numerical check; ``detail`` says what was measured.
        """
        assert bool(condition), (
            f"The text says: {what}; but the build measured: {detail or 'otherwise'}. "
            "Re-read the sentence against this output.")
        self.records.append(("text", what, 1.0, "==", 1.0))
        print(f"\u2713 {what}" + (f" ({detail})" if detail else ""))

    def __len__(self) -> int:
        return len(self.records)

    def table(self):
        """Every check so far as an HTML table (equation, what, measured value, condition). The
        book's build shows each equation label as the equation's number."""
        symbol = {"<=": "\u2264", ">=": "\u2265"}
        rows = []
        for eq, what, value, rel, bound in self.records:
            if rel == "==":
                rows.append(("the text", what, "holds", ""))
            else:
                rows.append((eq, what, f"{value:.2e}", f"{symbol[rel]}\u00a0{bound:.2e}"))
        return html_table(["equation", "what was compared", "measured", "holds if"], rows)


def standard_error(samples) -> float:
    """Standard error of the mean of independent samples (Monte Carlo tolerances use 5)."""
    samples = np.asarray(samples)
    return float(np.std(samples) / math.sqrt(len(samples)))

"""What a chapter shows besides its figures: highlighted source, tables, glued numbers, progress.

One place for the book's display conventions, so every chapter looks the same:

- :func:`show_source` shows a package function as highlighted code, without its docstring
  (the page explains it) and, optionally, only the lines from ``start`` to ``stop``.
- :func:`html_table` renders a small table the same way in the book and in notebooks.
- :func:`glue` hands a computed value to the page's prose (myst-nb ``{glue:text}``), so a sentence
  that states a result is filled from the build; outside a book build (Colab) it is a no-op.
- :class:`ProgressBar` is a Keras progress bar in a notebook or a terminal; in a book build
  (``DDPM_BOOK_BUILD=1``, set by ``make book``) it stays silent and prints one summary line at the
  end, so the rendered page shows no progress-bar remnants or stale ETAs.
"""

from __future__ import annotations

import ast
import html
import inspect
import re
import os
import sys
import textwrap
import time

BOOK_BUILD_ENV_VAR = "DDPM_BOOK_BUILD"


def is_book_build() -> bool:
    """True while ``make book`` / ``make test`` render the pages (``$DDPM_BOOK_BUILD`` is set)."""
    return os.environ.get(BOOK_BUILD_ENV_VAR, "").strip() not in ("", "0")


def on_page() -> bool:
    """True while a page of the book is executed for the site (a book build, in a notebook
    kernel): messages with this machine's paths and timings stay off the page."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return is_book_build() and type(shell).__name__ == "ZMQInteractiveShell"


def source_lines(obj, *, start: str | None = None, stop: str | None = None, until: str | None = None) -> str:
    """The source of ``obj`` without its docstring; from the first line containing ``start``
    (default: the top) to the line containing ``stop`` (included), or up to the line containing
    ``until`` (left out; default: the end)."""
    source = textwrap.dedent(inspect.getsource(obj))
    tree = ast.parse(source)
    node = tree.body[0]
    lines = source.splitlines()
    doc = ast.get_docstring(node, clean=False) if isinstance(
        node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None
    if doc is not None:
        first = node.body[0]
        del lines[first.lineno - 1:first.end_lineno]
    if start is not None:
        found = [i for i, line in enumerate(lines) if start in line]
        if not found:
            raise ValueError(f"show_source: no line of {obj.__qualname__} contains {start!r}.")
        lines = lines[found[0]:]
    if stop is not None:
        found = [i for i, line in enumerate(lines) if stop in line]
        if not found:
            raise ValueError(f"show_source: no line of {obj.__qualname__} contains {stop!r}.")
        lines = lines[:found[0] + 1]
    if until is not None:
        found = [i for i, line in enumerate(lines) if until in line]
        if not found:
            raise ValueError(f"show_source: no line of {obj.__qualname__} contains {until!r}.")
        lines = lines[:found[0]]
    return textwrap.dedent("\n".join(lines)).strip("\n")


def show_source(obj, *, start: str | None = None, stop: str | None = None, until: str | None = None):
    """Display the source of a package function or class as highlighted Python (see
    :func:`source_lines` for ``start``, ``stop`` and ``until``). Returns the ``IPython.display.Code`` object."""
    from IPython.display import Code

    return Code(source_lines(obj, start=start, stop=stop, until=until), language="python")


def html_table(header, rows):
    """A small HTML table that renders the same in the book and in notebooks."""
    from IPython.display import HTML

    def cells(tag, row):
        return "".join(f"<{tag}>{html.escape(str(cell))}</{tag}>" for cell in row)

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return HTML(f"<table><tr>{cells('th', header)}</tr>{body}</table>")


def as_prose_number(text: str) -> str:
    """A number written the way prose writes it: Python's exponent notation (``"2.4e-09"``,
    ``"4e-05"``) becomes ``"2.4 × 10⁻⁹"`` / ``"4 × 10⁻⁵"``; anything else is returned as is."""
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)e([+-]\d+)", text)
    if not match:
        return text
    mantissa, exponent = match.group(1), int(match.group(2))
    if exponent == 0:
        return mantissa
    return f"{mantissa} × 10{str(exponent).translate(_SUPERSCRIPTS)}"


_SUPERSCRIPTS = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def prose_value(value, fmt: str | None = None):
    """What :func:`glue` shows for ``value``: formatted with ``fmt`` if given, and a NumPy scalar
    as the plain Python number it holds (NumPy 2 would print its type around it)."""
    if fmt:
        return as_prose_number(format(value, fmt))
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def glue(name: str, value, fmt: str | None = None) -> None:
    """Make ``value`` available to the page's prose as ``{glue:text}`name```.

    ``fmt`` (e.g. ``".1f"`` or ``".0%"``) formats numbers once, here, so the page writes
    ``{glue:text}`name``` and the number never drifts from the build; an exponent (``".1e"``, or
    ``".2g"`` of a tiny number) reads as ``2.4 × 10⁻⁹`` (:func:`as_prose_number`). Returns
    nothing, so a glue at the end of a cell echoes no value. Outside a myst-nb build (a notebook
    in Colab) nothing is displayed.
    """
    shown = prose_value(value, fmt)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # Colab: myst-nb is not installed, and the prose is not rendered there
        return
    myst_glue(name, shown, display=False)


class ProgressBar:
    """``keras.utils.Progbar`` in notebooks and terminals. In a book build, nothing on the pages
    (a timing line would be the build machine's, not the reader's) and one summary line in a
    terminal (the log of ``make book``).

    ``update(current, values)`` as for a Progbar; ``values`` is a list of ``(name, number)``.
    ``enabled=False`` shows nothing at all.
    """

    def __init__(self, total: int, *, unit: str = "step", label: str | None = None,
                 enabled: bool = True, stateful_metrics=None):
        self.total, self.unit, self.label = int(total), unit, label
        self.enabled, self.quiet = enabled, is_book_build()
        self.began, self.values, self.bar = time.perf_counter(), [], None
        self.stateful_metrics = stateful_metrics
        self.closed = False

    def update(self, current: int, values=None, finalize: bool | None = None):
        """Advance the bar to ``current`` with the ``(name, number)`` pairs ``values``."""
        if not self.enabled or self.closed:
            return
        self.values = list(values or [])
        finalize = current >= self.total if finalize is None else finalize
        if self.quiet:
            if finalize:
                self.close()
            return
        if self.bar is None:
            import keras

            if self.label:
                print(self.label)
            interactive = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
            self.bar = keras.utils.Progbar(self.total, unit_name=self.unit,
                                           interval=0.5 if interactive else 5.0,
                                           stateful_metrics=self.stateful_metrics)
        self.bar.update(current, self.values, finalize=finalize)
        if finalize:
            self.closed = True

    def close(self):
        """In a book build, print the one-line summary (once)."""
        if not self.enabled or self.closed:
            return
        self.closed = True
        if self.quiet and not on_page():  # a terminal: the log of make book
            seconds = time.perf_counter() - self.began
            extra = "".join(f", {name} {value:.4g}" for name, value in self.values)
            label = f"{self.label}: " if self.label else ""
            print(f"{label}{self.total} {self.unit}s in {seconds:.0f} s{extra}")

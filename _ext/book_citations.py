"""Author-year citations for the book: one Sphinx extension, loaded by ``_config.yml``
(``sphinx.local_extensions``), that registers three styles for sphinxcontrib-bibtex and pybtex.

- labels (``pybtex.style.labels``, ``book_author_year``): ``Ho et al., 2020``; when two entries
  would get the same label, the year takes a letter in the order of the list
  (``Song et al., 2021a`` and ``Song et al., 2021b``);
- the list (``pybtex.style.formatting``, ``book_author_year``): sorted by author, year and title,
  each entry ``Ho, J., Jain, A., Abbeel, P. (2020). Denoising diffusion probabilistic
  models. In Advances in ... URL``, the year with the label's letter;
- the text (``sphinxcontrib.bibtex.style.referencing``, ``book_author_year``): ``{cite:t}``
  gives ``Ho et al. (2020)``, ``{cite:p}`` (and ``{cite}``) ``(Ho et al., 2020)``, the year
  again with the label's letter, so that text and list agree.

The list's ``[label]`` column is hidden by ``_static/book.css``: the entry itself starts with
its authors and year.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field as dataclass_field

import pybtex.plugin
from pybtex.richtext import Text
from pybtex.style import FormattedEntry
from pybtex.style.formatting import toplevel
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.formatting.unsrt import pages
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import field, join, names, node, optional, sentence, tag, words
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
from sphinxcontrib.bibtex.style.referencing.basic_author_year import (
    BasicAuthorYearParentheticalReferenceStyle,
    BasicAuthorYearTextualReferenceStyle,
)
from sphinxcontrib.bibtex.style.template import join2, post_text, pre_text, reference

NAME = "book_author_year"


def _last_names(person) -> str:
    return " ".join(Text.from_latex(name).render_as("text") for name in person.last_names)


def author_year_label(entry) -> str:
    """``Ho``, ``Ho and Salimans`` or ``Ho et al.``, a comma and the year (no letter yet)."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    lasts = [_last_names(p) for p in persons]
    if not lasts:
        who = Text.from_latex(entry.fields.get("title", entry.key)).render_as("text")
    elif len(lasts) == 1:
        who = lasts[0]
    elif len(lasts) == 2:
        who = f"{lasts[0]} and {lasts[1]}"
    else:
        who = f"{lasts[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class LabelStyle(BaseLabelStyle):
    """``Ho et al., 2020``; labels that coincide get a, b, ... in the order of the list."""

    def format_labels(self, sorted_entries):
        sorted_entries = list(sorted_entries)
        labels = [author_year_label(entry) for entry in sorted_entries]
        shared = {label for label, count in Counter(labels).items() if count > 1}
        seen: Counter = Counter()
        for label in labels:
            if label in shared:
                yield label + string.ascii_lowercase[seen[label]]
                seen[label] += 1
            else:
                yield label


def label_year(label: str) -> str:
    """The year of a label, with its letter: ``Song et al., 2021a`` -> ``2021a``."""
    return label.rsplit(", ", 1)[-1]


@node
def entry_year(children, data):
    """In the list: the year of the entry being formatted, with its label's letter."""
    assert not children
    return Text(label_year(data["label"]))


@node
def cited_year(children, data):
    """In the text: the year of the cited entry, with its label's letter (as in the list)."""
    assert not children
    return Text(label_year(data["formatted_entry"].label))


class FormattingStyle(UnsrtStyle):
    """Entries as ``Last, F., Last, F. (year). Title. Where. URL``, sorted by author, year, title."""

    default_name_style = "lastfirst"
    default_label_style = NAME
    default_sorting_style = "author_year_title"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("abbreviate_names", True)
        super().__init__(*args, **kwargs)

    def format_entry(self, label, entry, bib_data=None):
        # As BaseStyle.format_entry, with the label in the context (for entry_year).
        context = {"entry": entry, "style": self, "bib_data": bib_data, "label": label}
        template = getattr(self, f"get_{entry.type}_template", self.get_misc_template)
        return FormattedEntry(entry.key, template(entry).format_data(context), label)

    def authors_year(self):
        return sentence[join[names("author", sep=", ", sep2=", ", last_sep=", "),
                             " (", entry_year, ")"]]

    def get_article_template(self, e):
        volume = optional[join[field("volume"), optional["(", field("number"), ")"]]]
        return toplevel[
            self.authors_year(),
            self.format_title(e, "title"),
            sentence[tag("em")[field("journal")], volume, optional[pages]],
            self.format_web_refs(e),
        ]

    def get_inproceedings_template(self, e):
        return toplevel[
            self.authors_year(),
            self.format_title(e, "title"),
            words["In", sentence[tag("em")[field("booktitle")],
                                 optional[words["volume", field("volume")]],
                                 optional[words["pp.", pages]]]],
            self.format_web_refs(e),
        ]

    def get_book_template(self, e):
        return toplevel[
            self.authors_year(),
            self.format_btitle(e, "title"),
            sentence[optional[field("publisher")]],
            self.format_web_refs(e),
        ]

    def get_misc_template(self, e):
        return toplevel[
            self.authors_year(),
            optional[self.format_title(e, "title")],
            self.format_web_refs(e),
        ]


@dataclass
class _Parenthetical(BasicAuthorYearParentheticalReferenceStyle):
    def inner(self, role_name):
        return join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
            pre_text,
            reference[join(sep=self.author_year_sep)[
                self.person.author_or_editor_or_title(full="s" in role_name), cited_year]],
            post_text,
        ]


@dataclass
class _Textual(BasicAuthorYearTextualReferenceStyle):
    def inner(self, role_name):
        return join(sep=self.text_reference_sep)[
            self.person.author_or_editor_or_title(full="s" in role_name),
            join[self.bracket.left,
                 join2(sep1=self.pre_text_sep, sep2=self.post_text_sep)[
                     pre_text, reference[cited_year], post_text],
                 self.bracket.right],
        ]


@dataclass
class ReferenceStyle(AuthorYearReferenceStyle):
    """sphinxcontrib-bibtex's author_year in round brackets, its year taken from the label
    (2021a, 2021b): ``Ho et al. (2020)``, ``(Ho et al., 2020)`` and
    ``(Ho and Salimans, 2022; Kingma and Ba, 2015)``."""

    bracket_textual: BracketStyle = dataclass_field(
        default_factory=lambda: BracketStyle(left="(", right=")"))
    bracket_parenthetical: BracketStyle = dataclass_field(
        default_factory=lambda: BracketStyle(left="(", right=")", sep="; "))

    def __post_init__(self):
        super().__post_init__()
        for i, style in enumerate(self.styles):
            if isinstance(style, BasicAuthorYearParentheticalReferenceStyle):
                self.styles[i] = _Parenthetical(
                    bracket=self.bracket_parenthetical, person=self.person,
                    author_year_sep=self.author_year_sep, pre_text_sep=self.pre_text_sep,
                    post_text_sep=self.post_text_sep)
            elif isinstance(style, BasicAuthorYearTextualReferenceStyle):
                self.styles[i] = _Textual(
                    bracket=self.bracket_textual, person=self.person,
                    text_reference_sep=self.text_reference_sep,
                    pre_text_sep=self.pre_text_sep, post_text_sep=self.post_text_sep)
        # GroupReferenceStyle maps each role to its style in __post_init__: map them again.
        self.role_style.clear()
        for style in self.styles:
            self.role_style.update((role, style) for role in style.role_names())


pybtex.plugin.register_plugin("pybtex.style.labels", NAME, LabelStyle)
pybtex.plugin.register_plugin("pybtex.style.formatting", NAME, FormattingStyle)
register_plugin("sphinxcontrib.bibtex.style.referencing", NAME, ReferenceStyle)


def setup(app):
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

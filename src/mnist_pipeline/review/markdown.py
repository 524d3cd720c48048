"""Markdown pieces for text that comes from files (metric keys, param values, paths,
revisions, commit subjects): such text must reach the page as text, not as markup.

GitHub renders raw HTML, links, images and @mentions (which notify people) in comments,
and links bare URLs (`https://...`, `www.`...), so text outside code spans has those
characters escaped or broken up by a zero-width space (`escape_text`); paths and
revisions go into code spans, where GitHub renders nothing (`inline_code`).
"""

import re
import urllib.parse

# Backslash first, so the backslashes the others add are not doubled. `&` before the
# entities below. [ and ] would open a link or an image (![..](url) loads the url).
_ESCAPES = (
    ("\\", "\\\\"),
    ("`", "\\`"),
    ("$", "\\$"),  # $...$ and $$...$$ are math on GitHub
    ("[", "\\["),
    ("]", "\\]"),
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    # A zero-width space after @ keeps GitHub from linking (and notifying) a user; a
    # backslash would not, as mentions are found in the rendered text.
    ("@", "@&#8203;"),
)
ZERO_WIDTH_SPACE = "&#8203;"
# Where GitHub would start a link of its own (a bare URL): between a scheme's `:` and
# `//`, and after a `www` before its dot. A zero-width space there keeps it text.
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=(?<![0-9A-Za-z])[wW]{3})(?=\.)")


def one_line(text: str) -> str:
    """Line breaks as spaces: a table row or a heading is one line."""
    return " ".join(text.splitlines())


def escape_text(text: str) -> str:
    """`text` shown as itself in Markdown outside a code span, on one line."""
    text = one_line(text)
    for char, escaped in _ESCAPES:
        text = text.replace(char, escaped)
    return _AUTOLINK.sub(ZERO_WIDTH_SPACE, text)


def inline_code(text: str) -> str:
    """`text` as a code span: a fence of one backtick more than the longest run inside,
    padded with a space (which the renderer strips) where the text starts or ends with a
    backtick or a space."""
    text = one_line(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def link_target(path: str) -> str:
    """A relative path as a link destination: spaces, parentheses and anything else
    that would end or break `[..](..)` percent-encoded."""
    return urllib.parse.quote(path, safe="/")

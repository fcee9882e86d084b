"""Reading rendered pages in tests."""

from __future__ import annotations

import html
import re

TAG = re.compile(r"<[^>]+>")


def text_of(markup: str) -> str:
    """The text a browser shows, roughly: tags removed, entities decoded (for coloured code)."""
    return html.unescape(TAG.sub("", markup))

"""Text from a task, a record or a URL, made safe to put inside the console's Markdown.

Streamlit draws ``st.markdown``, captions, alerts, headings and widget labels as Markdown:
a task id such as ``**[Session expired](https://evil.example/login)**`` would be drawn as a
bold link inside the console's own box. Every piece of such text goes through :func:`md`
before it joins a Markdown string (or is drawn with ``st.text`` / ``st.code``). No
Streamlit here.
"""
from __future__ import annotations

import re
from typing import Any

# The characters that make Markdown (or Streamlit's additions to it) wherever they stand:
# emphasis, code, links and images, HTML and autolinks, strikethrough, math, entities.
# Line breaks are made spaces, so the block markers ("#", "-", "+", "1.", ">") only count
# at the very start, where they are escaped too. (CommonMark lets a backslash escape any
# ASCII punctuation.)
_INLINE = re.compile(r"([\\`*_\[\]<>~$&])")
_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")
# GitHub-flavoured Markdown turns bare "https://...", "www...." and "a@b.c" into links
# after escapes are read, so escaping cannot stop it: an invisible word joiner (U+2060)
# inside each trigger does.
_AUTOLINK_TRIGGERS = re.compile(r"(?i)(://|www\.|@)")
WORD_JOINER = "\u2060"


def md(value: Any, limit: int | None = None) -> str:
    """``value`` as literal text inside Markdown: every character that makes markup
    escaped, line breaks made spaces (a line break could start a heading or a list), bare
    URLs and addresses kept from becoming links, and at most ``limit`` characters (then
    "…")."""
    text = "" if value is None else str(value)
    text = _LINE_BREAKS.sub(" ", text)
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + "…"
    text = _AUTOLINK_TRIGGERS.sub(lambda m: m.group(1)[0] + WORD_JOINER + m.group(1)[1:], text)
    text = _INLINE.sub(r"\\\1", text)
    return _BLOCK_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)

"""A small, safe Markdown renderer for model messages.

The text is HTML-escaped first, then a subset of Markdown is turned into tags this module writes
itself: paragraphs, line breaks, headings, lists, block quotes, fenced and inline code, bold, italic
and links (http, https and mailto only). Raw HTML in the text is never passed through: it shows as
text.
"""

from __future__ import annotations

import html
import re

from markupsafe import Markup

__all__ = ["render_markdown"]

MAX_CHARS = 200_000  # longer texts are shown as escaped text, not rendered

_FENCE = re.compile(r"^ {0,3}(```|~~~)\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^ {0,3}[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^ {0,3}\d{1,9}[.)]\s+(.*)$")
_QUOTE = re.compile(r"^ {0,3}&gt;\s?(.*)$")  # the text is escaped before it is parsed
_RULE = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"\[([^\[\]]+)\]\(((?:https?://|mailto:)[^\s()]+)\)")
_BOLD = re.compile(r"(\*\*)(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)(__)(?=\S)(.+?)(?<=\S)__(?!\w)")
_MARK = re.compile("\x00(\\d+)\x00")
_ITALIC = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")


def _inline(text: str) -> str:
    """Inline Markdown of one escaped block. Code spans and links are set aside first (as numbered
    NUL-delimited marks, which escaped text cannot hold), so that emphasis never reaches inside them."""
    kept: list[str] = []

    def keep(html_text: str) -> str:
        kept.append(html_text)
        return f"\x00{len(kept) - 1}\x00"

    text = _CODE_SPAN.sub(lambda m: keep(f"<code>{m.group(2).strip()}</code>"), text)
    text = _LINK.sub(
        lambda m: keep(
            f'<a href="{m.group(2)}" rel="noopener noreferrer nofollow">{_emphasis(m.group(1))}</a>'
        ),
        text,
    )
    text = _emphasis(text).replace("\n", "<br>\n")
    return _MARK.sub(lambda m: kept[int(m.group(1))], text)


def _emphasis(text: str) -> str:
    text = _BOLD.sub(lambda m: f"<strong>{m.group(2) or m.group(4)}</strong>", text)
    return _ITALIC.sub(r"<em>\2</em>", text)


def render_markdown(text: str | None) -> Markup:
    """``text`` as safe HTML (see the module's docstring)."""
    if not text:
        return Markup("")
    if len(text) > MAX_CHARS:
        return Markup(f'<p class="plain">{html.escape(text)}</p>')
    lines = html.escape(text.replace("\x00", ""), quote=True).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    paragraph: list[str] = []
    i = 0

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(chr(10).join(paragraph))}</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
                code.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end of the text)
            language = f' data-lang="{fence.group(2)}"' if fence.group(2) else ""
            out.append(f'<pre class="code"{language}><code>{chr(10).join(code)}</code></pre>')
            continue
        if not line.strip():
            flush()
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            level = min(6, len(heading.group(1)) + 3)  # inside a message: h4 to h6
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if _RULE.match(line):
            flush()
            out.append("<hr>")
            i += 1
            continue
        for pattern, tag in ((_BULLET, "ul"), (_NUMBERED, "ol")):
            if pattern.match(line):
                flush()
                items: list[str] = []
                while i < len(lines) and pattern.match(lines[i]):
                    item = [pattern.match(lines[i]).group(1)]  # type: ignore[union-attr]
                    i += 1
                    # a continuation line (indented, not a new item) belongs to the item
                    while (
                        i < len(lines)
                        and lines[i].startswith("  ")
                        and lines[i].strip()
                        and not (_BULLET.match(lines[i]) or _NUMBERED.match(lines[i]))
                    ):
                        item.append(lines[i].strip())
                        i += 1
                    items.append(f"<li>{_inline(chr(10).join(item))}</li>")
                out.append(f"<{tag}>{''.join(items)}</{tag}>")
                break
        else:
            quote = _QUOTE.match(line)
            if quote:
                flush()
                quoted: list[str] = []
                while i < len(lines) and _QUOTE.match(lines[i]):
                    quoted.append(_QUOTE.match(lines[i]).group(1))  # type: ignore[union-attr]
                    i += 1
                out.append(f"<blockquote>{_inline(chr(10).join(quoted))}</blockquote>")
                continue
            paragraph.append(line)
            i += 1
            continue
    flush()
    return Markup("\n".join(out))

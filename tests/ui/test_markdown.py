"""The trace view's Markdown renderer: escape first, a small subset, no raw HTML, no script links."""

from __future__ import annotations

import pytest

from pilothouse.domain.traces import Status, Trace
from pilothouse.store.trace_view import OutlineSpan, TraceOutline
from pilothouse.ui.markdown import render_markdown
from pilothouse.ui.pages_traces import outline_json


def test_the_subset() -> None:
    html = str(
        render_markdown(
            "# Title\n\nSome **bold** and *it* and `x < y`.\nNext line.\n\n- a\n- b\n\n1. one\n2. two"
        )
    )
    assert "<h4>Title</h4>" in html
    assert (
        "<p>Some <strong>bold</strong> and <em>it</em> and <code>x &lt; y</code>.<br>\nNext line.</p>" in html
    )
    assert "<ul><li>a</li><li>b</li></ul>" in html
    assert "<ol><li>one</li><li>two</li></ol>" in html


def test_fenced_code_keeps_its_text_and_is_not_formatted() -> None:
    html = str(render_markdown("```python\nprint('**not bold**') # <b>\n```"))
    code = "print(&#x27;**not bold**&#x27;) # &lt;b&gt;"
    assert html == f'<pre class="code" data-lang="python"><code>{code}</code></pre>'


def test_links_are_only_http_https_and_mailto_and_emphasis_stays_out_of_them() -> None:
    html = str(
        render_markdown("[docs](https://example.com/a_b_c) [x](javascript:alert(1)) [m](mailto:a@b.c)")
    )
    assert '<a href="https://example.com/a_b_c" rel="noopener noreferrer nofollow">docs</a>' in html
    assert "javascript:" in html and 'href="javascript' not in html
    assert '<a href="mailto:a@b.c"' in html


@pytest.mark.parametrize(
    "payload",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        '[x](https://e.com/"onmouseover="alert(1))',
        "**<svg onload=alert(1)>**",
        "`</code><script>alert(1)</script>`",
        "> <iframe src=javascript:alert(1)>",
        "- <a href=javascript:alert(1)>x</a>",
        "\x000\x00<b>",
    ],
)
def test_no_payload_becomes_a_tag(payload: str) -> None:
    html = str(render_markdown(payload))
    for tag in ("<script", "<img", "<svg", "<iframe", "<a href=javascript", "<b>", 'onmouseover="'):
        assert tag not in html, html


def test_the_outline_cannot_close_its_script_element() -> None:
    trace = Trace(id="t" * 32, project_id="p", name="x", start_ns=0, end_ns=10, status=Status.OK)
    span = OutlineSpan("a" * 16, None, "span", "</script><script>alert(1)</script>", 0, 10, "ok", None, 0)
    text = outline_json(TraceOutline(trace, [span], [], None, None))
    assert "<" not in text and "\\u003c/script>" in text


def test_underscores_inside_words_are_not_emphasis() -> None:
    assert str(render_markdown("call a__b__c and snake_case_name")) == (
        "<p>call a__b__c and snake_case_name</p>"
    )
    assert str(render_markdown("__bold__ and _it_")) == "<p><strong>bold</strong> and <em>it</em></p>"

"""The UI's pure parts: signed sessions and CSRF tokens, chat rendering, dashboard arithmetic."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from pilothouse.config import load_settings
from pilothouse.domain.money import Money
from pilothouse.domain.rollups import RollupSums
from pilothouse.domain.sketch import BUCKETS, bucket_value, latency_bucket
from pilothouse.store.analytics import RollupRow
from pilothouse.ui import analytics as an
from pilothouse.ui.format import at, chat_messages, duration_ms, last_turn, money, preview
from pilothouse.ui.session import SECRET_ENV, SessionSigner, load_secret
from pilothouse.ui.web import safe_next


def test_sessions_are_signed_and_expire() -> None:
    signer = SessionSigner(b"s" * 32, max_age_s=3600)
    session = signer.new_session("key-1", "default")
    cookie = signer.dumps(session)
    assert signer.loads(cookie) == session
    _, mac = cookie.split(".")
    forged = orjson.dumps(
        {"k": "admin", "p": "other", "s": session.session_id, "t": session.issued_s, "a": None}
    )
    import base64

    forged_body = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    assert signer.loads(f"{forged_body}.{mac}") is None  # a changed payload fails the signature
    assert signer.loads(cookie + "x") is None
    assert signer.loads("not-a-cookie") is None and signer.loads(None) is None
    assert SessionSigner(b"t" * 32).loads(cookie) is None  # another secret
    assert signer.loads(cookie, now_s=time.time() + 3601) is None  # too old


def test_csrf_tokens_belong_to_one_session() -> None:
    signer = SessionSigner(b"s" * 32)
    a, b = signer.new_session("k", "p"), signer.new_session("k", "p")
    assert signer.check_csrf(a, signer.csrf_token(a))
    assert not signer.check_csrf(a, signer.csrf_token(b))
    assert not signer.check_csrf(a, None) and not signer.check_csrf(a, "")


def test_the_secret_is_kept_in_home_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    first = load_secret(tmp_path / "home")
    assert load_secret(tmp_path / "home") == first and len(first) >= 32
    assert (tmp_path / "home" / "session-secret").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv(SECRET_ENV, "from-the-environment-0123456789")
    configured = load_settings().session_secret
    assert configured is not None and "0123456789" not in repr(configured)  # never printed
    assert load_secret(tmp_path / "home", configured.get_secret_value()) == b"from-the-environment-0123456789"


def test_login_only_goes_back_to_local_pages() -> None:
    assert safe_next("/traces?status=error") == "/traces?status=error"
    for bad in ("https://evil.example", "//evil.example/x", "/\\evil", "", None):
        assert safe_next(bad) == "/"


def test_openai_and_anthropic_messages_read_as_a_chat() -> None:
    openai = chat_messages(
        orjson.dumps(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 3}'},
            ]
        ).decode()
    )
    assert openai is not None
    assert [m.role for m in openai] == ["system", "user", "assistant", "tool"]
    assert [p.kind for p in openai[1].parts] == ["text", "image"]
    assert (
        openai[2].tool_calls[0].name == "get_weather"
        and '"city": "Oslo"' in openai[2].tool_calls[0].arguments
    )
    assert openai[3].parts[0].kind == "json" and openai[3].tool_call_id == "c1"
    # a turn of tool results only: led by the user's question (issue 23, item 5)
    assert [m.role for m in last_turn(openai)] == ["user", "tool"]
    anthropic = chat_messages(
        orjson.dumps(
            {
                "system": "Terse.",
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": 1}}],
                    },
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "found"}],
                    },
                ],
            }
        ).decode()
    )
    assert anthropic is not None and [m.role for m in anthropic] == ["system", "assistant", "user"]
    assert anthropic[1].tool_calls[0].name == "lookup"
    assert anthropic[2].parts[0].kind == "tool_result" and anthropic[2].parts[0].text == "found"
    assert chat_messages("plain answer") is None
    assert chat_messages("plain answer", default_role="assistant")[0].role == "assistant"  # type: ignore[index]


def test_list_previews_show_the_question() -> None:
    cut_short = (
        '[{"role":"system","content":"Be brief."},{"role":"user","content":"Explain \\"tides\\" in one li'
    )
    assert preview(cut_short) == 'Explain "tides" in one li'
    assert preview("just text") == "just text"


def test_numbers_read_well() -> None:
    assert (
        money(None) == "–"
        and money(Money.ZERO) == "$0.00"
        and money(Money.from_usd("1234.5")) == "$1,234.50"
        and money(Money.from_usd("0.000412")) == "$0.000412"
    )
    assert duration_ms(850) == "850 ms" and duration_ms(1240) == "1.24 s"
    assert duration_ms(900_000) == "15 min" and duration_ms(21_600_000) == "6 h"


def test_windows_are_aligned_and_checked() -> None:
    win = an.window("24h", now_s=1_000_000)
    assert win.bucket_s == 900 and win.end_s % 900 == 0 and win.end_s > 1_000_000
    assert len(win.buckets) == 96
    with pytest.raises(an.InvalidRange):
        an.window("2d")


def _row(bucket: int, model: str, count: int, cost: Money, streamed: int = 0) -> RollupRow:
    hist = np.zeros(BUCKETS, np.int64)
    hist[40] = count
    ttft = np.zeros(BUCKETS, np.int64)
    ttft[latency_bucket(250.0)] = streamed
    sums = RollupSums(count, 0, 10 * count, count, cost_usd=cost, latency_ms_sum=100.0 * count)
    sums.saved_usd = Money(cost.pico // 2)
    return RollupRow(bucket, model, "chat", sums, hist, ttft)


def test_ttft_and_cache_savings_are_summed_from_the_rollups() -> None:
    win = an.Window("1h", 0, 180, 60)
    rows = [
        _row(0, "m", 100, Money.from_usd("1"), streamed=30),
        _row(60, "m", 10, Money.from_usd("0.1")),
        _row(60, "n", 5, Money.from_usd("0.02"), streamed=5),
    ]
    totals = an.rollup_totals(rows)
    assert totals.requests == 115 and totals.streamed == 35
    assert totals.saved_usd == Money.from_usd("0.56")  # half of each row's cost, added exactly
    assert totals.ttft_p50 == bucket_value(latency_bucket(250.0))
    series = an.rollup_series(rows, win)
    assert series["ttft"] == [bucket_value(latency_bucket(250.0))] * 2 + [None]  # none streamed: none
    assert an.rollup_totals([rows[1]]).ttft_p50 is None


def test_a_time_known_to_the_minute_shows_no_seconds() -> None:
    # a key's "last used" is a rollup minute's start: 08:02:00 read as exact came before the key's creation
    ns = 1_796_630_520 * 1_000_000_000  # 2026-12-07 08:02:00 UTC
    assert ">2026-12-07 08:02:00 UTC</time>" in str(at(ns))
    minute = str(at(ns, minute=True))
    assert ">2026-12-07 08:02 UTC</time>" in minute and 'datetime="2026-12-07T08:02:00Z"' in minute

"""Searching a guard's configured patterns (``regex``'s ``patterns``, ``blocklist``'s ``words``,
``prompt_injection``'s ``patterns``) under a time budget.

A configured pattern may backtrack catastrophically on some text (``(a|aa)+$``), and Python's ``re``
can neither be stopped nor let other threads run meanwhile: one request froze the server for hours.
These patterns run on the ``regex`` package instead (:mod:`pilothouse.evals.patterns`), with the
interpreter's lock released and a time limit, and the searches of one request (its asyncio task)
share :data:`REQUEST_BUDGET_S` seconds in all: a request of many small texts cannot multiply it. On
the event loop one search gets at most :data:`LOOP_SLICE_S` (every request waits for it); a long text
is searched in a worker thread. Past the budget a search gives up: a check fails, a redaction covers
the whole text (fail closed)."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from pilothouse.evals.patterns import PatternTimeout, find_spans

__all__ = ["LOOP_SLICE_S", "REQUEST_BUDGET_S", "THREAD_CHARS", "locate_spans", "search_spans"]

REQUEST_BUDGET_S = 1.0  # configured patterns, every search of one request together
LOOP_SLICE_S = 0.05  # one search on the event loop
THREAD_CHARS = 64 * 1024  # a longer text is searched in a worker thread: the event loop keeps serving
Spans = list[tuple[int, int]]


class _Spent:
    """Seconds the current request's pattern searches have taken so far."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


_accounts: weakref.WeakKeyDictionary[asyncio.Task[Any], _Spent] = weakref.WeakKeyDictionary()


def _task_spent() -> _Spent:
    """The current asyncio task's account (a request is a task of its own); a fresh one outside a
    task (a worker thread, a script), where nothing accumulates."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is None:
        return _Spent()
    found = _accounts.get(task)
    if found is None:
        found = _accounts[task] = _Spent()
    return found


def _timed(patterns: list[Any], text: str, spent: _Spent, cap: float) -> Spans | None:
    left = min(cap, REQUEST_BUDGET_S - spent.seconds)
    if left <= 0:
        return None
    started = time.perf_counter()
    try:
        return find_spans(patterns, text, left)
    except PatternTimeout:
        return None
    finally:
        spent.seconds += time.perf_counter() - started


async def search_spans(patterns: list[Any], text: str) -> Spans | None:
    """The matches of ``patterns`` in ``text`` (None: past the budget), from a guard's check."""
    spent = _task_spent()
    if len(text) > THREAD_CHARS:
        return await asyncio.to_thread(_timed, patterns, text, spent, REQUEST_BUDGET_S)
    return _timed(patterns, text, spent, LOOP_SLICE_S)


def locate_spans(patterns: list[Any], text: str) -> Spans | None:
    """:func:`search_spans` for code that is not async (a stream's redaction, the trace's copy)."""
    try:
        asyncio.get_running_loop()
        cap = LOOP_SLICE_S
    except RuntimeError:  # a worker thread
        cap = REQUEST_BUDGET_S
    return _timed(patterns, text, _task_spent(), cap)

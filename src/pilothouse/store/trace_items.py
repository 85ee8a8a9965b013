"""Curation: dataset items made from stored traces (the trace's input and output, its name, model,
tags and scores as metadata, with the trace's own metadata), for :class:`pilothouse.store.evals.EvalStore`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.queries import TraceQuery, next_page
from pilothouse.store import tables as t
from pilothouse.store.rows import unpack
from pilothouse.store.sql import SqlStore

__all__ = ["ScoreFilter", "TraceItems"]


@dataclass(frozen=True, slots=True)
class ScoreFilter:
    """Keep traces with a score ``name`` ``op`` ``value`` (op one of >=, <=, >, <, ==)."""

    name: str
    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in (">=", "<=", ">", "<", "=="):
            raise ValueError(f"unknown comparison {self.op!r} (use >=, <=, >, < or ==)")


class TraceItems:
    """The curation reads of the eval store (a base of :class:`EvalStore`, which sets ``store``)."""

    store: SqlStore

    def iter_trace_items(
        self,
        project_id: str,
        query: TraceQuery,
        scores: Sequence[ScoreFilter] = (),
        limit: int | None = None,
    ) -> Iterator[DatasetItem]:
        """Dataset items from stored traces matching the filters, newest first: the trace's input (a
        chat becomes ``messages``, a JSON object the variables, other text the variable ``input``), its
        output as ``expected``, its metadata plus its name, model, tags and scores; the trace id is the
        item's id and source."""
        sc, sp, tr = t.scores, t.spans, t.traces
        produced = 0
        page = TraceQuery(**{**_query_fields(query), "limit": 500})
        while True:
            found = self.store.list_traces(project_id, page)
            traces = [summary.trace for summary in found.data]
            ids = [trace.id for trace in traces]
            with self.store.engine.connect() as conn:
                roots = {
                    r.id: (unpack(r.input), unpack(r.output), _prompt_variables(r.attributes))
                    for r in conn.execute(
                        select(tr.c.id, sp.c.input, sp.c.output, sp.c.attributes)
                        .join(sp, sp.c.trace_pk == tr.c.pk)
                        .where(tr.c.project_id == project_id, tr.c.id.in_(ids), sp.c.parent_id.is_(None))
                    )
                }
                trace_scores: dict[str, dict[str, float | str | None]] = {}
                for row in conn.execute(
                    select(sc.c.trace_id, sc.c.name, sc.c.value, sc.c.string_value).where(
                        sc.c.project_id == project_id, sc.c.trace_id.in_(ids)
                    )
                ):
                    value = row.value if row.value is not None else row.string_value
                    trace_scores.setdefault(row.trace_id, {})[row.name] = value
            for trace in traces:
                own = trace_scores.get(trace.id, {})
                if not all(_score_passes(own.get(f.name), f) for f in scores):
                    continue
                root_in, root_out, variables = roots.get(trace.id, (None, None, None))
                text_in = trace.input if trace.input is not None else root_in
                text_out = trace.output if trace.output is not None else root_out
                yield _trace_item(
                    trace.id,
                    text_in,
                    text_out,
                    name=trace.name,
                    model=trace.model,
                    tags=trace.tags,
                    scores=own,
                    user_id=trace.user_id,
                    session_id=trace.session_id,
                    prompt_variables=variables,
                    trace_metadata=trace.metadata,
                )
                produced += 1
                if limit is not None and produced >= limit:
                    return
            if found.next_cursor is None:
                return
            page = next_page(page, found.next_cursor)

    def trace_items(self, project_id: str, trace_ids: Sequence[str]) -> dict[str, DatasetItem]:
        """Dataset items (as :meth:`iter_trace_items` makes them) of the named traces of the project;
        ids that are no trace of it are left out."""
        tr, sp = t.traces, t.spans
        out: dict[str, DatasetItem] = {}
        for start in range(0, len(trace_ids), 500):
            chunk = list(trace_ids[start : start + 500])
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    select(
                        tr.c.id,
                        tr.c.input,
                        tr.c.output,
                        tr.c.name,
                        tr.c.model,
                        tr.c.tags,
                        sp.c.input,
                        sp.c.output,
                        tr.c.user_id,
                        tr.c.session_id,
                        sp.c.attributes,
                        tr.c.metadata,
                    )
                    .outerjoin(sp, (sp.c.trace_pk == tr.c.pk) & sp.c.parent_id.is_(None))
                    .where(tr.c.project_id == project_id, tr.c.id.in_(chunk))
                )
                for row in rows:
                    if row[0] in out:
                        continue
                    text_in = unpack(row[1]) if row[1] is not None else unpack(row[6])
                    text_out = unpack(row[2]) if row[2] is not None else unpack(row[7])
                    tags = orjson.loads(row[5]) if row[5] else []
                    out[row[0]] = _trace_item(
                        row[0],
                        text_in,
                        text_out,
                        name=row[3],
                        model=row[4],
                        tags=tags,
                        scores={},
                        user_id=row[8],
                        session_id=row[9],
                        prompt_variables=_prompt_variables(row[10]),
                        trace_metadata=orjson.loads(row[11]) if row[11] else None,
                    )
        return out


def _query_fields(query: TraceQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in TraceQuery.__dataclass_fields__}


def _score_passes(value: float | str | None, f: ScoreFilter) -> bool:
    if not isinstance(value, int | float):
        return False
    ops = {
        ">=": value >= f.value,
        "<=": value <= f.value,
        ">": value > f.value,
        "<": value < f.value,
        "==": value == f.value,
    }
    return ops[f.op]


def _prompt_variables(attributes: str | bytes | None) -> dict[str, Any] | None:
    """The prompt variables a gateway call recorded in its span's attributes, if any."""
    if attributes is None:
        return None
    try:
        parsed = orjson.loads(unpack(attributes) or "null")
    except orjson.JSONDecodeError:
        return None
    found = parsed.get("pilothouse.prompt.variables") if isinstance(parsed, dict) else None
    return found if isinstance(found, dict) and found else None


def _trace_item(
    trace_id: str,
    text_in: str | None,
    text_out: str | None,
    *,
    name: str | None,
    model: str | None,
    tags: Sequence[str],
    scores: Mapping[str, Any],
    user_id: str | None = None,
    session_id: str | None = None,
    prompt_variables: dict[str, Any] | None = None,
    trace_metadata: Mapping[str, Any] | None = None,
) -> DatasetItem:
    variables: dict[str, Any] = {}
    messages = None
    parsed: Any = None
    if text_in:
        try:
            parsed = orjson.loads(text_in)
        except orjson.JSONDecodeError:
            parsed = None
    if isinstance(parsed, list) and all(isinstance(m, dict) and "role" in m for m in parsed) and parsed:
        messages = tuple(parsed)
    elif isinstance(parsed, dict):
        variables = parsed
    elif text_in is not None:
        variables = {"input": text_in}
    if prompt_variables and messages is not None:
        # a gateway call made from a registry prompt: the chat it sent, and the variables that filled
        # the prompt (so the item can be replayed through another version of the prompt)
        variables = dict(prompt_variables)
    metadata: dict[str, Any] = {
        "trace_name": name,
        "model": model,
        "tags": list(tags),
        "user_id": user_id,
        "session_id": session_id,
    }
    if scores:
        metadata["scores"] = dict(scores)
    # the trace's own metadata comes along (an online evaluator's `metadata.context`, a tenant to group
    # splits by); the keys above are the item's and win over the trace's of the same name
    carried = dict(trace_metadata) if isinstance(trace_metadata, Mapping) else {}
    return DatasetItem(
        id=trace_id,
        input=variables,
        expected=text_out,
        metadata={**carried, **{k: v for k, v in metadata.items() if v}},
        messages=messages,
        source_trace_id=trace_id,
    )

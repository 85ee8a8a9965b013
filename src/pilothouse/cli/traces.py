"""``pilothouse traces``: look at stored traces from the terminal."""

from __future__ import annotations

import time

import click

from pilothouse.cli.common import CliError, database_option, open_store
from pilothouse.domain.queries import InvalidQuery, TraceQuery, decode_cursor
from pilothouse.domain.timeparse import iso, parse_time_ns
from pilothouse.domain.traces import Observation, Status
from pilothouse.server.serialise import dumps, trace_detail_json, trace_summary_json, tree_order
from pilothouse.store.search import query_words


@click.group()
def traces() -> None:
    """List and show traces."""


@traces.command("list")
@click.option("--project", default="default", show_default=True)
@click.option("--since", default=None, help="Only traces after this: 1h, 7d, ISO 8601 or Unix seconds.")
@click.option("--name", default=None)
@click.option("--user", "user_id", default=None)
@click.option("--session", "session_id", default=None)
@click.option("--model", default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("--status", type=click.Choice(["ok", "error"]), default=None)
@click.option(
    "--search",
    "-q",
    default=None,
    help="Full-text search: traces with a span holding every word (names, inputs, outputs, metadata "
    "values); 'word*' for a prefix.",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", default=None, help="The 'next' cursor printed by the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@database_option
def list_traces(
    project: str,
    since: str | None,
    name: str | None,
    user_id: str | None,
    session_id: str | None,
    model: str | None,
    tags: tuple[str, ...],
    status: str | None,
    search: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    database_url: str | None,
) -> None:
    """Newest traces first."""
    try:
        query = TraceQuery(
            start_ns=parse_time_ns(since, time.time_ns()) if since else None,
            name=name,
            user_id=user_id,
            session_id=session_id,
            model=model,
            tags=tags,
            status=Status(status) if status else None,
            search=search,
            limit=limit,
            cursor=decode_cursor(cursor) if cursor else None,
        )
        if search is not None:
            query_words(search)  # a search with no word, or too many: one line and exit 2, no traceback
    except (ValueError, InvalidQuery) as exc:
        raise CliError(str(exc), exit_code=2) from None
    store = open_store(database_url)
    page = store.list_traces(project, query)
    store.close()
    if as_json:
        for item in page.data:
            click.echo(dumps(trace_summary_json(item)))
    else:
        click.echo(
            f"{'TIME':24}  {'TRACE ID':32}  {'NAME':24}  {'MODEL':18}  {'TOKENS':>7}  {'MS':>8}  STATUS"
        )
        for item in page.data:
            t = item.trace
            click.echo(
                f"{iso(t.start_ns):24}  {t.id:32}  {(t.name or '')[:24]:24}  {(t.model or '')[:18]:18}  "
                f"{t.usage.total:>7}  {t.latency_ms:>8.1f}  {t.status.value}"
            )
    if page.next_cursor:
        click.echo(f"next page: --cursor {page.next_cursor}", err=True)


@traces.command()
@click.argument("trace_id")
@click.option("--project", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole trace as JSON.")
@database_option
def show(trace_id: str, project: str, as_json: bool, database_url: str | None) -> None:
    """One trace: its observation tree, usage and scores."""
    store = open_store(database_url)
    detail = store.get_trace(project, trace_id.lower())
    store.close()
    if detail is None:
        raise CliError(f"no trace {trace_id!r} in project {project!r}", exit_code=2)
    if as_json:
        click.echo(dumps(trace_detail_json(detail), indent=True))
        return
    t = detail.trace
    cost = "" if t.cost_usd is None else f"  {t.cost_usd.display()}"
    click.echo(f"trace {t.id}  {t.name or ''}  {t.status.value}  {t.latency_ms:.1f} ms{cost}")
    if t.user_id or t.session_id:
        click.echo(f"user {t.user_id or '-'}  session {t.session_id or '-'}")
    for o, depth in tree_order(detail.observations):
        extra = ""
        if o.model:
            extra = f"  {o.model}  in={o.usage.input_total} out={o.usage.output}"
            if o.ttft_ns is not None:
                extra += f"  ttft={o.ttft_ns / 1e6:.1f} ms"
            if o.cost is not None:
                extra += f"  {o.cost.total.display()}"
        click.echo(
            f"{'  ' * depth}- [{o.kind.value}] {o.name}  {o.duration_ns / 1e6:.1f} ms  "
            f"{o.status.value}{extra}"
        )
        for line in _notes(o):
            click.echo(f"{'  ' * depth}    {line}")
    for s in detail.scores:
        click.echo(
            f"score {s.name} = {s.string_value if s.string_value is not None else s.value} ({s.source.value})"
        )


_ACTED = {"block": "blocked", "redact": "redacted", "flag": "flagged", "fallback": "fell back"}


def _notes(o: Observation) -> list[str]:
    """What explains an observation's outcome: its error message, and the gateway guards that failed
    (a blocked call is an error whose reason is the guard's)."""
    notes = [f"error: {o.status_message}"] if o.status_message and o.status == Status.ERROR else []
    guards = o.attributes.get("gateway.guardrails")
    for g in guards if isinstance(guards, list) else []:
        if isinstance(g, dict) and g.get("passed") is False:
            reason = f": {g['reason']}" if g.get("reason") else ""
            done = _ACTED.get(str(g.get("action")), f"failed ({g.get('action')})")
            if g.get("fallback"):
                done += f" to {g['fallback']}"
            notes.append(f"{g.get('stage')} guard {g.get('guard')} {done}{reason}")
    return notes

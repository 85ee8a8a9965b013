"""Full-text search over stored spans: span names, inputs, outputs, status messages and attribute values
(metadata included), through a real index on each database (migration 0022).

- SQLite: ``span_search``, a contentless FTS5 table (``detail=none``: words, no positions) whose rowid is
  the span's key. The batch writer adds a span's document (:func:`search_document`) as it stores the span;
  the texts themselves stay where they are (packed in ``spans``).
- PostgreSQL: ``spans.search``, a ``tsvector`` of the document's distinct words in lower case, without
  positions (the searches are all-of-these-words, which positions do not serve), that the batch writer
  computes itself (:func:`pg_span_vector`: the texts are packed in the database, which cannot unpack
  them; and PostgreSQL's text parser costs ~10x the rest of a span's insert), with a GIN index: the
  lexemes 'simple' ``to_tsvector`` makes of the same words (lower case, no stemming, no stop words),
  which ``to_tsquery('simple', ...)`` finds; and
  ``traces.search`` for a trace's own fields (name, input, output, tags, metadata), which the writer
  computes for a new trace (:func:`pg_trace_vector`) and a ``BEFORE UPDATE`` trigger computes again
  when a merge changes one of those fields (migration 0032; before it, the trigger ran on every insert
  and merge).

Both split text the same way: a word is a run of letters and digits (``sim-1`` is ``sim`` and ``1``;
``foo_bar`` is ``foo`` and ``bar``). A query is the words of the search text, all of which must occur in
one span; a trailing ``*`` makes the last word a prefix. Searches are not capped: a word is looked up in
the index. Pages come newest first (or in the chosen sort), so a page is never "the best matches": it
is the first traces in order that hold the words. :func:`search_condition` counts the matching spans
(up to a bound) and picks the cheapest way to find them (:class:`Plan`, :func:`plan_costs`):

- few: the traces that hold them are read from the index by key, then filtered and sorted as any
  page (a word that occurs nowhere costs one index look-up);
- many (a common word): the page walks the filtered traces in order and asks the index about each one's
  spans, which fills a page after a few traces, but costs an index look-up per span and per word;
- in between, and for a prefix of many words: the matching spans' keys are read from the index once
  (a temporary list) and the page walks the traces in order, asking the list.

SQLite's FTS5 answers a prefix by merging the lists of every word that has it, on each look-up; so a
prefix is first expanded into its words (``fts5vocab``, one seek per word), and a prefix of more than
:data:`PROBE_TERMS` words is never probed span by span. A prefix of 1 or 2 characters (which may begin
~100,000 words) has lists of its own in the index (:data:`PREFIX_CHARS`, migration 0028): it is one term.
"""

from __future__ import annotations

import re
import sqlite3
import struct
from collections.abc import Iterator, Mapping, Sequence
from enum import Enum
from math import isqrt
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    LargeBinary,
    MetaData,
    Table,
    and_,
    any_,
    bindparam,
    case,
    false,
    func,
    literal,
    text,
    true,
)
from sqlalchemy.dialects import postgresql

from pilothouse._speedups import search_vector
from pilothouse.domain.queries import InvalidQuery
from pilothouse.domain.traces import SpanRecord
from pilothouse.store import tables as t
from pilothouse.store.rows import ZSTD_MAGIC, unpack

BACKFILL_BATCH = 5_000  # stored spans indexed per statement by a migration

MAX_DOCUMENT_CHARS = 200_000  # of a span's text that is indexed (PostgreSQL's tsvector holds < 1 MB)
MAX_QUERY_WORDS = 16
MAX_WORD_CHARS = 100
# What the plans' steps cost, relative to reading one matching span's key into the list (~0.5 us):
# reading a matching span and its trace by key (random reads: ~20 us), walking a candidate trace's
# span (its trace in order and its spans' keys: ~8 us), and looking one index term up for one span
# (~150 us to ~500 us: FTS5 seeks it in each segment of the index). SQLite, 1,000,000 spans, loaded
# dev VM (benchmarks/search.py); the choice is not sensitive to a factor of two in any of them.
SQLITE_COSTS: Mapping[str, int] = {"list": 1, "key": 40, "walk": 16, "probe": 600}
# SQLite: how many of the newest spans tell how common a word is, when it is past reading by key
SAMPLE_SPANS = 20_000
# PostgreSQL, in microseconds (1,000,000 spans, loaded dev VM): a matching span's trace key read from
# the index and the trace read by key; a candidate span walked (its trace in order, the span by the
# (trace_pk, span_id) index in each partition, its vector checked: no separate probe cost). No list:
# it would cost what reading by key costs.
PG_COSTS: Mapping[str, int] = {"key": 15, "walk": 60, "probe": 0}
# A search of more index words than this (a prefix stands for the words it begins) is not probed.
PROBE_TERMS = 8
# SQLite: the prefix lengths (in characters) the index keeps lists of its own for (FTS5 ``prefix='1 2'``,
# migration 0028): a prefix this short is one index term, however many words it begins
PREFIX_CHARS = frozenset({1, 2})

_WORD = re.compile(r"[^\W_]+")


def _pg_document(fields: str) -> str:
    return (
        "to_tsvector('simple'::regconfig, left(regexp_replace("
        + " || ' ' || ".join(f"coalesce({{p}}{f}, '')" for f in fields.split())
        + f", '[^[:alnum:]]+', ' ', 'g'), {MAX_DOCUMENT_CHARS}))"
    )


# PostgreSQL: the documents as SQL over the row (p="NEW.": the traces' trigger) or the table's columns
# (p="": the migration's backfill of stored rows). A trace's own fields (set by any of its spans: name,
# input, output, metadata, tags) have their own.
PG_SPAN_DOCUMENT = _pg_document("name input output status_message attributes")
PG_TRACE_DOCUMENT = _pg_document("name input output metadata tags")


# PostgreSQL keeps no lexeme over 2,047 bytes (to_tsvector leaves such a word out)
MAX_LEXEME_BYTES = 2047
_LEXEME_END = b"\0\0\0"  # a lexeme's NUL and its 16-bit number of positions (0) in tsvector's binary form
NO_LEXEMES = struct.pack("!i", 0)
# ASCII text to its words' bytes: letters lower-cased, every other byte a space (then bytes.split())
_ASCII_WORDS = bytes(
    c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 or 48 <= c <= 57 else 32 for c in range(256)
)
# ``spans`` with its search column, which the table definitions leave out (the column is PostgreSQL's)
SPANS_WITH_SEARCH = Table(
    "spans", MetaData(), *(Column(c.name, c.type) for c in t.spans.c), Column("search", postgresql.TSVECTOR)
)


def bytea_may_contain(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    """On PostgreSQL, whether a span text (``bytea``: UTF-8, or packed by
    :func:`pilothouse.store.rows.pack_bytes`) may contain the ILIKE ``pattern``: its UTF-8 matches, or
    it is packed (a zstd frame, or an lz4 block, whose third and fourth bytes are NUL). CASE keeps
    ``convert_from`` away from packed bytes, which are not UTF-8."""
    matches = func.convert_from(column, "UTF8").ilike(pattern, escape="\\")
    return case(
        (func.octet_length(column) < 4, matches),
        (func.substr(column, 1, 4) == literal(ZSTD_MAGIC, LargeBinary), true()),
        (and_(func.get_byte(column, 2) == 0, func.get_byte(column, 3) == 0), true()),
        else_=matches,
    )


def span_text_matches(needle: str, *values: str | bytes | None) -> bool:
    """Whether any of ``values`` (stored texts, packed or not) contains ``needle``, ignoring case."""
    folded = needle.lower()
    return any(text is not None and folded in text.lower() for text in map(unpack, values))


def _strings(value: Any) -> Iterator[str]:
    """Every string and number in a JSON-like value (the values of a metadata object, not its keys)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def search_document(record: SpanRecord) -> str:
    """The text of a span that the SQLite index holds: name, input, output, status message and the
    values of its attributes, and the trace's fields that the span carried (name, input, output, tags,
    metadata values), at most :data:`MAX_DOCUMENT_CHARS` characters."""
    o, tr = record.observation, record.trace
    texts = (o.input, o.output, o.status_message, tr.name, tr.input, tr.output, *tr.tags)
    return document(o.name, texts, (o.attributes, tr.metadata) if tr.metadata else o.attributes)


def document_lexemes(doc: str) -> list[bytes]:
    """The distinct words of a document (split as :func:`query_words` splits a search), in lower case,
    as UTF-8, in no order, those over :data:`MAX_LEXEME_BYTES` left out: what
    ``strip(to_tsvector('simple', words))`` holds (PostgreSQL sorts them as it reads a vector). ASCII
    documents (most) take a translation table instead of the regular expression."""
    if doc.isascii():
        words = set(doc.encode().translate(_ASCII_WORDS).split())
        if len(doc) <= MAX_LEXEME_BYTES:  # no word can be too long
            return list(words)
    else:
        words = {w.lower().encode() for w in set(_WORD.findall(doc))}
    return [w for w in words if len(w) <= MAX_LEXEME_BYTES]


def span_lexemes(record: SpanRecord) -> list[bytes]:
    """The lexemes (:func:`document_lexemes`) of :func:`search_document`."""
    return document_lexemes(search_document(record))


def document_vector(doc: str, max_lexeme_bytes: int = MAX_LEXEME_BYTES) -> bytes:
    """The ``tsvector`` of a document's words in PostgreSQL's binary form: the number of lexemes, then
    each lexeme NUL-terminated and followed by its number of positions, a 16-bit 0; for the writer's
    binary ``COPY``. The lexemes go in PostgreSQL's order (bytewise, a prefix first: Python's order of
    ``bytes``), so that ``tsvectorrecv`` only checks it instead of sorting them. The reference of the C
    accelerator ``pilothouse._speedups.search_vector`` (the same bytes)."""
    lexemes = document_lexemes(doc)
    if max_lexeme_bytes != MAX_LEXEME_BYTES:
        lexemes = [w for w in lexemes if len(w) <= max_lexeme_bytes]
    return _binary_vector(lexemes)


def _binary_vector(lexemes: list[bytes]) -> bytes:
    if not lexemes:
        return NO_LEXEMES
    lexemes.sort()
    return struct.pack("!i", len(lexemes)) + _LEXEME_END.join(lexemes) + _LEXEME_END


_vector = document_vector if search_vector is None else search_vector


def pg_span_vector(record: SpanRecord) -> bytes:
    """The span's search vector (:func:`document_vector` of :func:`search_document`), made by the C
    accelerator where it was built."""
    return _vector(search_document(record), MAX_LEXEME_BYTES)


def pg_span_vector_text(record: SpanRecord) -> str:
    """The same vector as ``tsvector`` text (``'word' 'other'``; words hold no quote), for the
    row-by-row ``INSERT`` path."""
    return " ".join([f"'{w.decode()}'" for w in span_lexemes(record)])


# the fields of a trace's own document (PG_TRACE_DOCUMENT), as its row holds them (tags and metadata as
# their JSON text: the keys of the metadata are words of the trace's document, not of its spans')
TRACE_DOCUMENT_FIELDS = ("name", "input", "output", "metadata", "tags")
# ``traces`` with its search column (PostgreSQL's, as spans')
TRACES_WITH_SEARCH = Table(
    "traces", MetaData(), *(Column(c.name, c.type) for c in t.traces.c), Column("search", postgresql.TSVECTOR)
)
_NON_WORD = re.compile(r"[\W_]+")


def trace_lexemes(fields: Sequence[str | None]) -> list[bytes]:
    """The distinct words of a trace's own document (:data:`TRACE_DOCUMENT_FIELDS`, the values its row
    holds) in lower case, as UTF-8: what ``strip()`` of the traces' trigger's vector held
    (PG_TRACE_DOCUMENT: the fields joined by spaces, every run of other characters a space, the first
    :data:`MAX_DOCUMENT_CHARS` characters of that parsed)."""
    doc = " ".join(f or "" for f in fields)
    if len(doc) > MAX_DOCUMENT_CHARS:  # cut where PostgreSQL cuts: after the runs became one space each
        doc = _NON_WORD.sub(" ", doc)[:MAX_DOCUMENT_CHARS]
    if doc.isascii():
        words = set(doc.encode().translate(_ASCII_WORDS).split())
    else:
        words = {w.lower().encode() for w in set(_WORD.findall(doc))}
    return [w for w in words if len(w) <= MAX_LEXEME_BYTES]


def pg_trace_vector(fields: Sequence[str | None]) -> bytes:
    """A trace's own ``tsvector`` (:func:`trace_lexemes`) in binary form, as :func:`pg_span_vector`."""
    return _binary_vector(trace_lexemes(fields))


def pg_trace_vector_text(fields: Sequence[str | None]) -> str:
    """The same vector as ``tsvector`` text, for the row-by-row ``INSERT`` path."""
    return " ".join([f"'{w.decode()}'" for w in trace_lexemes(fields)])


def document(name: str | None, texts: Sequence[str | None], attributes: Any) -> str:
    """:func:`search_document` from a span's fields (the migration's backfill reads them from rows)."""
    parts = [name or ""]
    parts.extend(part for part in texts if part)
    if attributes:
        parts.extend(_strings(attributes))
    return " ".join(parts)[:MAX_DOCUMENT_CHARS]


def sqlite_backfill(conn: Connection) -> int:
    """SQLite: index every stored span into ``span_search`` (migrations 0022 and 0028), in key order,
    :data:`BACKFILL_BATCH` at a time; returns how many. The first span of each trace also carries the
    trace's fields (name, input, output, tags, metadata values), which the batch writer adds to the
    spans that carried them."""
    after, indexed = 0, 0
    while True:
        rows = conn.exec_driver_sql(
            "SELECT s.pk, s.name, s.input, s.output, s.status_message, s.attributes, "
            "s.pk = (SELECT min(f.pk) FROM spans f WHERE f.trace_pk = s.trace_pk), "
            "tr.name, tr.input, tr.output, tr.tags, tr.metadata "
            "FROM spans s JOIN traces tr ON tr.pk = s.trace_pk WHERE s.pk > ? ORDER BY s.pk LIMIT ?",
            (after, BACKFILL_BATCH),
        ).all()
        if not rows:
            return indexed
        docs = []
        for pk, name, input_, output, message, attributes, first, *trace in rows:
            attrs = unpack(attributes)
            values: list[object] = [orjson.loads(attrs) if attrs else None]
            texts = [unpack(input_), unpack(output), message]
            if first:
                t_name, t_input, t_output, tags, metadata = trace
                texts += [t_name, unpack(t_input), unpack(t_output)]
                values += [orjson.loads(tags) if tags else None, orjson.loads(metadata) if metadata else None]
            docs.append((pk, document(name, texts, values)))
        conn.exec_driver_sql("INSERT INTO span_search(rowid, body) VALUES (?, ?)", docs)
        after, indexed = rows[-1][0], indexed + len(rows)


def query_words(search: str) -> tuple[list[str], bool]:
    """The words of a search text (lower case) and whether the last is a prefix (a trailing ``*``).
    Raises :class:`InvalidQuery` for a text without a word, or one with too many or too long words."""
    words = [w.lower() for w in _WORD.findall(search)]
    if not words:
        raise InvalidQuery("search text needs a word (letters or digits)")
    if len(words) > MAX_QUERY_WORDS:
        raise InvalidQuery(f"search text has more than {MAX_QUERY_WORDS} words")
    if any(len(w) > MAX_WORD_CHARS for w in words):
        raise InvalidQuery(f"a search word is longer than {MAX_WORD_CHARS} characters")
    if "*" in search.rstrip().rstrip("*"):  # it would be ignored: say so rather than match whole words
        raise InvalidQuery("only the last word can be a prefix: put the * at the end of the search text")
    return words, search.rstrip().endswith("*")


def fts5_query(words: Sequence[str], prefix: bool) -> str:
    """An FTS5 MATCH expression: every word (quoted, so never an operator), the last a prefix if asked."""
    quoted = [f'"{w}"' for w in words]
    if prefix:
        quoted[-1] += "*"
    return " ".join(quoted)


def pg_query(words: Sequence[str], prefix: bool) -> str:
    """A ``to_tsquery('simple', ...)`` text: every word, the last a prefix if asked (words are letters and
    digits only, so nothing in them is tsquery syntax)."""
    terms = list(words)
    if prefix:
        terms[-1] += ":*"
    return " & ".join(terms)


# -- choosing a plan ---------------------------------------------------------------------------------


class Plan(Enum):
    """How a search reads the index (see the module's doc)."""

    KEYS = "keys"  # few spans match: their traces, read by key, then filtered and sorted as any page
    LIST = "list"  # the matching spans' keys, read once; the page walks the traces in order and asks it
    PROBE = "probe"  # the page walks the traces in order and asks the index about each one's spans


def plan_costs(
    matches: int, spans: int, probe_terms: int | None, page: int, costs: Mapping[str, int] = SQLITE_COSTS
) -> dict[Plan, int]:
    """What each plan would cost (units of ``costs``: :data:`SQLITE_COSTS`, :data:`PG_COSTS`) for
    ``matches`` matching spans out of about ``spans``, for a page of ``page`` rows; ``probe_terms``: the
    index terms a probe looks up (None: the search is not to be probed, a prefix of many words). A page
    walks about ``page * spans / matches`` spans before it is full. A database without a "list" cost
    has no such plan."""
    walked = page * spans // max(1, matches)
    found = {Plan.KEYS: costs["key"] * matches}
    if "list" in costs:
        found[Plan.LIST] = costs["list"] * matches + costs["walk"] * walked
    if probe_terms is not None:
        found[Plan.PROBE] = (costs["walk"] + costs["probe"] * probe_terms) * walked
    return found


def choose_plan(
    matches: int, spans: int, probe_terms: int | None, page: int, costs: Mapping[str, int] = SQLITE_COSTS
) -> Plan:
    """The cheapest plan (see :func:`plan_costs`; ``matches`` counted up to :func:`count_bound`)."""
    found = plan_costs(matches, spans, probe_terms, page, costs)
    return min(found, key=found.__getitem__)


def count_bound(
    spans: int, probe_terms: int | None, page: int, costs: Mapping[str, int] = SQLITE_COSTS
) -> int:
    """How far to count matching spans: past this many, the choice of plan no longer changes. Each
    plan's cost is ``a * matches + b * page * spans / matches``; two plans cross where
    ``matches = sqrt((b1 - b2) * page * spans / (a2 - a1))``: the bound is the last crossing."""
    reach = page * max(1, spans)
    lines = [(costs["key"], 0)]  # (a, b) of each plan
    if "list" in costs:
        lines.append((costs["list"], costs["walk"]))
    if probe_terms is not None:
        lines.append((0, costs["walk"] + costs["probe"] * probe_terms))
    crossings = [
        isqrt((b2 - b1) * reach // (a1 - a2)) for a1, b1 in lines for a2, b2 in lines if a1 > a2 and b2 > b1
    ]
    return max(crossings, default=0) + 1


def search_condition(
    conn: Connection, dialect: str, search: str, page: int = 50
) -> tuple[ColumnElement[bool], bool]:
    """The WHERE condition on ``traces`` (unaliased) for traces with a span that holds every word of
    ``search``, and whether it names the traces by key (SQLite, few matches: the caller then keeps
    SQLite from walking the time index for the order); reads the index to choose the plan (see the
    module's doc). ``page``: the rows the caller wants (the cost of walking depends on it)."""
    words, prefix = query_words(search)
    if dialect == "sqlite":
        return _sqlite_condition(conn, words, prefix, page)
    return _pg_condition(conn, words, prefix, page)


# -- SQLite --------------------------------------------------------------------------------------------

# the index's words, one row per (word, span), read in word order: the words that start with a prefix
# are found by seeking past each one (a look-up each, not a read of every span that holds it)
_VOCABULARY = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.span_search_words USING fts5vocab(main, span_search, instance)"
)
_NEXT_WORD = "SELECT term FROM temp.span_search_words WHERE term >= ? AND term < ? LIMIT 1"
_ASCII_WORD = re.compile(r"[a-z0-9]+")


def prefix_words(conn: Connection, prefix: str, most: int) -> list[str]:
    """SQLite: up to ``most`` words of the index that start with ``prefix`` (an ASCII word, which the
    index's tokenizer keeps as it is), in order."""
    conn.exec_driver_sql(_VOCABULARY)
    found: list[str] = []
    low, high = prefix, prefix + "\U0010ffff"
    while len(found) < most:
        word = conn.exec_driver_sql(_NEXT_WORD, (low, high)).scalar()
        if word is None:
            break
        found.append(word)
        low = word + "\x01"  # the next word after it (no word holds a control character)
    return found


def fts5_expression(conn: Connection, words: list[str], prefix: bool) -> tuple[str | None, int | None]:
    """The MATCH expression and the number of index terms a probe of it looks up (None: not to be
    probed). A prefix becomes the words it stands for when there are few (FTS5 would merge every
    matching word's list of spans on each probe); (None, 0) when no word has the prefix."""
    if prefix and len(words[-1]) in PREFIX_CHARS:
        # the index keeps a list of its own for each prefix this short (migration 0028): one term
        return fts5_query(words, prefix), len(words)
    if not prefix or not _ASCII_WORD.fullmatch(words[-1]):
        # a prefix with other letters is left to FTS5, whose tokenizer folds accents
        return fts5_query(words, prefix), None if prefix else len(words)
    expanded = prefix_words(conn, words[-1], PROBE_TERMS + 1)
    if not expanded:
        return None, 0
    if len(words) - 1 + len(expanded) > PROBE_TERMS:
        return fts5_query(words, prefix), None
    alternatives = " OR ".join(f'"{w}"' for w in expanded)
    return " AND ".join([*(f'"{w}"' for w in words[:-1]), f"({alternatives})"]), len(words) - 1 + len(
        expanded
    )


def _bound_keys_allowed(conn: Connection) -> int:
    """How many trace keys the by-key plan may bind on this SQLite connection: its limit of bound
    parameters (32,766 in many builds, 250,000 in others) less room for the rest of the list's query."""
    driver = conn.connection.driver_connection
    limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if driver is not None else 32_766
    return int(limit) - 100


def _sqlite_condition(
    conn: Connection, words: list[str], prefix: bool, page: int
) -> tuple[ColumnElement[bool], bool]:
    q, terms = fts5_expression(conn, words, prefix)
    if q is None:
        return false(), False
    spans = conn.exec_driver_sql("SELECT coalesce(max(pk), 0) FROM spans").scalar_one()
    # counted exactly up to where reading by key stops being the cheapest (cheap: it stops there)
    found = conn.exec_driver_sql(
        "SELECT count(*) FROM (SELECT 1 FROM span_search WHERE span_search MATCH ? LIMIT ?)",
        (q, count_bound(spans, None, page)),
    ).scalar_one()
    if terms is not None and found >= count_bound(spans, None, page):
        # past it, list or probe: the newest SAMPLE_SPANS spans (where a page of the newest traces
        # walks) say how common the words are, instead of counting up to ~170,000 of them
        sampled = conn.exec_driver_sql(
            "SELECT count(*) FROM span_search WHERE span_search MATCH ? AND rowid > ?",
            (q, spans - SAMPLE_SPANS),
        ).scalar_one()
        found = max(found, sampled * spans // SAMPLE_SPANS)
    plan = choose_plan(found, spans, terms, page)
    if plan is Plan.KEYS:
        # the keys as a list, not a subquery: SQLite then reads those traces by key and sorts
        # them, instead of walking the whole range in order and asking the subquery about each
        holders = conn.exec_driver_sql(
            "SELECT DISTINCT s.trace_pk FROM span_search JOIN spans s ON s.pk = span_search.rowid "
            "WHERE span_search MATCH ?",
            (q,),
        ).scalars()
        keys = list(holders)
        if len(keys) <= _bound_keys_allowed(conn):
            return (t.traces.c.pk.in_(keys) if keys else false()), True
        plan = Plan.LIST  # one bound parameter per key would pass SQLite's limit: a 500 otherwise
    if plan is Plan.LIST:
        # the list is read once (SQLite keeps it as a temporary index: "LIST SUBQUERY"); each candidate
        # trace's span keys come from the (trace_pk, span_id) index ("+": not a look-up by span key)
        return text(
            "EXISTS (SELECT 1 FROM spans s WHERE s.trace_pk = traces.pk AND +s.pk IN "
            "(SELECT rowid FROM span_search WHERE span_search MATCH :ph_fts))"
        ).bindparams(ph_fts=q), False  # type: ignore[return-value]
    # a probe per candidate trace: its spans (the (trace_pk, span_id) index), each looked up in
    # the index by key (rowid = ? AND MATCH)
    return text(
        "EXISTS (SELECT 1 FROM spans s JOIN span_search ON span_search.rowid = s.pk "
        "WHERE s.trace_pk = traces.pk AND span_search MATCH :ph_fts)"
    ).bindparams(ph_fts=q), False  # type: ignore[return-value]


# -- PostgreSQL ----------------------------------------------------------------------------------------


def _pg_condition(
    conn: Connection, words: list[str], prefix: bool, page: int
) -> tuple[ColumnElement[bool], bool]:
    q = pg_query(words, prefix)
    # An estimate of the matching spans from the statistics of the vectors' most common words: a common
    # word is probed without counting, since GIN counts by reading every match (~90 ms for a word on
    # half of a million spans, more for a prefix). The planner's estimate of a prefix is a fixed guess.
    spans = _pg_span_count(conn)
    if prefix and len(words) == 1:
        estimate = _pg_prefix_estimate(conn, words[0])
    elif prefix:
        estimate = 0  # counted
    else:
        plan_json = conn.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM spans WHERE search @@ to_tsquery('simple', %s)", (q,)
        ).scalar_one()
        explained = orjson.loads(plan_json) if isinstance(plan_json, str | bytes) else plan_json
        estimate = int(explained[0]["Plan"]["Plan Rows"])
    bound = count_bound(spans, len(words), page, PG_COSTS)
    found = bound
    if estimate < bound:
        found = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM spans WHERE search @@ to_tsquery('simple', %s) "
            "LIMIT %s) x) + (SELECT count(*) FROM (SELECT 1 FROM traces "
            "WHERE search @@ to_tsquery('simple', %s) LIMIT %s) y)",
            (q, bound, q, bound),
        ).scalar_one()
    if choose_plan(found, spans, len(words), page, PG_COSTS) is Plan.KEYS:
        # the keys as an array: the planner then reads those traces by key (a subquery's estimate is
        # a guess, and a guess of thousands makes it hash-join every trace of the project)
        keys = conn.exec_driver_sql(
            "SELECT trace_pk FROM spans WHERE search @@ to_tsquery('simple', %s) "
            "UNION SELECT pk FROM traces WHERE search @@ to_tsquery('simple', %s)",
            (q, q),
        ).scalars()
        return t.traces.c.pk == any_(
            bindparam("ph_keys", list(keys), type_=postgresql.ARRAY(BigInteger))
        ), False
    # a probe per trace through the (trace_pk, span_id) index, as for the model filter (store/sql.py);
    # no span starts before its trace, which prunes the older partitions of the spans
    return text(
        "(traces.search @@ to_tsquery('simple', :ph_ts) OR (SELECT 1 FROM spans s "
        "WHERE s.trace_pk = traces.pk AND s.start_ns >= traces.start_ns "
        "AND s.search @@ to_tsquery('simple', :ph_ts) LIMIT 1) IS NOT NULL)"
    ).bindparams(ph_ts=q), False  # type: ignore[return-value]


def _pg_prefix_estimate(conn: Connection, prefix: str) -> int:
    """About how many spans hold a word that starts with ``prefix``, from the most common words of
    each partition's vectors (0 when none of them has it: the prefix is then counted)."""
    estimate = conn.exec_driver_sql(
        "SELECT coalesce(sum(c.reltuples * m.f), 0)::bigint FROM pg_stats s "
        "JOIN pg_namespace n ON n.nspname = s.schemaname "
        "JOIN pg_class c ON c.relname = s.tablename AND c.relnamespace = n.oid, "
        "unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS m(e, f) "
        "WHERE s.attname = 'search' AND starts_with(m.e, %s) "
        "AND c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'spans'::regclass)",
        (prefix,),
    ).scalar_one()
    return int(estimate)


def _pg_span_count(conn: Connection) -> int:
    """About how many spans are stored: the statistics' count (a partitioned table's is the sum of its
    partitions'; none before the first analysis)."""
    count = conn.exec_driver_sql(
        "SELECT coalesce((SELECT sum(greatest(c.reltuples, 0)) FROM pg_inherits i JOIN pg_class c "
        "ON c.oid = i.inhrelid WHERE i.inhparent = 'spans'::regclass), "
        "(SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'spans'::regclass))::bigint"
    ).scalar_one()
    return int(count)

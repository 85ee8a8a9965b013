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
  ``traces.search`` for a trace's own fields (name, input, output, tags, metadata), kept by a
  ``BEFORE INSERT OR UPDATE`` trigger (a trace's row is merged as its spans arrive).

Both split text the same way: a word is a run of letters and digits (``sim-1`` is ``sim`` and ``1``;
``foo_bar`` is ``foo`` and ``bar``). A query is the words of the search text, all of which must occur in
one span; a trailing ``*`` makes the last word a prefix. Searches are not capped: a word is looked up in
the index. :func:`search_condition` picks how: when few spans hold the words, the traces that hold them are
read from the index and filtered and ordered as any page; when many do (a common word), the page walks
the traces in order and asks the index about each one's spans, which fills a page after a few traces.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    and_,
    case,
    column,
    false,
    func,
    literal,
    text,
    true,
)
from sqlalchemy.dialects import postgresql

from pilothouse.domain.queries import InvalidQuery
from pilothouse.domain.traces import SpanRecord
from pilothouse.store import tables as t
from pilothouse.store.rows import ZSTD_MAGIC, unpack

MAX_DOCUMENT_CHARS = 200_000  # of a span's text that is indexed (PostgreSQL's tsvector holds < 1 MB)
MAX_QUERY_WORDS = 16
MAX_WORD_CHARS = 100
# A query whose words occur in fewer spans than this reads its traces from the index; more: see above.
FEW_MATCHES = 5_000

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
_NO_LEXEMES = struct.pack("!i", 0)
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


def span_lexemes(record: SpanRecord) -> list[bytes]:
    """The distinct words of :func:`search_document` (split as :func:`query_words` splits a search), in
    lower case, as UTF-8, in no order: what ``strip(to_tsvector('simple', words))`` holds (PostgreSQL
    sorts them as it reads a vector). ASCII documents (most) take a translation table instead of the
    regular expression."""
    doc = search_document(record)
    if doc.isascii():
        words = set(doc.encode().translate(_ASCII_WORDS).split())
        if len(doc) <= MAX_LEXEME_BYTES:  # no word can be too long
            return list(words)
    else:
        words = {w.lower().encode() for w in set(_WORD.findall(doc))}
    return [w for w in words if len(w) <= MAX_LEXEME_BYTES]


def pg_span_vector(record: SpanRecord) -> bytes:
    """The span's ``tsvector`` in PostgreSQL's binary form (``tsvectorrecv``, which sorts the lexemes):
    the number of lexemes, then each lexeme NUL-terminated and followed by its number of positions, a
    16-bit 0; for the writer's binary ``COPY``."""
    lexemes = span_lexemes(record)
    if not lexemes:
        return _NO_LEXEMES
    return struct.pack("!i", len(lexemes)) + _LEXEME_END.join(lexemes) + _LEXEME_END


def pg_span_vector_text(record: SpanRecord) -> str:
    """The same vector as ``tsvector`` text (``'word' 'other'``; words hold no quote), for the
    row-by-row ``INSERT`` path."""
    return " ".join([f"'{w.decode()}'" for w in span_lexemes(record)])


def document(name: str | None, texts: Sequence[str | None], attributes: Any) -> str:
    """:func:`search_document` from a span's fields (the migration's backfill reads them from rows)."""
    parts = [name or ""]
    parts.extend(part for part in texts if part)
    if attributes:
        parts.extend(_strings(attributes))
    return " ".join(parts)[:MAX_DOCUMENT_CHARS]


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


def search_condition(conn: Connection, dialect: str, search: str) -> tuple[ColumnElement[bool], bool]:
    """The WHERE condition on ``traces`` (unaliased) for traces with a span that holds every word of
    ``search``, and whether it names the traces by key (SQLite, few matches: the caller then keeps
    SQLite from walking the time index for the order); reads the index once to choose the plan (see
    the module's doc)."""
    words, prefix = query_words(search)
    if dialect == "sqlite":
        q = fts5_query(words, prefix)
        found = conn.exec_driver_sql(
            "SELECT count(*) FROM (SELECT 1 FROM span_search WHERE span_search MATCH ? LIMIT ?)",
            (q, FEW_MATCHES),
        ).scalar_one()
        if found < FEW_MATCHES:
            # the keys as a list, not a subquery: SQLite then reads those traces by key and sorts
            # them, instead of walking the whole range in order and asking the subquery about each
            holders = conn.exec_driver_sql(
                "SELECT DISTINCT s.trace_pk FROM span_search JOIN spans s ON s.pk = span_search.rowid "
                "WHERE span_search MATCH ?",
                (q,),
            ).scalars()
            keys = list(holders)
            return (t.traces.c.pk.in_(keys) if keys else false()), True
        # a probe per candidate trace: its spans (the (trace_pk, span_id) index), each looked up in
        # the index by key (rowid = ? AND MATCH)
        return text(
            "EXISTS (SELECT 1 FROM spans s JOIN span_search ON span_search.rowid = s.pk "
            "WHERE s.trace_pk = traces.pk AND span_search MATCH :ph_fts)"
        ).bindparams(ph_fts=q), False  # type: ignore[return-value]
    q = pg_query(words, prefix)
    found = conn.exec_driver_sql(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM spans WHERE search @@ to_tsquery('simple', %s) "
        "LIMIT %s) x) + (SELECT count(*) FROM (SELECT 1 FROM traces WHERE search @@ to_tsquery('simple', %s) "
        "LIMIT %s) y)",
        (q, FEW_MATCHES, q, FEW_MATCHES),
    ).scalar_one()
    if found < FEW_MATCHES:
        pg_holders = (
            text(
                "SELECT trace_pk FROM spans WHERE search @@ to_tsquery('simple', :ph_ts) "
                "UNION SELECT pk FROM traces WHERE search @@ to_tsquery('simple', :ph_ts)"
            )
            .bindparams(ph_ts=q)
            .columns(column("trace_pk", Integer))
        )
        return t.traces.c.pk.in_(pg_holders), False
    # a probe per trace through the (trace_pk, span_id) index, as for the model filter (store/sql.py)
    return text(
        "(traces.search @@ to_tsquery('simple', :ph_ts) OR (SELECT 1 FROM spans s "
        "WHERE s.trace_pk = traces.pk AND s.search @@ to_tsquery('simple', :ph_ts) LIMIT 1) IS NOT NULL)"
    ).bindparams(ph_ts=q), False  # type: ignore[return-value]

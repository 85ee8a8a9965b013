"""Compiled accelerators, behind one seam.

Each accelerator is a C extension in this package that does what a pure-Python reference elsewhere
does, with the same results and less CPU. The reference stays where its subject lives, is the
fallback whenever the accelerator is missing, and is what the accelerator is tested against
(``tests/unit/test_speedups.py`` runs both on the same inputs).

- ``otlp_reader`` (``_otlp_reader.c``) reads OTLP/protobuf trace exports into spans. Reference:
  ``tracing.otlp.parse_protobuf`` then ``iter_protobuf`` (upb's message objects, read by Python).
  Chosen in ``tracing.otlp.check_protobuf`` and ``iter_checked``.
- ``sort_attributes`` (``_attributes.c``) routes a span's attributes to the normaliser's slots and
  groups. Reference: ``tracing.conventions._sort_attributes``. Chosen in ``normalise_span``.
- ``search_vector`` (``_search_words.c``) makes a span's search words into PostgreSQL's binary
  ``tsvector``. Reference: ``store.search.document_vector``. Chosen in ``store.search.pg_span_vector``.

Why: all sit on the ingest path, once per span or once per attribute, where the interpreter's own
overhead is most of the cost. Measure an accelerator against its reference with
``python benchmarks/speedups.py``, and the whole ingest path with ``python benchmarks/ingest.py``.

Built by ``hatch_build.py`` when the package is installed (``pip install -e .`` or a wheel), one
extension per ``*.c`` file here; without a C compiler the install goes on without them. Chosen once,
at import: each name below is the loaded extension, or None, and its user then calls the reference.
``unavailable`` says why one is None. ``PILOTHOUSE_NO_SPEEDUPS=1`` in the environment (read by the
config package, :func:`pilothouse.config.speedups_disabled`) turns them all off, to measure or rule out
the C.

This package imports only the config package: the classes and tables an accelerator needs are passed
in by its user.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pilothouse.config import speedups_disabled

__all__ = [
    "AttributeSorter",
    "OtlpReader",
    "SearchVector",
    "otlp_reader",
    "search_vector",
    "sort_attributes",
    "unavailable",
]

_Span = TypeVar("_Span")
_Route = tuple[int, str, int]  # (where, name, n): see conventions._route


class OtlpReader(Protocol):
    """``_otlp_reader.c``: reads OTLP/protobuf trace exports as ``tracing.otlp``'s upb path does.
    Both functions raise ValueError for a body they do not take (the caller then asks upb)."""

    def check(self, body: bytes, /) -> tuple[int, int, int, str | None]:
        """Check a whole export (without holding the GIL): spans accepted, spans rejected (times
        outside 1970-2200), attribute values, the first rejection's reason."""

    def decode(
        self,
        body: bytes,
        raw_span: type[_Span],
        raw_event: type[Any],
        max_attributes: int,
        max_value_bytes: int,
        max_key_bytes: int = ...,
        /,
    ) -> list[_Span]:
        """The export's accepted spans, made as ``raw_span`` and ``raw_event`` instances (slots
        classes), attributes within the limits (``tracing.otlp.DecodeLimits``; keys unlimited when
        ``max_key_bytes`` is not given). A span that ends before it starts ends at its start, marked
        ``pilothouse.clamped_end_ns``."""


class AttributeSorter(Protocol):
    """``_attributes.c``: ``conventions._sort_attributes(attrs)``, given the route table and the
    function that makes (and remembers) a missing route."""

    def __call__(
        self, attrs: dict[str, Any], routes: dict[str, _Route], route: Callable[[str], _Route], /
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]: ...


class SearchVector(Protocol):
    """``_search_words.c``: ``store.search.document_vector(document, max_lexeme_bytes)``, the distinct
    lower-case words of a document as a binary ``tsvector``, in PostgreSQL's order (bytewise, a prefix
    first), as the reference gives them: ``tsvectorrecv`` then only checks the order."""

    def __call__(self, document: str, max_lexeme_bytes: int, /) -> bytes: ...


unavailable: dict[str, str] = {}  # extension -> why it is not in use
_disabled = speedups_disabled()


def _load(extension: str) -> Any:
    """The compiled module ``extension`` of this package, or None (with the reason in ``unavailable``)."""
    if _disabled:
        unavailable[extension] = "turned off by PILOTHOUSE_NO_SPEEDUPS"
        return None
    try:
        return importlib.import_module(f"{__name__}.{extension}")
    except ImportError as exc:  # not built: no C compiler at install
        unavailable[extension] = str(exc)
        return None


otlp_reader: OtlpReader | None = _load("_otlp_reader")
_attributes = _load("_attributes")
sort_attributes: AttributeSorter | None = None if _attributes is None else _attributes.sort_attributes
_search_words = _load("_search_words")
search_vector: SearchVector | None = None if _search_words is None else _search_words.tsvector

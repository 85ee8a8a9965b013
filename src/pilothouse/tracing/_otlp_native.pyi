"""Types of the C reader of OTLP/protobuf trace exports (``_otlp_native.c``)."""

from collections.abc import Callable
from typing import Any

def count(body: bytes) -> int: ...
def decode(body: bytes, raw_span: type[Any], raw_event: type[Any], /) -> list[Any]: ...
def sort_attributes(
    attrs: dict[str, Any],
    routes: dict[str, tuple[int, str, int]],
    route: Callable[[str], tuple[int, str, int]],
    /,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]: ...

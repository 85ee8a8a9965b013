"""JSON mode on the local model, by constrained decoding: at each step every token that cannot continue
a JSON text valid against the schema is masked out, so the answer parses (and validates) by
construction, however small the model. ``response_format`` ``{"type": "json_object"}`` is the schema
``{"type": "object"}``; ``{"type": "json_schema", "json_schema": {"schema": ...}}`` is its schema.

The grammar engine is llguidance (a Rust library, in the ``local`` extra): it compiles a JSON schema
into a grammar in well under a millisecond and computes a step's token mask in about as long, and it
refuses what it cannot enforce (``uniqueItems``, ``not``, ``if``/``then``, an unknown ``format``, ...)
instead of ignoring it, so such a schema is a 400 that names the keywords, never an answer that only
looks conforming. The answer is compact (``", "`` and ``": "`` separators, no free whitespace): a
small model given free whitespace may spend its tokens on blank lines."""

from __future__ import annotations

import importlib
from typing import Any

from pilothouse.providers.base import ProviderError

INSTALL_HINT = "pip install llguidance"
_COMPACT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
# What a schema may weigh before llguidance sees it. Its compiler recurses on the native stack: a chain
# of a few thousand "$ref"s (100 KB of JSON) overflows it and kills the whole server process, and its
# time grows with the schema (10,000 properties: seconds of CPU, once to check and once per choice).
# OpenAI's structured outputs allow 5,000 properties and 10 levels of nesting; these leave room above.
MAX_SCHEMA_DEPTH = 128  # objects and arrays nested, counting each "$ref" followed as one level more
MAX_SCHEMA_VALUES = 20_000  # every value in the schema (objects, arrays, strings, numbers ...)


def _bad(message: str, code: str | None = None) -> ProviderError:
    return ProviderError(400, message, kind="invalid_request_error", code=code)


def _llguidance() -> Any:
    try:
        return importlib.import_module("llguidance")
    except ImportError:
        raise _bad(
            f"response_format (JSON mode) on the local model needs the llguidance package: {INSTALL_HINT}",
            "unsupported_parameter",
        ) from None


def response_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the answer must follow, from ``response_format`` (None: free text)."""
    fmt = request.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad('response_format must be an object such as {"type": "json_object"}')
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ANY_OBJECT
    if kind != "json_schema":
        raise _bad(f"response_format.type must be text, json_object or json_schema, not {kind!r}")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad("response_format.json_schema must be an object with a schema")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise _bad("response_format.json_schema.schema must be a JSON schema (an object)")
    return schema


def _pointer(root: dict[str, Any], ref: str) -> Any:
    """The subschema a local ``$ref`` (``#/$defs/name``) points to; None for any other reference."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def check_schema_size(schema: dict[str, Any]) -> None:
    """A 400 for a schema deeper than :data:`MAX_SCHEMA_DEPTH` (nesting, with every local ``$ref``
    followed: a reference cycle, a recursive schema, counts once) or with more than
    :data:`MAX_SCHEMA_VALUES` values. Iterative: the schema itself may be nested ~1,000 deep."""
    values = 0
    depth: dict[int, int] = {}  # id(container) -> the deepest chain below it, once known
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(schema, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            children = _children(schema, node)
            below = max((depth.get(id(c), 0) for c in children), default=0)
            depth[id(node)] = below + 1
            if below + 1 > MAX_SCHEMA_DEPTH:
                raise _bad(
                    f"response_format.json_schema.schema is nested deeper than {MAX_SCHEMA_DEPTH} "
                    "levels (objects and arrays, with each $ref followed)",
                    "schema_too_large",
                )
            continue
        if id(node) in depth or id(node) in on_path:  # seen, or a cycle: recursion is allowed
            continue
        values += 1 + (len(node) if isinstance(node, (dict, list)) else 0)
        if values > MAX_SCHEMA_VALUES:
            raise _bad(
                f"response_format.json_schema.schema has more than {MAX_SCHEMA_VALUES} values: make "
                "it smaller for the local model",
                "schema_too_large",
            )
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(schema, node) if id(c) not in on_path)


def _children(root: dict[str, Any], node: Any) -> list[Any]:
    """The containers directly in ``node``, and the target of its ``$ref``."""
    items = node.values() if isinstance(node, dict) else node
    children = [c for c in items if isinstance(c, (dict, list))]
    if isinstance(node, dict) and isinstance(node.get("$ref"), str):
        target = _pointer(root, node["$ref"])
        if isinstance(target, (dict, list)):
            children.append(target)
    return children


def response_grammar(request: dict[str, Any]) -> str | None:
    """The llguidance grammar that enforces ``request``'s ``response_format`` (None: free text); a 400
    naming what the schema asks for that cannot be enforced."""
    schema = response_schema(request)
    if schema is None:
        return None
    check_schema_size(schema)
    matcher = _llguidance().LLMatcher
    try:
        grammar: str = matcher.grammar_from_json_schema(schema, overrides=_COMPACT)
    except ValueError as exc:
        raise _bad(f"response_format.json_schema.schema is not a usable JSON schema: {exc}") from None
    failed, messages = matcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise _bad(
            "response_format.json_schema.schema uses what the local model cannot enforce: "
            + "; ".join(messages),
            "unsupported_schema_feature",
        )
    return grammar


def json_tokenizer(tokenizer: Any, eos_ids: set[int]) -> Any:
    """The model's tokenizer as llguidance sees it (about a second to build: cache it per model)."""
    hf = importlib.import_module("llguidance.hf")
    return hf.from_tokenizer(tokenizer, eos_token=sorted(eos_ids) or None)


class ConstrainedRows:
    """A transformers logits processor for a batch: rows with a grammar get every token that cannot
    continue it masked out; rows without one (None) are left alone. Each call first feeds each
    grammar the token its row sampled last."""

    def __init__(self, llg_tokenizer: Any, grammars: list[str | None], eos_ids: set[int]) -> None:
        llguidance = _llguidance()
        self.torch = importlib.import_module("torch")
        self.matchers = [
            None if grammar is None else llguidance.LLMatcher(llg_tokenizer, grammar, log_level=0)
            for grammar in grammars
        ]
        self.vocab = int(llg_tokenizer.vocab_size)
        self.eos = sorted(eos_ids)
        self.shifts = self.torch.arange(32, dtype=self.torch.int32)
        self.started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self.torch
        last = input_ids[:, -1].tolist() if self.started else None
        self.started = True
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            if last is not None and not matcher.is_error():
                matcher.consume_token(last[row])
            if matcher.is_error():  # a row past its end (padding after its EOS): only EOS again
                end = scores[row, self.eos].clone()
                scores[row, :] = float("-inf")
                scores[row, self.eos] = end
                continue
            words = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.int32)
            allowed = ((words.unsqueeze(1) >> self.shifts) & 1).reshape(-1)[: self.vocab].bool()
            scores[row, : self.vocab].masked_fill_(~allowed, float("-inf"))
            scores[row, self.vocab :] = float("-inf")
        return scores

"""Secrets kept out of what is shown or stored: the password of a URL's userinfo
(``http://bob:HUNTER2@host`` -> ``http://bob:<redacted>@host``), the values of request headers, and
in free text (what a plugin scorer wrote) API keys of known shapes, ``password=...`` assignments and
bearer tokens (:func:`secret_spans`, which the PII guardrail uses too). What runs keeps the real
values in memory; what renders, logs, labels or stores passes through here."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

REDACTED = "<redacted>"

# scheme://userinfo@ : the userinfo is everything up to the last '@' before the path
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")
# the value of a query parameter of a URL (?api_key=..., &token=...): as likely a key as anything else
_QUERY_VALUE = re.compile(r"(?P<key>[?&][^=&#\s]+)=(?P<value>[^&#\s]*)")


# a key (of a scorer's details, a span attribute's name) names a secret when, lowercased and with
# everything but letters and digits left out, it holds one of these (``X-Api-Key``, ``OPENAI_API_KEY``,
# ``aws_access_key_id``, ``client_secret``, ``Proxy-Authorization``, ``Set-Cookie``) ...
_SECRET_PARTS = (
    "apikey",
    "accesskey",
    "privatekey",
    "signingkey",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "authorization",
    "credential",
    "cookie",
    "bearer",
    "header",  # an HTTP header's value (``http.request.header.x-api-key``), or all of them
)
# ... or its last word is ``token`` (``access_token``, ``refreshToken``, ``X-Auth-Token``; not
# ``input_tokens``, ``token_count`` or ``time_to_first_token``), or it is ``auth``
_COUNTED_TOKEN = frozenset({"first", "last", "next", "input", "output", "prompt", "completion", "per", "max"})
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)  # the same few keys, score after score, span after span
def names_a_secret(key: str) -> bool:
    """True when a key (of a scorer's details, of a span's attributes) names a secret, whatever its
    casing or separators: it holds ``apikey``, ``password``, ``secret``, ``authorization``,
    ``cookie``, ``header``, ... once separators are left out, or its last word is ``token`` (not a
    count's: ``first_token``, ``output_token``), or it is ``auth``."""
    words = [w for w in _NOT_WORD.split(_CAMEL_HUMP.sub("_", key).lower()) if w]
    if not words:
        return False
    joined = "".join(words)
    if words[-1] == "token":
        return len(words) == 1 or words[-2] not in _COUNTED_TOKEN
    return joined == "auth" or any(part in joined for part in _SECRET_PARTS)


# query parameters that carry a credential without saying so in a secret's words (Google's ?key=,
# signed URLs' signatures, OAuth's code)
_QUERY_SECRETS = frozenset(
    {"key", "sig", "signature", "code", "x-amz-signature", "x-amz-credential", "x-goog-signature"}
)


def redact_query(query: str, every_value: bool = True) -> str:
    """A URL's query string (``a=1&api_key=X``, with or without its ``?``) with every value replaced,
    or (``every_value=False``) only the values of parameters whose name says they hold a secret
    (:func:`names_a_secret`, ``key``, ``sig``, ``signature``, ``code``, ...)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("key")
        if not every_value and not (names_a_secret(name) or name[1:].lower() in _QUERY_SECRETS):
            return match.group()
        return f"{name}={REDACTED}"

    redacted = _QUERY_VALUE.sub(replace, "?" + query.removeprefix("?"))
    return redacted if query.startswith("?") else redacted[1:]


def redact_url(url: str, every_query_value: bool = True) -> str:
    """``url`` with the password of its userinfo replaced (the user name kept: it says which account);
    a userinfo without a password (``http://TOKEN@host``) may itself be the secret and is replaced
    whole; so are the values of its query parameters (``?api_key=...``; with
    ``every_query_value=False`` only those :func:`redact_query` reads as secrets), names kept. Text
    that is not such a URL comes back unchanged."""

    def replace(match: re.Match[str]) -> str:
        user, colon, _password = match.group("userinfo").partition(":")
        kept = f"{user}:{REDACTED}" if colon else REDACTED
        return f"{match.group('scheme')}{kept}@"

    if "://" in url and "?" in url:
        head, query = url.split("?", 1)
        url = f"{head}?{redact_query(query, every_query_value)}"
    if "@" not in url:
        return url
    return _USERINFO.sub(replace, url)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Header names kept, every value replaced (a header of a target or an upstream is as likely an
    API key as anything else), except ``${ENV}`` references, which name a secret without holding it."""
    return {
        str(name): value if isinstance(value, str) and value.startswith("${") else REDACTED
        for name, value in headers.items()
    }


# Known key shapes, each with a literal its text must contain (a cheap test that skips the pattern)
_KEY_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (literal, re.compile(pattern))
    for literal, pattern in (
        ("sk-", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,200}"),  # OpenAI, Anthropic
        ("ph-", r"\bph-[A-Za-z0-9_-]{40,60}"),  # Pilothouse keys
        ("AKIA", r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
        ("ASIA", r"\bASIA[0-9A-Z]{16}\b"),
        ("_", r"\bgh[pousr]_[A-Za-z0-9]{36,255}"),  # GitHub tokens
        ("github_pat_", r"\bgithub_pat_[A-Za-z0-9_]{22,255}"),
        ("xox", r"\bxox[abprs]-[A-Za-z0-9-]{10,200}"),  # Slack
        ("AIza", r"\bAIza[0-9A-Za-z_-]{35}"),  # Google API keys
        ("k_", r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,200}"),  # Stripe
        ("eyJ", r"\beyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}"),  # JWTs
        ("-----BEGIN", r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----"),
    )
)
# name = value where the name says it is a secret (an Authorization header's "Bearer TOKEN" too): the
# value (group 1, 2 or 3) is what is found. A password's value from 4 characters (short ones are the
# weakest and most worth hiding), a key's or token's from 8, so that "token: none" or "secret: yes"
# are left alone.
_SECRET_NAMES = ("api", "secret", "token", "passw", "bearer")
_ASSIGNED = re.compile(
    r"(?:(?:api[_-]?key|secret|token)[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"',;]{8,200})"
    r"|passw(?:or)?d[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"',;]{4,200})"
    r"|bearer\s{1,3}([A-Za-z0-9._~+/=-]{8,2000}))",
    re.IGNORECASE,
)
# a URL with userinfo or a query (what redact_url replaces in it), in free text
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s\"'<>]{1,4000}")


def secret_spans(text: str) -> Iterator[tuple[int, int]]:
    """The (start, end) of each secret in ``text``: API keys of known shapes (OpenAI, Anthropic,
    Pilothouse, AWS, GitHub, Slack, Google, Stripe, JWTs, private key blocks) and the values of
    ``api_key=...``, ``secret: ...``, ``token=...``, ``password=...`` and ``Bearer ...``. Every
    pattern bounds its repetitions and starts at a literal found first, so no input makes it
    backtrack for long. Spans may overlap."""
    for literal, pattern in _KEY_SHAPES:
        if literal in text:
            for match in pattern.finditer(text):
                yield match.start(), match.end()
    lowered = text.lower()
    places = sorted(at for name in _SECRET_NAMES for at in _occurrences(lowered, name))
    covered = -1
    for at in places:  # each name's places, then the pattern there (no scan of every position)
        if at >= covered and (assigned := _ASSIGNED.match(text, at)) is not None:
            covered = assigned.end()
            group = next(g for g in (1, 2, 3) if assigned.group(g) is not None)
            yield assigned.start(group), assigned.end(group)


def redact_text(text: str) -> str:
    """Free text (a plugin scorer's details, reason or error) with the secrets :func:`secret_spans`
    finds replaced, and each URL in it passed through :func:`redact_url`. Text without any comes
    back unchanged."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group()), text)
    spans = sorted(secret_spans(text))
    if not spans:
        return text
    parts, at = [], 0
    for start, end in spans:
        if end <= at:
            continue  # inside a span already replaced
        parts.append(text[at : max(at, start)])
        parts.append(REDACTED)
        at = end
    parts.append(text[at:])
    return "".join(parts)


def _occurrences(text: str, word: str) -> Iterator[int]:
    at = text.find(word)
    while at >= 0:
        yield at
        at = text.find(word, at + 1)

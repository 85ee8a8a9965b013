"""Finding personal data and secrets in text: emails, phone numbers, payment card numbers (with the
Luhn check), IBANs (with the ISO 13616 mod-97 check) and API keys or other secrets (known key shapes,
``password=...`` assignments, private key blocks). Each finder returns :class:`Finding` spans; the
patterns bound every repetition, so no input makes them backtrack for long."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pilothouse.domain.guards import Finding

__all__ = ["ENTITIES", "find_entities", "iban_valid", "luhn_valid"]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits, as every payment card number passes it."""
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """The ISO 13616 check of an IBAN (spaces allowed, any case): two letters of a country, two check
    digits, 11 to 30 letters or digits, and the whole read as a number (letters as 10..35, the first
    four characters moved to the end) is 1 modulo 97."""
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isascii() or not compact.isalnum():
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    remainder = 0
    for char in compact[4:] + compact[:4]:
        value = int(char, 36)  # '0'..'9' -> 0..9, 'A'..'Z' -> 10..35
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"[A-Za-z]{2,24}(?![\w-])"
)
_PHONES = (
    # international: +CC and the number, whole (E.164) or in groups after separators (each group
    # starts after a separator, so there is one way to read it: no backtracking blow-up)
    re.compile(r"(?<![\w+])\+\d{8,15}(?![\w-])"),
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]\(?\d{1,5}\)?){2,6}(?![\w-])"),
    # national: (555) 123-4567, 555-123-4567, 555.123.4567
    re.compile(r"(?<![\w(])(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[ .-]\d{4}(?![\w-])"),
    # European national with a leading 0: 020 7946 0958, 06-12345678, 030 1234567
    re.compile(r"(?<![\w+])0\d{1,4}[ .-]\d{3,4}[ .-]?\d{3,4}(?![\w-])"),
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,34}(?![A-Za-z0-9])")
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
# name = value where the name says it is a secret: the value (group 1) is what is found
_SECRET_NAMES = ("api_key", "api-key", "apikey", "secret", "token", "password", "passwd")
_ASSIGNED = re.compile(
    r"(?:api[_-]?key|secret|token|passw(?:or)?d)[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"',;]{8,200})",
    re.IGNORECASE,
)


def _emails(text: str) -> Iterable[Finding]:
    if "@" not in text:
        return ()
    return (Finding(m.start(), m.end(), "EMAIL") for m in _EMAIL.finditer(text))


def _digit_count(text: str) -> int:
    return sum(char.isdigit() for char in text)


# where a phone number may be: a run of digits and separators (one fast scan), then each precise
# pattern within the run (lookbehinds see the text before it; the character after it is included
# so that the lookaheads see it too)
_PHONE_RUN = re.compile(r"[+(]?\d[\d ().-]{7,40}")


def _phones(text: str) -> Iterable[Finding]:
    for run in _PHONE_RUN.finditer(text):
        end = min(len(text), run.end() + 1)
        for pattern in _PHONES:
            for match in pattern.finditer(text, run.start(), end):
                if 8 <= _digit_count(match.group()) <= 15:
                    yield Finding(match.start(), match.end(), "PHONE")


def _cards(text: str) -> Iterable[Finding]:
    for match in _CARD.finditer(text):
        candidate = match.group()
        # the run may go on past the number ("4111 1111 1111 1111 12/25"): the longest valid prefix
        for end in range(len(candidate), 12, -1):
            digits = candidate[:end].replace(" ", "").replace("-", "")
            if candidate[end - 1].isdigit() and 13 <= len(digits) <= 19 and luhn_valid(digits):
                yield Finding(match.start(), match.start() + end, "CARD")
                break


def _ibans(text: str) -> Iterable[Finding]:
    for match in _IBAN.finditer(text):
        candidate = match.group()
        # the pattern may run into the next word ("... 3000 BANK"): the longest valid prefix wins
        for end in range(len(candidate), 14, -1):
            if candidate[end - 1] != " " and iban_valid(candidate[:end]):
                yield Finding(match.start(), match.start() + end, "IBAN")
                break


def _secrets(text: str) -> Iterable[Finding]:
    for literal, pattern in _KEY_SHAPES:
        if literal in text:
            for match in pattern.finditer(text):
                yield Finding(match.start(), match.end(), "SECRET")
    lowered = text.lower()
    if any(name in lowered for name in _SECRET_NAMES):
        for match in _ASSIGNED.finditer(text):
            yield Finding(match.start(1), match.end(1), "SECRET")


ENTITIES: dict[str, Callable[[str], Iterable[Finding]]] = {
    "email": _emails,
    "phone": _phones,
    "card": _cards,
    "iban": _ibans,
    "secret": _secrets,
}


def find_entities(text: str, entities: Iterable[str]) -> list[Finding]:
    """The spans of ``text`` that are one of ``entities`` (names of :data:`ENTITIES`), in order."""
    found: list[Finding] = []
    for name in entities:
        found.extend(ENTITIES[name](text))
    found.sort(key=lambda f: (f.start, -f.end))
    kept: list[Finding] = []
    for finding in found:  # a phone number inside an IBAN is the IBAN's
        if not kept or finding.end > kept[-1].end:
            kept.append(finding)
    return kept

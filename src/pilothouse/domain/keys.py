"""API keys: one kind of key, scoped to a project, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "ph-"
VISIBLE_PREFIX_LEN = 10


class Scope(StrEnum):
    """What a key may do."""

    GATEWAY = "gateway"  # call models through /v1
    INGEST = "ingest"  # send traces (/v1/traces, /api/ingest)
    READ = "read"  # query /api
    ADMIN = "admin"  # manage keys and projects


DEFAULT_SCOPES = (Scope.GATEWAY, Scope.INGEST, Scope.READ)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    project_id: str
    name: str
    prefix: str
    scopes: frozenset[Scope]
    created_ns: int
    revoked_ns: int | None = None
    models: frozenset[str] | None = None  # the models this key may call; None: all of them
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute

    def may_use(self, model: str) -> bool:
        """True if the key's allow-list admits ``model``."""
        return self.models is None or model in self.models

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_ns is None

    def allows(self, scope: Scope) -> bool:
        """True when the key is active and has ``scope`` (admin has every scope)."""
        return self.active and (scope in self.scopes or Scope.ADMIN in self.scopes)


def new_secret() -> str:
    """A fresh key secret: ``ph-`` and 43 URL-safe random characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Hash under which a secret is stored. Secrets carry 256 random bits, so one SHA-256 suffices."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[Scope]:
    """Scopes from a comma-separated list; raises ValueError naming an unknown scope."""
    scopes = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            scopes.add(Scope(part))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {part!r} (known: {known})") from None
    if not scopes:
        raise ValueError("at least one scope is needed")
    return frozenset(scopes)


ADMIN_IDENTITY = "admin"  # who the admin secret (PILOTHOUSE_ADMIN_KEY) acts as
# a key's name fits its identity, "key:NAME", in the 200 characters a reviewer's name is stored in
MAX_KEY_NAME = 196


def check_key_name(name: str) -> str:
    """A key's name: 1 to :data:`MAX_KEY_NAME` characters, no control characters; ValueError
    otherwise (two longer names could be cut to one reviewer)."""
    if not name or len(name) > MAX_KEY_NAME:
        raise ValueError(f"a key's name is 1 to {MAX_KEY_NAME} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        raise ValueError("a key's name must not hold control characters")
    # invisible characters (zero-width, bidi overrides, line separators) and edge spaces would make a
    # name that reads as another key's: a reviewer shown as someone else
    if any(unicodedata.category(c) in ("Cf", "Zl", "Zp", "Co", "Cs", "Cn") for c in name):
        raise ValueError("a key's name must not hold invisible or unassigned characters")
    if name[0].isspace() or name[-1].isspace():
        raise ValueError("a key's name must not begin or end with a space")
    return name


def key_name_folded(name: str) -> str:
    """What two key names are compared by: ``CI`` and ``ci``, or a name and its full-width or
    decomposed spelling, read as one reviewer, so a project's active keys may not differ by only
    that."""
    return unicodedata.normalize("NFKC", name).casefold()


class DuplicateKeyName(ValueError):
    """A key name that an active key of the same project already has: a key's name is who its
    reviews, prompt edits and scores are recorded under, so two keys may not share one."""

    def __init__(self, project_id: str, name: str) -> None:
        super().__init__(
            f"project {project_id!r} already has an active key named {name!r}: pick another name "
            "(or revoke that key first)"
        )
        self.project_id = project_id
        self.name = name


def key_identity(key_name: str | None) -> str:
    """Who a caller is recorded as (reviews, prompt edits, scores it writes): ``key:NAME`` for an API
    key, ``admin`` for the admin secret (``None``). Active keys of a project have distinct names
    (:class:`DuplicateKeyName`), so this names one key; a key made after one of the same name was
    revoked (a rotation) continues its identity."""
    return ADMIN_IDENTITY if key_name is None else f"key:{key_name}"

"""Browser sessions of the web UI: a signed cookie that names the API key a user logged in with (never
its secret), CSRF tokens tied to the session, and the secret that signs both.

The cookie is ``base64url(json payload) "." base64url(HMAC-SHA256)``; it is HttpOnly, SameSite=Lax and
expires after :data:`SESSION_MAX_AGE_S`. Every request re-checks that the key is still active, so a
revoked key ends its sessions (within the key cache time).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from pilothouse.domain.keys import Scope, key_identity

log = logging.getLogger("pilothouse.ui")

SESSION_COOKIE = "ph_session"
LOGIN_COOKIE = "ph_login"  # double-submit token of the login form (login CSRF)
SESSION_MAX_AGE_S = 12 * 3600
SECRET_ENV = "PILOTHOUSE_SESSION_SECRET"
SECRET_FILE = "session-secret"
ADMIN = "admin"  # the key id recorded for a PILOTHOUSE_ADMIN_KEY login
USER_PREFIX = "user:"  # a session of a reviewer who logged in with a password: "user:<their id>"


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: the key it logged in with (``ADMIN`` for the admin secret), the project it
    acts on, and a random id that CSRF tokens are derived from."""

    key_id: str
    project_id: str
    session_id: str
    issued_s: int
    admin_fingerprint: str | None = None  # ties an admin session to the admin secret it was made with


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a page: the session plus what its key may do now."""

    session: Session
    key_name: str
    scopes: frozenset[Scope]
    is_admin: bool
    reviewer: str | None = None  # the user name of a person who logged in with a password

    @property
    def reviewer_name(self) -> str:
        """Who this viewer's reviews are recorded as: the person, else the key (``key:NAME``), or
        ``admin`` (as the API records a key's reviews)."""
        if self.reviewer is not None:
            return self.reviewer
        return key_identity(None if self.is_admin else self.key_name)

    @property
    def project_id(self) -> str:
        """The project every page reads."""
        return self.session.project_id

    def can(self, scope: Scope) -> bool:
        """True if the key has ``scope`` (admin has them all)."""
        return self.is_admin or scope in self.scopes or Scope.ADMIN in self.scopes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(home: Path, configured: str | None = None) -> bytes:
    """The signing secret: ``configured`` (``$PILOTHOUSE_SESSION_SECRET``), else a random one kept in
    ``<home>/session-secret`` (created on first use, mode 0600) so that sessions survive restarts;
    if that file cannot be written, a random secret for this process only."""
    if configured:
        return configured.encode()
    path = home / SECRET_FILE
    try:
        if path.exists():
            text = path.read_text().strip()
            if len(text) >= 32:
                return text.encode()
        if not home.exists():
            home.mkdir(parents=True, mode=0o700)  # the SQLite file lives here too: owner only
            os.chmod(home, 0o700)
        text = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        return text.encode()
    except OSError as exc:
        log.warning(
            "cannot keep the UI session secret in %s (%s); sessions end when the server stops", path, exc
        )
        return secrets.token_bytes(48)


class SessionSigner:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        if len(secret) < 16:
            raise ValueError(f"the session secret must be at least 16 bytes ({SECRET_ENV})")
        self._secret = secret
        self.max_age_s = max_age_s

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"\x00" + data, hashlib.sha256).digest()

    def admin_fingerprint(self, admin_hash: str) -> str:
        """A short tag of the admin secret's hash: an admin session dies when the admin key changes."""
        return _b64(self._mac("admin", admin_hash.encode()))[:16]

    def new_session(self, key_id: str, project_id: str, admin_fingerprint: str | None = None) -> Session:
        """A fresh session (random id, issued now)."""
        return Session(key_id, project_id, secrets.token_urlsafe(18), int(time.time()), admin_fingerprint)

    def dumps(self, session: Session) -> str:
        """The cookie value of a session."""
        payload = orjson.dumps(
            {
                "k": session.key_id,
                "p": session.project_id,
                "s": session.session_id,
                "t": session.issued_s,
                "a": session.admin_fingerprint,
            }
        )
        return _b64(payload) + "." + _b64(self._mac("session", payload))

    def loads(self, value: str | None, now_s: float | None = None) -> Session | None:
        """The session of a cookie value, or None if it is missing, tampered with, malformed or old."""
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac("session", payload)):
            return None
        try:
            data = orjson.loads(payload)
            session = Session(
                str(data["k"]), str(data["p"]), str(data["s"]), int(data["t"]), data.get("a") or None
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        now = time.time() if now_s is None else now_s
        if not session.issued_s <= now + 60 or now - session.issued_s > self.max_age_s:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """The token that state-changing forms of this session must carry."""
        return _b64(self._mac("csrf", session.session_id.encode()))

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """True if ``token`` is this session's CSRF token."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

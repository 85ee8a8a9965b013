"""What every page shares: templates, the session check, CSRF, error pages and security headers.

A page handler is ``async def handler(page: PageContext) -> Response``; :meth:`Ui.endpoint` turns it
into a Starlette endpoint that first requires a session (a login redirect otherwise), checks the CSRF
token of state-changing requests, and turns errors into an HTML page with a clear message (never a
stack trace).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from pilothouse.domain.keys import ApiKey, Scope, hash_secret
from pilothouse.domain.review import Reviewer
from pilothouse.server.errors import ApiError
from pilothouse.server.state import Services
from pilothouse.store.analytics import AnalyticsQueries
from pilothouse.store.reviewers import ReviewerStore
from pilothouse.store.sessions import SessionStore
from pilothouse.ui import format as fmt
from pilothouse.ui.markdown import render_markdown
from pilothouse.ui.session import ADMIN, SESSION_COOKIE, USER_PREFIX, Session, SessionSigner, Viewer

log = logging.getLogger("pilothouse.ui")

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 64 * 1024
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

NAV = (
    ("/", "Overview"),
    ("/traces", "Traces"),
    ("/sessions", "Sessions"),
    ("/users", "Users"),
    ("/models", "Models"),
    ("/costs", "Costs"),
    ("/keys", "Keys & budgets"),
    ("/datasets", "Datasets"),
    ("/evals", "Evals"),
    ("/prompts", "Prompts"),
    ("/review", "Review"),
    ("/monitors", "Monitors"),
    ("/evaluators", "Online evals"),
)


class UiError(Exception):
    """An error shown to the user as a page: status, a title and a message that says what to do."""

    def __init__(self, status: int, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title or {400: "Bad request", 403: "Not allowed", 404: "Not found"}.get(status, "Error")


def not_found(what: str) -> UiError:
    """The 404 of an id that is unknown here (or belongs to another project: the same answer)."""
    return UiError(404, f"There is no {what} in this project.", "Not found")


def _template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        money=fmt.money,
        ms=fmt.duration_ms,
        num=fmt.number,
        compact=fmt.compact,
        pct=fmt.percent,
        when=fmt.when,
        at=fmt.at,
        iso=fmt.iso,
        short=fmt.short_id,
        cut=fmt.cut,
        preview=fmt.preview,
        pretty=fmt.pretty,
        markdown=render_markdown,
        urlq=lambda value: quote(str(value), safe=""),
    )
    env.globals.update(nav=NAV, chat_messages=fmt.chat_messages, last_turn=fmt.last_turn)
    return env


@dataclass
class PageContext:
    """One request to a page: the request, the app's state, who is looking, and helpers."""

    ui: Ui
    request: Request
    state: Services
    viewer: Viewer
    form: FormData | None = None

    @property
    def project_id(self) -> str:
        """The viewer's project: every read is scoped to it."""
        return self.viewer.project_id

    @property
    def queries(self) -> AnalyticsQueries:
        """The UI's bounded store reads."""
        return AnalyticsQueries(self.state.store)

    @property
    def params(self) -> QueryParams:
        """The URL's query parameters."""
        return self.request.query_params

    def require(self, scope: Scope) -> None:
        """Refuse (403 page) unless the viewer's key has ``scope``."""
        if not self.viewer.can(scope):
            raise UiError(403, f"This page needs a key with the '{scope.value}' scope; log in with one.")

    def field(self, name: str, default: str = "") -> str:
        """A submitted form field, stripped."""
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page from ``template`` with the shared context (viewer, CSRF token, current path)."""
        return self.ui.render(self.request, template, status=status, viewer=self.viewer, **context)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Blocking store work, off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)


Handler = Callable[[PageContext], Awaitable[Response]]


@dataclass
class Ui:
    """The web UI of one app: templates, the session signer, and a short cache of session keys."""

    signer: SessionSigner
    env: jinja2.Environment = field(default_factory=_template_environment)
    _keys: dict[str, tuple[float, ApiKey | None]] = field(default_factory=dict)
    _revoked: dict[str, tuple[float, bool]] = field(default_factory=dict)  # session id -> (until, ended)
    _users: dict[str, tuple[float, Reviewer | None]] = field(default_factory=dict)  # reviewers by id
    _flashes: dict[str, tuple[float, Any]] = field(default_factory=dict)  # session id -> (until, value)

    # -- one-time results of a POST, shown by the page it redirects to --------------------------------

    def flash(self, session: Session, value: Any, ttl_s: float = 120.0) -> None:
        """Keep ``value`` for the next :meth:`take_flash` of this session (in this process, briefly):
        a form's POST redirects (a reload never posts again) and the page it lands on shows it once."""
        now = time.monotonic()
        if len(self._flashes) > 1000:
            self._flashes = {k: v for k, v in self._flashes.items() if v[0] > now}
        self._flashes[session.session_id] = (now + ttl_s, value)

    def take_flash(self, session: Session) -> Any:
        """The value kept for this session, once; None when there is none (or it expired)."""
        kept = self._flashes.pop(session.session_id, None)
        return kept[1] if kept is not None and kept[0] > time.monotonic() else None

    # -- rendering ----------------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        viewer: Viewer | None = None,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """An HTML response with the security headers."""
        csrf = self.signer.csrf_token(viewer.session) if viewer is not None else ""
        html = self.env.get_template(template).render(
            viewer=viewer,
            csrf=csrf,
            path=request.url.path,
            server_url=str(request.base_url).rstrip("/"),
            query=lambda **changes: _query(request, changes),
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})

    def error_page(
        self, request: Request, status: int, title: str, message: str, viewer: Viewer | None
    ) -> Response:
        """An error as a page (the message is the whole story; no stack trace)."""
        return self.render(
            request, "error.html", status=status, viewer=viewer, title=title, message=message, code=status
        )

    # -- sessions -----------------------------------------------------------------------------------

    async def viewer(self, request: Request, state: Services) -> Viewer | None:
        """Who the session cookie says is looking, if the session and its key are still good."""
        session = self.signer.loads(request.cookies.get(SESSION_COOKIE))
        if session is None or await self._ended(state, session.session_id):
            return None
        if session.key_id == ADMIN:
            admin = state.settings.admin_key
            if not admin or session.admin_fingerprint != self.signer.admin_fingerprint(hash_secret(admin)):
                return None
            return Viewer(session, "admin key", frozenset(Scope), is_admin=True)
        if session.key_id.startswith(USER_PREFIX):
            return await self._reviewer(state, session)
        key = await self._key(state, session.key_id, state.settings.key_cache_seconds)
        if key is None or not key.active or key.project_id != session.project_id:
            return None
        if not (key.allows(Scope.READ) or key.allows(Scope.ADMIN)):
            return None
        return Viewer(session, key.name, key.scopes, is_admin=False)

    async def _reviewer(self, state: Services, session: Session) -> Viewer | None:
        """The viewer of a reviewer's password session: the read scope, their name on every review;
        a disabled user's sessions end within the key cache time."""
        user_id = session.key_id.removeprefix(USER_PREFIX)
        now = time.monotonic()
        cached = self._users.get(user_id)
        if cached is None or cached[0] <= now:
            found = await run_in_threadpool(ReviewerStore(state.store).get_user, user_id)
            if len(self._users) > 10_000:
                self._users.clear()
            cached = self._users[user_id] = (now + state.settings.key_cache_seconds, found)
        user = cached[1]
        if user is None or user.disabled or user.project_id != session.project_id:
            return None
        return Viewer(
            session, user.display_name, frozenset({Scope.READ}), is_admin=False, reviewer=user.username
        )

    async def _key(self, state: Services, key_id: str, ttl_s: float) -> ApiKey | None:
        now = time.monotonic()
        cached = self._keys.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await run_in_threadpool(AnalyticsQueries(state.store).api_key, key_id)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[key_id] = (now + ttl_s, key)
        return key

    async def _ended(self, state: Services, session_id: str) -> bool:
        """True if the session logged out: at once in this process, within the key cache time in
        another (the answer is cached like a key's)."""
        now = time.monotonic()
        cached = self._revoked.get(session_id)
        if cached is not None and (cached[1] or cached[0] > now):
            return cached[1]
        ended = await run_in_threadpool(SessionStore(state.store).is_revoked, session_id)
        if len(self._revoked) > 10_000:
            self._revoked = {k: v for k, v in self._revoked.items() if v[1]}
        self._revoked[session_id] = (now + state.settings.key_cache_seconds, ended)
        return ended

    async def end_session(self, state: Services, session: Session) -> None:
        """Log ``session`` out for good: its cookie, or a copy of it, opens nothing any more."""
        expires_ns = (session.issued_s + self.signer.max_age_s + 60) * 10**9
        self._revoked[session.session_id] = (float("inf"), True)
        await run_in_threadpool(SessionStore(state.store).revoke, session.session_id, expires_ns)

    def forget_keys(self) -> None:
        """Drop cached keys (after a revocation here)."""
        self._keys.clear()

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """True if ``token`` is the session's CSRF token."""
        return self.signer.check_csrf(session, token)

    # -- endpoints ----------------------------------------------------------------------------------

    def endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A Starlette endpoint running ``handler`` for a logged-in viewer."""

        async def run(request: Request) -> Response:
            state: Services = request.app.state.pilothouse
            viewer = await self.viewer(request, state)
            if viewer is None:
                return login_redirect(request)
            form = None
            try:
                if request.method == "POST":
                    form = await read_form(request)
                    token = request.headers.get("x-csrf-token") or form.get("csrf")
                    if not self.check_csrf(viewer.session, token if isinstance(token, str) else None):
                        raise UiError(
                            403,
                            "This form has expired or did not come from this site (CSRF check failed). "
                            "Reload the page and try again.",
                            "Form expired",
                        )
                return await handler(PageContext(self, request, state, viewer, form))
            except UiError as exc:
                return self.error_page(request, exc.status, exc.title, exc.message, viewer)
            except ApiError as exc:
                return self.error_page(request, exc.status, "Bad request", exc.message, viewer)
            except Exception:
                log.exception("UI page %s %s failed", request.method, request.url.path)
                return self.error_page(
                    request, 500, "Something went wrong", "The server log has the details.", viewer
                )

        return run


async def read_form(request: Request) -> FormData:
    """The submitted form, refusing large bodies."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise UiError(413, "The form is too large.", "Too large")
    return await request.form(max_files=0, max_fields=200)


def login_redirect(request: Request) -> Response:
    """To the login page, coming back here afterwards (HTMX requests are redirected whole)."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/login?" + urlencode({"next": target}) if target != "/" else "/login"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=401, headers={"hx-redirect": location})
    return RedirectResponse(location, status_code=303)


def safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two non-empty tokens."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def _query(request: Request, changes: Mapping[str, Any]) -> str:
    """The current URL's query with some parameters changed (None removes one)."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    for key, value in changes.items():
        if value is None or value == "":
            continue
        if isinstance(value, list | tuple):
            items.extend((key, str(v)) for v in value)
        else:
            items.append((key, str(value)))
    return "?" + urlencode(items) if items else "?"

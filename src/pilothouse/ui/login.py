"""Logging in and out of the web UI with an API key (admin or read scope) or the admin secret."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pilothouse.domain.keys import Scope, hash_secret
from pilothouse.quality.review import ReviewService
from pilothouse.server.auth import KEY_PREFIX_CHARS, too_many_failures
from pilothouse.server.state import Services
from pilothouse.ui.session import ADMIN, LOGIN_COOKIE, SESSION_COOKIE, USER_PREFIX, Session
from pilothouse.ui.web import Ui, UiError, read_form, safe_next, same_token

Endpoint = Callable[[Request], Awaitable[Response]]
_PROJECT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _login_page(
    ui: Ui,
    request: Request,
    status: int = 200,
    error: str | None = None,
    target: str | None = None,
    reviewer_login: bool = False,
) -> Response:
    token = secrets.token_urlsafe(18)
    response = ui.render(
        request,
        "login.html",
        status=status,
        error=error,
        login_token=token,
        next=target or safe_next(request.query_params.get("next")),
        admin_configured=bool(request.app.state.pilothouse.settings.admin_key),
        reviewer_login=reviewer_login,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.app.state.pilothouse.auth.proxies.secure_cookie(request),
    )
    return response


def _logged_in(ui: Ui, request: Request, state: Services, session: Session, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        ui.signer.dumps(session),
        max_age=ui.signer.max_age_s,
        httponly=True,
        samesite="lax",
        secure=state.auth.proxies.secure_cookie(request),
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


async def _password_login(
    ui: Ui, request: Request, state: Services, username: str, password: str, project: str, target: str
) -> Response:
    """A reviewer's login (pilothouse review users create): throttled per address and user name like a
    key, the password checked against its scrypt hash."""
    address, throttled = state.auth.proxies.client_ip(request), f"user:{username[:64]}"
    wait = state.auth.throttle.retry_after_s(address, throttled)
    if wait > 0:
        refusal = too_many_failures(wait)
        response = _login_page(ui, request, 429, refusal.message, target, reviewer_login=True)
        response.headers.update(refusal.headers)
        return response
    if not _PROJECT.match(project):
        message = "A project id is 1-64 letters, digits, '.', '_' or '-'."
        return _login_page(ui, request, 400, message, target, reviewer_login=True)
    user = await run_in_threadpool(
        ReviewService(state.store, state.evaluations).authenticate, project, username, password
    )
    if user is None:
        await state.auth.throttle.failed(address, throttled)
        message = "That user name and password do not match."
        return _login_page(ui, request, 401, message, target, reviewer_login=True)
    return _logged_in(
        ui, request, state, ui.signer.new_session(USER_PREFIX + user.id, user.project_id), target
    )


def login_endpoints(ui: Ui) -> tuple[Endpoint, Endpoint, Endpoint]:
    """The GET /login, POST /login and POST /logout endpoints of ``ui``."""

    async def login_form(request: Request) -> Response:
        state: Services = request.app.state.pilothouse
        if await ui.viewer(request, state) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        return _login_page(ui, request)

    async def login(request: Request) -> Response:
        state: Services = request.app.state.pilothouse
        try:
            form = await read_form(request)
        except UiError as exc:
            return _login_page(ui, request, exc.status, exc.message)
        target_value = form.get("next")
        target = safe_next(target_value if isinstance(target_value, str) else None)
        token = form.get("login_token")
        if not same_token(request.cookies.get(LOGIN_COOKIE), token if isinstance(token, str) else None):
            return _login_page(ui, request, 400, "The login form expired; please try again.", target)
        secret_value = form.get("key")
        secret = secret_value.strip() if isinstance(secret_value, str) else ""
        project_value = form.get("project")
        project = (
            project_value.strip() if isinstance(project_value, str) and project_value.strip() else "default"
        )
        username_value, password_value = form.get("username"), form.get("password")
        username = username_value.strip() if isinstance(username_value, str) else ""
        if username:
            password = password_value if isinstance(password_value, str) else ""
            return await _password_login(ui, request, state, username, password, project, target)
        if not secret:
            return _login_page(ui, request, 400, "Enter an API key, or a user name and password.", target)
        address, prefix = state.auth.proxies.client_ip(request), secret[:KEY_PREFIX_CHARS]
        wait = state.auth.throttle.retry_after_s(address, prefix)
        if wait > 0:
            refusal = too_many_failures(wait)
            response = _login_page(ui, request, 429, refusal.message, target)
            response.headers.update(refusal.headers)
            return response
        digest = hash_secret(secret)
        admin = state.settings.admin_key
        if admin and hmac.compare_digest(digest, hash_secret(admin)):
            if not _PROJECT.match(project):
                return _login_page(
                    ui, request, 400, "A project id is 1-64 letters, digits, '.', '_' or '-'.", target
                )
            session = ui.signer.new_session(ADMIN, project, ui.signer.admin_fingerprint(digest))
        else:
            key = await run_in_threadpool(state.store.find_api_key, secret)
            if key is None or not key.active:
                await state.auth.throttle.failed(address, prefix)
                return _login_page(ui, request, 401, "That key is not valid (unknown or revoked).", target)
            if not (key.allows(Scope.READ) or key.allows(Scope.ADMIN)):
                return _login_page(
                    ui,
                    request,
                    403,
                    "That key has neither the 'read' nor the 'admin' scope, so it cannot log in.",
                    target,
                )
            session = ui.signer.new_session(key.id, key.project_id)
        return _logged_in(ui, request, state, session, target)

    async def logout(request: Request) -> Response:
        state: Services = request.app.state.pilothouse
        viewer = await ui.viewer(request, state)
        if viewer is not None:
            try:
                form = await read_form(request)
            except UiError:
                form = None
            token = form.get("csrf") if form is not None else None
            if not ui.check_csrf(viewer.session, token if isinstance(token, str) else None):
                return ui.error_page(
                    request,
                    403,
                    "Form expired",
                    "Reload the page and log out again (CSRF check failed).",
                    viewer,
                )
            await ui.end_session(state, viewer.session)  # a copy of the cookie is dead too
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return login_form, login, logout

"""Keys and budgets: create a key (its secret is shown once), revoke one, create and delete budgets,
spend against each budget. Changing anything needs the admin scope."""

from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse, Response

from pilothouse.domain.budgets import BudgetPeriod, BudgetScope, budget_target_problem
from pilothouse.domain.keys import DEFAULT_SCOPES, MAX_KEY_NAME, DuplicateKeyName, Scope, check_key_name
from pilothouse.domain.money import Money
from pilothouse.store.costs import CostStore
from pilothouse.store.key_usage import keys_last_used
from pilothouse.store.retention import RetentionStore
from pilothouse.ui.pages_overview import budget_rows
from pilothouse.ui.web import PageContext, not_found


async def _keys_page(page: PageContext, status: int = 200, **extra: Any) -> Response:
    keys = (
        await page.run(page.state.store.list_api_keys, page.project_id)
        if page.viewer.can(Scope.ADMIN)
        else []
    )
    budgets = await page.run(CostStore(page.state.store).list_budgets, page.project_id)
    key_names = {k.id: k.name for k in keys}
    last_used = await page.run(keys_last_used, page.state.store, page.project_id, [k.id for k in keys])
    disk_bytes = page.state.disk_bytes
    storage = None
    if page.viewer.can(Scope.ADMIN) and disk_bytes is not None:  # what the database takes, and keeps
        kept = await page.run(RetentionStore(page.state.store).retention)
        storage = {"mib": await page.run(disk_bytes.get) / 2**20, "days": kept.get(page.project_id)}
    return page.render(
        "keys.html",
        status=status,
        keys=keys,
        key_names=key_names,
        last_used={k: v * 1_000_000_000 for k, v in last_used.items()},
        revoked_keys={k.id for k in keys if not k.active},
        active_keys=[k for k in keys if k.active],
        budget_rows=await budget_rows(page, budgets),
        scopes=list(Scope),
        default_scopes=set(DEFAULT_SCOPES),
        budget_scopes=list(BudgetScope),
        periods=list(BudgetPeriod),
        is_admin=page.viewer.can(Scope.ADMIN),
        storage=storage,
        **{
            "created": None,
            "secret": None,
            "key_error": None,
            "budget_error": None,
            "notice": None,
            "key_form": {},
            "budget_form": {},
            **extra,
        },
    )


async def keys(page: PageContext) -> Response:
    """``/keys``: keys (admin only) and budgets with their spend."""
    notice = {
        "revoked": "Key revoked.",
        "budget-deleted": "Budget deleted.",
        "budget-created": "Budget created.",
    }
    created = secret = None
    wanted = page.params.get("created")
    if wanted:
        kept = page.ui.take_flash(page.viewer.session)
        if isinstance(kept, tuple) and kept[0].id == wanted:
            created, secret = kept
        else:
            notice["shown"] = (
                "That key's secret was shown once, when it was created, and is not stored: if it was "
                "not copied, revoke the key and create another."
            )
    done = "shown" if wanted and secret is None else page.params.get("done", "")
    return await _keys_page(page, notice=notice.get(done), created=created, secret=secret)


def _positive_int(text: str, name: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1")
    return int(text)


def _money(text: str, name: str) -> Money | None:
    if not text:
        return None
    try:
        value = Money.from_usd(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of US dollars") from None
    if value < Money.ZERO:
        raise ValueError(f"{name} must be a number >= 0")
    return value


async def create_key(page: PageContext) -> Response:
    """``POST /keys``: a new key of this project; the response shows its secret, once."""
    page.require(Scope.ADMIN)
    assert page.form is not None
    try:
        name = page.field("name")
        if not name:
            raise ValueError(f"give the key a name (1 to {MAX_KEY_NAME} characters)")
        check_key_name(name)
        chosen = [str(v) for v in page.form.getlist("scopes")]
        unknown = [s for s in chosen if s not in {x.value for x in Scope}]
        if unknown:
            raise ValueError(f"unknown scope {unknown[0]!r}")
        if not chosen:
            raise ValueError("choose at least one scope")
        scopes = frozenset(Scope(s) for s in chosen)
        models_text = page.field("models")
        models = frozenset(m.strip() for m in models_text.split(",") if m.strip()) if models_text else None
        rpm = _positive_int(page.field("rpm"), "Requests per minute")
        tpm = _positive_int(page.field("tpm"), "Tokens per minute")
        budget = _money(page.field("budget_usd"), "The budget")
        period = page.field("budget_period", "month") or "month"
        if period not in {p.value for p in BudgetPeriod}:
            raise ValueError("the budget period must be day, week, month or total")
    except ValueError as exc:
        typed = {k: page.field(k) for k in ("name", "models", "rpm", "tpm", "budget_usd", "budget_period")}
        typed["scopes"] = ",".join(str(v) for v in page.form.getlist("scopes"))
        return await _keys_page(page, status=400, key_error=f"Key not created: {exc}.", key_form=typed)
    try:
        key, secret = await page.run(
            page.state.store.create_api_key, page.project_id, name, scopes, models=models, rpm=rpm, tpm=tpm
        )
    except DuplicateKeyName as exc:
        typed = {k: page.field(k) for k in ("name", "models", "rpm", "tpm", "budget_usd", "budget_period")}
        typed["scopes"] = ",".join(str(v) for v in page.form.getlist("scopes"))
        return await _keys_page(page, status=409, key_error=f"Key not created: {exc}.", key_form=typed)
    if budget is not None:
        await page.run(
            CostStore(page.state.store).create_budget,
            page.project_id,
            BudgetScope.KEY,
            key.id,
            BudgetPeriod(period),
            budget,
        )
        page.state.budgets.invalidate()
    page.ui.flash(page.viewer.session, (key, secret))
    return RedirectResponse(f"/keys?created={key.id}", status_code=303)


async def revoke_key(page: PageContext) -> Response:
    """``POST /keys/{id}/revoke``."""
    page.require(Scope.ADMIN)
    key_id = str(page.request.path_params["key_id"])
    done = await page.run(page.state.store.revoke_api_key, key_id, page.project_id)
    if not done:
        raise not_found(f"active key {key_id!r}")
    page.state.auth.forget()
    page.ui.forget_keys()
    return RedirectResponse("/keys?done=revoked", status_code=303)


async def create_budget(page: PageContext) -> Response:
    """``POST /budgets``: a spending limit on the project, a key, an end user or a tag."""
    page.require(Scope.ADMIN)
    try:
        scope_text = page.field("scope", "project")
        if scope_text not in {s.value for s in BudgetScope}:
            raise ValueError("the scope must be project, key, user or tag")
        scope = BudgetScope(scope_text)
        period_text = page.field("period", "month")
        if period_text not in {p.value for p in BudgetPeriod}:
            raise ValueError("the period must be day, week, month or total")
        value = page.field("key_id") if scope is BudgetScope.KEY else page.field("scope_value")
        if scope is BudgetScope.KEY and not value:
            value = page.field("scope_value")  # a key id typed in
        if scope is BudgetScope.PROJECT:
            value = ""  # the form's value field belongs to the other scopes
        keys: list[tuple[str, bool]] = []
        if scope is BudgetScope.KEY and value:
            listed = await page.run(page.state.store.list_api_keys, page.project_id)
            keys = [(k.id, k.active) for k in listed]
        if problem := budget_target_problem(scope, value, keys):
            raise ValueError(problem)
        limit = _money(page.field("limit_usd"), "The limit")
        if limit is None:
            raise ValueError("give the limit in US dollars")
    except ValueError as exc:
        typed = {k: page.field(k) for k in ("scope", "scope_value", "key_id", "period", "limit_usd")}
        return await _keys_page(
            page, status=400, budget_error=f"Budget not created: {exc}.", budget_form=typed
        )
    await page.run(
        CostStore(page.state.store).create_budget,
        page.project_id,
        scope,
        value,
        BudgetPeriod(period_text),
        limit,
        hard=page.field("hard") == "on",
    )
    page.state.budgets.invalidate()
    return RedirectResponse("/keys?done=budget-created#budgets", status_code=303)


async def delete_budget(page: PageContext) -> Response:
    """``POST /budgets/{id}/delete``."""
    page.require(Scope.ADMIN)
    budget_id = str(page.request.path_params["budget_id"])
    deleted = await page.run(CostStore(page.state.store).delete_budget, budget_id, page.project_id)
    if not deleted:
        raise not_found(f"budget {budget_id!r}")
    page.state.budgets.invalidate()
    return RedirectResponse("/keys?done=budget-deleted#budgets", status_code=303)

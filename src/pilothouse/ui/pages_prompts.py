"""The prompt registry's pages: the list, one prompt (a version, its versions and labels, the history),
the diff of two versions, editing as a new version and moving a label, and where each running canary's
sequential test stands (:func:`pilothouse.improve.canary.canary_status`). Reads need a logged-in key;
changes need the admin scope. Every use case is :class:`pilothouse.prompts.PromptRegistry`'s."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.responses import RedirectResponse, Response

from pilothouse.domain.keys import Scope
from pilothouse.domain.prompts import PromptError, PromptVersion
from pilothouse.improve.canary import CanarySettings, canary_status
from pilothouse.prompts import PromptNotFound
from pilothouse.ui.web import PageContext, UiError, not_found


def _actor(page: PageContext) -> str:
    """Who a change is recorded as: the same ``key:NAME``, ``admin`` or reviewer as the API and the
    review pages record (:func:`pilothouse.domain.keys.key_identity`)."""
    return page.viewer.reviewer_name


def _name(page: PageContext) -> str:
    return str(page.request.path_params["name"])


def _version_param(text: str, what: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < 1:
        raise UiError(400, f"{what} must be a version number from 1", "Bad request")
    return int(text)


async def prompts(page: PageContext) -> Response:
    """``/prompts``: the project's prompts with their newest version and labels."""
    rows = await page.run(page.state.prompts.list_prompts, page.project_id)
    return page.render("prompts.html", rows=rows, can_edit=page.viewer.can(Scope.ADMIN), error=None, draft={})


async def _prompt_page(page: PageContext, name: str, *, status: int = 200, **extra: Any) -> Response:
    registry = page.state.prompts
    try:
        versions = await page.run(registry.versions, page.project_id, name)
    except (PromptNotFound, PromptError):
        raise not_found(f"prompt {name!r}") from None
    wanted = _version_param(page.params.get("version", ""), "version")
    shown = next((v for v in versions if v.version == wanted), None) if wanted else versions[0]
    if shown is None:
        raise not_found(f"version {wanted} of prompt {name!r}")
    events = await page.run(registry.history, page.project_id, name, 50)
    labels = sorted({label for v in versions for label in v.labels if label != "latest"})
    canaries = {}
    settings = CanarySettings.of(page.state.settings)
    for label in labels:  # where each running canary's sequential test stands now
        standing = await page.run(
            canary_status, page.state.store, registry, settings, page.project_id, name, label
        )
        if standing.canary is not None:
            canaries[label] = standing.document()
    return page.render(
        "prompt.html",
        status=status,
        name=name,
        versions=versions,
        shown=shown,
        template_text=_template_text(shown),
        events=events,
        labels=labels,
        canaries=canaries,
        can_edit=page.viewer.can(Scope.ADMIN),
        **{"diff": None, "diff_from": None, "diff_to": None, "error": None, "notice": None, **extra},
    )


async def prompt(page: PageContext) -> Response:
    """``/prompts/{name}?version=N``: one version (default the newest), the versions, the history."""
    notice = {
        "created": "New version stored.",
        "labelled": "Label moved.",
        "unchanged": "The label already points at that version: nothing changed.",
    }.get(page.params.get("done", ""))
    return await _prompt_page(page, _name(page), notice=notice)


async def diff(page: PageContext) -> Response:
    """``/prompts/{name}/diff?from=1&to=2``: the unified diff of two versions."""
    name = _name(page)
    old = _version_param(page.params.get("from", ""), "from")
    new = _version_param(page.params.get("to", ""), "to")
    if old is None or new is None:
        raise UiError(400, "Choose two versions to compare.", "Bad request")
    try:
        lines = await page.run(page.state.prompts.diff, page.project_id, name, old, new)
    except PromptNotFound as exc:
        raise not_found(str(exc)) from None
    return await _prompt_page(page, name, diff=lines, diff_from=old, diff_to=new)


def _document(page: PageContext) -> dict[str, Any]:
    """A version's document from the edit form: the template (text, or chat messages as JSON), the
    model, parameters (JSON) and the commit message."""
    kind = page.field("type", "text")
    text = page.field("prompt")
    if kind == "chat":
        try:
            template: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptError(f"the messages are not valid JSON ({exc.msg}, line {exc.lineno})") from None
    else:
        template = text
    document: dict[str, Any] = {"type": kind, "prompt": template}
    if page.field("model"):
        document["model"] = page.field("model")
    if page.field("parameters"):
        try:
            document["parameters"] = json.loads(page.field("parameters"))
        except json.JSONDecodeError as exc:
            raise PromptError(f"the parameters are not valid JSON ({exc.msg})") from None
    if page.field("message"):
        document["message"] = page.field("message")
    return document


def _labels(page: PageContext) -> list[str]:
    return [label.strip() for label in page.field("labels").split(",") if label.strip()]


async def create_prompt(page: PageContext) -> Response:
    """``POST /prompts``: a new prompt (its version 1)."""
    page.require(Scope.ADMIN)
    name = page.field("name")
    try:
        await page.run(
            page.state.prompts.create,
            page.project_id,
            name,
            _document(page),
            actor=_actor(page),
            labels=_labels(page),
        )
    except PromptError as exc:
        rows = await page.run(page.state.prompts.list_prompts, page.project_id)
        draft = {k: page.field(k) for k in ("name", "type", "prompt", "model", "parameters", "labels")}
        return page.render("prompts.html", status=400, rows=rows, can_edit=True, error=str(exc), draft=draft)
    return RedirectResponse(f"/prompts/{quote(name, safe='')}?done=created", status_code=303)


async def create_version(page: PageContext) -> Response:
    """``POST /prompts/{name}/versions``: edit as a new version (versions never change)."""
    page.require(Scope.ADMIN)
    name = _name(page)
    try:
        await page.run(
            page.state.prompts.create,
            page.project_id,
            name,
            _document(page),
            actor=_actor(page),
            labels=_labels(page),
        )
    except PromptError as exc:
        return await _prompt_page(page, name, status=400, error=str(exc))
    return RedirectResponse(f"/prompts/{quote(name, safe='')}?done=created", status_code=303)


async def move_label(page: PageContext) -> Response:
    """``POST /prompts/{name}/labels``: point a label at a version (promote or roll back by hand)."""
    page.require(Scope.ADMIN)
    name = _name(page)
    version = _version_param(page.field("version"), "version")
    if version is None:
        raise UiError(400, "Choose a version.", "Bad request")
    try:
        previous = await page.run(
            page.state.prompts.set_label,
            page.project_id,
            name,
            page.field("label"),
            version,
            actor=_actor(page),
        )
    except PromptNotFound as exc:
        raise not_found(str(exc)) from None
    except PromptError as exc:
        return await _prompt_page(page, name, status=400, error=str(exc))
    done = "unchanged" if previous == version else "labelled"
    return RedirectResponse(f"/prompts/{quote(name, safe='')}?done={done}", status_code=303)


def _template_text(version: PromptVersion) -> str:
    if isinstance(version.template, str):
        return version.template
    return json.dumps([dict(m) for m in version.template], indent=2, ensure_ascii=False)

"""Datasets and eval runs: datasets and their items, runs with per-metric estimates and intervals,
per-item results, and two runs compared side by side with the quality gate's verdict."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
from starlette.responses import RedirectResponse, Response

from pilothouse.domain.datasets import DatasetError, DatasetItem
from pilothouse.domain.evals import EvalRun
from pilothouse.evals import ComparisonError
from pilothouse.evals.gate import DEFAULT_ALPHA, judge_calibration_text, parse_margin
from pilothouse.store.evals import EvalStore
from pilothouse.ui.web import PageContext, UiError, not_found

PAGE_SIZE = 50
CHANGED_ROWS = 50


def _evals(page: PageContext) -> EvalStore:
    return EvalStore(page.state.store)


def _int_param(page: PageContext, name: str, default: int, minimum: int = 0) -> int:
    text = page.params.get(name)
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise UiError(400, f"Invalid query parameter '{name}': {text!r} is not a whole number >= {minimum}.")
    return int(text)


async def datasets(page: PageContext) -> Response:
    """``/datasets``: every dataset of the project with its newest version."""
    rows = await page.run(_evals(page).list_datasets, page.project_id)
    return page.render("datasets.html", rows=rows)


async def dataset(page: PageContext) -> Response:
    """``/datasets/{name}``: a version's items, a page at a time (``?version=N&after=POSITION``)."""
    name = str(page.request.path_params["name"])
    version_number = _int_param(page, "version", 0, 1) or None
    after = _int_param(page, "after", 0)
    version = await page.run(_evals(page).get_version, page.project_id, name, version_number)
    if version is None:
        what = f"dataset {name!r}" + (f" version {version_number}" if version_number else "")
        raise not_found(what)
    items = await page.run(page.queries.dataset_items, version.id, after, PAGE_SIZE + 1)
    more = len(items) > PAGE_SIZE
    items = items[:PAGE_SIZE]
    latest = await page.run(_evals(page).get_version, page.project_id, name, None)
    recent = await page.run(_evals(page).list_runs, page.project_id, RUNS_SCANNED)
    return page.render(
        "dataset.html",
        name=name,
        version=version,
        items=items,
        next_after=items[-1][0] if more and items else None,
        after=after,
        editable=latest is not None and latest.id == version.id,
        runs=[r for r in recent if r.dataset == name],
        done=page.params.get("done"),
        error=page.params.get("error"),
    )


RUNS_SCANNED = 200  # the newest runs searched for those of a dataset


def _rewrite(
    store: EvalStore, project_id: str, name: str, item_id: str, replacement: DatasetItem | None
) -> str:
    """A new version of the dataset with one item replaced (or left out when ``replacement`` is None);
    returns what the page says. Versions are immutable: the older ones and their runs stay as they are."""
    latest = store.get_version(project_id, name)
    if latest is None or not store.get_items(latest.id, [item_id]):
        raise UiError(404, f"There is no item {item_id!r} in the newest version of dataset {name!r}.")

    def items() -> Iterator[DatasetItem]:
        for _, item in store.iter_items(latest.id):
            if item.id != item_id:
                yield item
            elif replacement is not None:
                yield replacement

    what = "edited" if replacement is not None else "deleted"
    version, _ = store.import_items(project_id, name, items(), source=f"ui: item {item_id} {what}")
    return f"Item {item_id} {what}: {name} is now v{version.version} ({version.item_count} items)."


def _json_field(text: str, label: str, *, obj: bool) -> Any:
    if not text:
        return {} if obj else None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        if obj:
            raise ValueError(f'{label} must be a JSON object, like {{"question": "..."}}') from None
        return text  # an expected answer may be plain text
    if obj and not isinstance(value, dict):
        raise ValueError(f'{label} must be a JSON object, like {{"question": "..."}}')
    return value


def _item_params(page: PageContext) -> tuple[str, str]:
    return str(page.request.path_params["name"]), str(page.request.path_params["item_id"])


def _dataset_url(name: str, **params: str) -> str:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    return f"/datasets/{quote(name, safe='')}" + (f"?{query}" if query else "")


async def item_form(page: PageContext) -> Response:
    """``/datasets/{name}/items/{id}``: edit an item of the newest version."""
    name, item_id = _item_params(page)
    evals = _evals(page)
    latest = await page.run(evals.get_version, page.project_id, name, None)
    found = {} if latest is None else await page.run(evals.get_items, latest.id, [item_id])
    if item_id not in found:
        raise not_found(f"item {item_id!r} in dataset {name!r}")
    item = found[item_id]
    form = {
        "input": orjson.dumps(dict(item.input), option=orjson.OPT_INDENT_2).decode(),
        "expected": ""
        if item.expected is None
        else item.expected
        if isinstance(item.expected, str)
        else orjson.dumps(item.expected, option=orjson.OPT_INDENT_2).decode(),
        "metadata": orjson.dumps(dict(item.metadata), option=orjson.OPT_INDENT_2).decode()
        if item.metadata
        else "",
    }
    return page.render("dataset_item.html", name=name, item=item, version=latest, form=form, error=None)


async def edit_item(page: PageContext) -> Response:
    """``POST /datasets/{name}/items/{id}``: the item changed, as a new version of the dataset."""
    name, item_id = _item_params(page)
    evals = _evals(page)
    latest = await page.run(evals.get_version, page.project_id, name, None)
    found = {} if latest is None else await page.run(evals.get_items, latest.id, [item_id])
    if item_id not in found:
        raise not_found(f"item {item_id!r} in dataset {name!r}")
    typed = {k: page.field(k) for k in ("input", "expected", "metadata")}
    try:
        old = found[item_id]
        item = DatasetItem(
            id=item_id,
            input=_json_field(typed["input"], "The input", obj=True),
            expected=_json_field(typed["expected"], "The expected answer", obj=False),
            metadata=_json_field(typed["metadata"], "The metadata", obj=True),
            messages=old.messages,
            source_trace_id=old.source_trace_id,
        )
        message = await page.run(_rewrite, evals, page.project_id, name, item_id, item)
    except (ValueError, DatasetError) as exc:
        return page.render(
            "dataset_item.html",
            status=400,
            name=name,
            item=found[item_id],
            version=latest,
            form=typed,
            error=f"Item not saved: {exc}.",
        )
    return RedirectResponse(_dataset_url(name, done=message), status_code=303)


async def delete_item(page: PageContext) -> Response:
    """``POST /datasets/{name}/items/{id}/delete``: a new version of the dataset without the item."""
    name, item_id = _item_params(page)
    try:
        message = await page.run(_rewrite, _evals(page), page.project_id, name, item_id, None)
    except DatasetError as exc:
        return RedirectResponse(_dataset_url(name, error=f"Item not deleted: {exc}."), status_code=303)
    return RedirectResponse(_dataset_url(name, done=message), status_code=303)


def _run(page: PageContext, run_id: str) -> EvalRun:
    # another project's run is not found here
    run = page.state.evaluations.find_run(run_id, page.project_id)
    if run is None:
        raise not_found(f"eval run {run_id!r}")
    return run


async def runs(page: PageContext) -> Response:
    """``/evals``: the newest runs and a form to compare two of them."""
    rows = await page.run(_evals(page).list_runs, page.project_id, 50)
    return page.render("evals.html", runs=rows)


async def run(page: PageContext) -> Response:
    """``/evals/{id}``: a run's metrics with intervals and its per-item results."""
    run_ = await page.run(_run, page, str(page.request.path_params["run_id"]))
    after_pos = _int_param(page, "after", 0)
    after_epoch = _int_param(page, "epoch", 999_999)
    results = await page.run(page.queries.run_results, run_.id, (after_pos, after_epoch), PAGE_SIZE + 1)
    more = len(results) > PAGE_SIZE
    results = results[:PAGE_SIZE]
    items = {}
    if run_.dataset_version_id and results:
        items = await page.run(_evals(page).get_items, run_.dataset_version_id, [r.item_id for r in results])
    last = results[-1] if more and results else None
    return page.render(
        "run.html",
        run=run_,
        results=results,
        items=items,
        next_page=None if last is None else {"after": last.position, "epoch": last.epoch},
        paged=after_pos > 0,
    )


# How this page names the settings a comparison error mentions (the fields of its form).
SETTINGS = {
    "alpha": "alpha",
    "margin": "margin",
    "min_kappa": "minimum kappa",
    "allow_uncalibrated": "'Allow uncalibrated judges'",
    "metric": "metric",
    "lower_is_better": "lower is better",
    "group_by": "group by",
}
_TRUE = ("1", "true", "on", "yes")


def _number_param(page: PageContext, name: str) -> float | None:
    text = page.params.get(name, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise UiError(400, f"Invalid query parameter '{name}': {text!r} is not a number.") from None


async def compare(page: PageContext) -> Response:
    """``/evals/compare?baseline=A&candidate=B`` (and ``margin`` (``0.02`` or ``metric=10%``, several
    separated by spaces or commas), ``alpha``, ``lower_is_better``, ``group_by``, ``min_kappa``,
    ``allow_uncalibrated``, ``metric``): the gate's verdict per metric (the service's, as ``pilothouse
    gate`` gives it at its next look, refusals included) and the items that changed, biggest losses
    first."""
    base_ref, cand_ref = page.params.get("baseline", "").strip(), page.params.get("candidate", "").strip()
    if not base_ref or not cand_ref:
        raise UiError(400, "Choose a baseline and a candidate run to compare.")
    margins = [m for m in page.params.get("margin", "").replace(",", " ").split() if m]
    for margin in margins:
        try:
            parse_margin(margin)
        except ValueError as exc:
            raise UiError(400, f"Invalid query parameter 'margin': {exc}.") from None
    lower = [m for m in page.params.get("lower_is_better", "").replace(",", " ").split() if m]
    group_by = page.params.get("group_by", "").strip() or None
    alpha = _number_param(page, "alpha")
    min_kappa = _number_param(page, "min_kappa")
    allow_uncalibrated = page.params.get("allow_uncalibrated", "").strip().lower() in _TRUE
    metrics = [m for m in page.params.getlist("metric") if m.strip()]
    service = page.state.evaluations
    baseline = await page.run(_run, page, base_ref)
    candidate = await page.run(_run, page, cand_ref)
    comparison, error = None, None
    try:
        comparison = await page.run(
            service.compare_runs,
            baseline,
            candidate,
            metrics=metrics,
            margin=margins or None,
            alpha=DEFAULT_ALPHA if alpha is None else alpha,
            lower_is_better=lower,
            group_by=group_by,
            allow_uncalibrated=allow_uncalibrated,
            min_kappa=min_kappa,
            project_id=page.project_id,
            changed_limit=CHANGED_ROWS,
        )
    except ComparisonError as exc:  # the gate refuses (exit 2): say why, offer the settings again
        error = exc.message(SETTINGS)
    judges = {} if comparison is None else comparison.judges
    return page.render(
        "compare.html",
        status=200 if error is None else 400,
        baseline=baseline,
        candidate=candidate,
        comparison=comparison,
        error=error,
        margin=page.params.get("margin", "").strip(),
        lower_is_better=page.params.get("lower_is_better", "").strip(),
        group_by=group_by or "",
        alpha=page.params.get("alpha", "").strip(),
        min_kappa=page.params.get("min_kappa", "").strip(),
        allow_uncalibrated=allow_uncalibrated,
        metrics=metrics,
        judge_texts={name: judge_calibration_text(calibration) for name, calibration in judges.items()},
    )

"""Datasets and eval runs: datasets and their items, runs with per-metric estimates and intervals,
per-item results, and two runs compared side by side with the quality gate's verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from pilothouse.domain.evals import EvalRun
from pilothouse.evals.gate import (
    GateVerdict,
    MetricResult,
    MetricSpec,
    MetricValues,
    compare_metric,
    overall_verdict,
)
from pilothouse.evals.stats import item_means
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
    return page.render(
        "dataset.html",
        name=name,
        version=version,
        items=items,
        next_after=items[-1][0] if more and items else None,
        after=after,
    )


def _run(page: PageContext, run_id: str) -> EvalRun:
    run = _evals(page).get_run(run_id.lower())
    if run is None or run.project_id != page.project_id:  # another project's run is not found here
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


@dataclass(frozen=True, slots=True)
class ChangedItem:
    """An item whose mean score moved between the runs."""

    item_id: str
    metric: str
    baseline: float | None
    candidate: float | None

    @property
    def delta(self) -> float:
        """Candidate minus baseline (0 when one side is missing)."""
        if self.baseline is None or self.candidate is None:
            return 0.0
        return self.candidate - self.baseline


def _compare(store: EvalStore, baseline: EvalRun, candidate: EvalRun, margin: float | None) -> dict[str, Any]:
    names = [n for n in baseline.scorers if n in candidate.scorers]
    results: list[MetricResult] = []
    changed: list[ChangedItem] = []
    tallies: dict[str, tuple[int, int, int, int]] = {}
    problems: list[str] = []
    for name in names:
        (base_items, base_unmeasured), (cand_items, cand_unmeasured) = (
            store.metric_values(baseline.id, name),
            store.metric_values(candidate.id, name),
        )
        values = [v for by in (base_items, cand_items) for vs in by.values() for v in vs]
        spec = MetricSpec(name, "binary" if all(v in (0.0, 1.0) for v in values) else "continuous")
        try:
            results.append(
                compare_metric(
                    spec,
                    MetricValues(base_items, base_unmeasured),
                    MetricValues(cand_items, cand_unmeasured),
                    margin=margin,
                )
            )
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        means_a, means_b = item_means(base_items), item_means(cand_items)
        better = worse = same = unpaired = 0
        for item in means_a.keys() | means_b.keys():
            a, b = means_a.get(item), means_b.get(item)
            if a is None or b is None:
                unpaired += 1
                changed.append(ChangedItem(item, name, a, b))
            elif b > a:
                better += 1
                changed.append(ChangedItem(item, name, a, b))
            elif b < a:
                worse += 1
                changed.append(ChangedItem(item, name, a, b))
            else:
                same += 1
        tallies[name] = (better, worse, same, unpaired)
    changed.sort(key=lambda c: (c.delta, c.item_id, c.metric))
    shown = changed[:CHANGED_ROWS]
    ids = list({c.item_id for c in shown})
    outputs: dict[str, dict[str, str | None]] = {}
    for run in (baseline, candidate):
        seen: dict[str, str | None] = {}
        for result in store.get_results(run.id, ids):
            text = result.output if result.error is None else f"error: {result.error}"
            seen.setdefault(result.item_id, text)
        outputs[run.id] = seen
    inputs = store.get_items(baseline.dataset_version_id, ids) if baseline.dataset_version_id and ids else {}
    return {
        "results": results,
        "overall": overall_verdict(results) if results else None,
        "changed": shown,
        "changed_total": len(changed),
        "tallies": tallies,
        "outputs": outputs,
        "inputs": inputs,
        "problems": problems,
        "shared": names,
    }


async def compare(page: PageContext) -> Response:
    """``/evals/compare?baseline=A&candidate=B``: the gate's verdict per metric and the items that
    changed, biggest losses first."""
    base_ref, cand_ref = page.params.get("baseline", "").strip(), page.params.get("candidate", "").strip()
    if not base_ref or not cand_ref:
        raise UiError(400, "Choose a baseline and a candidate run to compare.")
    margin_text = page.params.get("margin", "").strip()
    margin = None
    if margin_text:
        try:
            margin = float(margin_text)
        except ValueError:
            raise UiError(
                400, f"Invalid query parameter 'margin': {margin_text!r} is not a number."
            ) from None
        if not 0 <= margin < float("inf"):
            raise UiError(400, "Invalid query parameter 'margin': it must be a number >= 0.")
    baseline = await page.run(_run, page, base_ref)
    candidate = await page.run(_run, page, cand_ref)
    data = await page.run(_compare, _evals(page), baseline, candidate, margin)
    if not data["shared"]:
        raise UiError(400, "The two runs have no metric (scorer) in common, so there is nothing to compare.")
    return page.render(
        "compare.html",
        baseline=baseline,
        candidate=candidate,
        margin=margin_text,
        verdicts=GateVerdict,
        **data,
    )

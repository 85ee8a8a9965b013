"""Eval runs under ``/api/evals``: list them, read one and its results (each score with its scorer's
details), and compare two with the quality gate (the
evaluations service's verdict, exactly as ``pilothouse gate`` gives it). Reads need the ``read`` scope
and see the caller's project only; another project's run answers 404."""

from __future__ import annotations

import itertools
import math
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pilothouse.domain.evals import EvalResult
from pilothouse.domain.keys import Scope
from pilothouse.evals import ComparisonError, comparison_document, result_document, run_document
from pilothouse.evals.gate import DEFAULT_ALPHA
from pilothouse.server.errors import ApiError, FastJSONResponse, param_error
from pilothouse.server.state import Services

_COMPARE_PARAMS = frozenset(
    {
        "baseline",
        "candidate",
        "metric",
        "margin",
        "alpha",
        "lower_is_better",
        "group_by",
        "allow_uncalibrated",
        "min_kappa",
        "changed_limit",
    }
)
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}


def _services(request: Request) -> Services:
    services: Services = request.app.state.pilothouse
    return services


def _number(params: Any, name: str) -> float | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise param_error(name, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise param_error(name, f"{text!r} is not a finite number")
    return value


def _whole(params: Any, name: str, default: int, maximum: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 18) or int(text) > maximum:
        raise param_error(name, f"must be a whole number from 0 to {maximum}")
    return int(text)


async def list_runs(request: Request) -> Response:
    """``GET /api/evals/runs?limit=50``: the project's eval runs, newest first."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.READ)
    limit = _whole(request.query_params, "limit", 50, 500)
    runs = await run_in_threadpool(services.evaluations.evals.list_runs, principal.project_id, limit)
    return FastJSONResponse({"data": [run_document(run) for run in runs]})


async def get_run(request: Request) -> Response:
    """``GET /api/evals/runs/{id}``: one run (by id or an id prefix of 6+ characters) with its summary."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.READ)
    reference = str(request.path_params["run_id"])
    run = await run_in_threadpool(services.evaluations.find_run, reference, principal.project_id)
    if run is None:
        raise ApiError(404, f"No eval run {reference!r} in this project.", code="eval_run_not_found")
    return FastJSONResponse(run_document(run, spec=True))


def _after(params: Any) -> tuple[int, int]:
    """The ``after`` cursor, ``POSITION.EPOCH`` (a page's ``next_after``); the start when absent."""
    text = params.get("after") or ""
    if not text:
        return (0, -1)
    position, dot, epoch = text.partition(".")
    if not (dot and all(p.isascii() and p.isdigit() and len(p) <= 9 for p in (position, epoch))):
        raise param_error("after", "must be a page's next_after, POSITION.EPOCH (like 12.0)")
    return int(position), int(epoch)


async def run_results(request: Request) -> Response:
    """``GET /api/evals/runs/{id}/results?limit=50&after=POSITION.EPOCH&item=ID``: a run's results in
    item order then epoch, each with its scores and the scorers' ``details`` (unsupported spans, a
    judge's verdicts; null in runs stored before details were kept). ``item``: only that item's
    results (every epoch). ``next_after``: the cursor of the next page, null on the last."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.READ)
    params = request.query_params
    reference = str(request.path_params["run_id"])
    limit = _whole(params, "limit", 50, 500)
    after = _after(params)
    item = params.get("item")
    if item is not None and "\x00" in item:  # PostgreSQL text cannot hold it: no item has it
        raise param_error("item", "must not contain NUL")
    run = await run_in_threadpool(services.evaluations.find_run, reference, principal.project_id)
    if run is None:
        raise ApiError(404, f"No eval run {reference!r} in this project.", code="eval_run_not_found")
    evals = services.evaluations.evals

    def read() -> list[EvalResult]:
        if item is not None:
            found = evals.get_results(run.id, [item])
            return [r for r in found if (r.position, r.epoch) > after][: limit + 1]
        page = evals.iter_results(run.id, page=limit + 1, after=after)
        return list(itertools.islice(page, limit + 1))

    results = await run_in_threadpool(read)
    more = len(results) > limit
    results = results[:limit]
    last = results[-1] if more and results else None
    return FastJSONResponse(
        {
            "run_id": run.id,
            "data": [result_document(r) for r in results],
            "next_after": None if last is None else f"{last.position}.{last.epoch}",
        }
    )


async def compare(request: Request) -> Response:
    """``GET /api/evals/compare?baseline=A&candidate=B[&metric=M...&margin=0.02&margin=M:10%...&alpha=
    &lower_is_better=M...&group_by=KEY&allow_uncalibrated=&min_kappa=&changed_limit=]``: the gate's
    verdict per metric and overall (``gate.json``'s shape) at the look ``pilothouse gate`` would make
    (none is recorded), the judges' calibrations, the changed items with their tallies, and warnings.
    A refusal of the gate (``pilothouse gate`` exit 2) is a 400 naming the problem; an unknown run a
    404."""
    services = _services(request)
    principal = await services.auth.authenticate(request, Scope.READ)
    params = request.query_params
    unknown = sorted(set(params.keys()) - _COMPARE_PARAMS)
    if unknown:
        raise param_error(unknown[0], f"unknown parameter (known: {', '.join(sorted(_COMPARE_PARAMS))})")
    for name in ("baseline", "candidate"):
        if not params.get(name, "").strip():
            raise param_error(name, "give the id (or an id prefix) of a run")
    allow = params.get("allow_uncalibrated", "").strip().lower()
    if allow not in _BOOLEANS:
        raise param_error("allow_uncalibrated", "must be true or false")
    alpha = _number(params, "alpha")
    try:
        comparison = await run_in_threadpool(
            services.evaluations.compare_runs,
            params["baseline"],
            params["candidate"],
            metrics=params.getlist("metric"),
            margin=[m for m in params.getlist("margin") if m.strip()] or None,
            alpha=DEFAULT_ALPHA if alpha is None else alpha,
            lower_is_better=[m for m in params.getlist("lower_is_better") if m.strip()],
            group_by=params.get("group_by", "").strip() or None,
            allow_uncalibrated=_BOOLEANS[allow],
            min_kappa=_number(params, "min_kappa"),
            project_id=principal.project_id,
            changed_limit=_whole(params, "changed_limit", 50, 1000),
        )
    except ComparisonError as exc:
        status = 404 if exc.code == "eval_run_not_found" else 400
        message = exc.message()
        message = message[:1].upper() + message[1:] + "."
        raise ApiError(status, message, code=exc.code, param=exc.param) from None
    return FastJSONResponse(comparison_document(comparison))


routes = [
    Route("/api/evals/runs", list_runs, methods=["GET"]),
    Route("/api/evals/runs/{run_id}", get_run, methods=["GET"]),
    Route("/api/evals/runs/{run_id}/results", run_results, methods=["GET"]),
    Route("/api/evals/compare", compare, methods=["GET"]),
]

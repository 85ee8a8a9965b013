"""Evals as tests: a pytest plugin (entry point ``pytest11: pilothouse``).

Assert on one scorer::

    def test_answer_names_the_city(pilothouse_eval):
        result = pilothouse_eval.score({"type": "icontains", "value": "paris"}, output=answer("France?"))
        assert result.passed, result.reason

A whole eval as one test, decided with the gate's statistics (item-level intervals, unmeasured values
reported, an inconclusive result fails with the number of items the next look needs)::

    def test_capitals(pilothouse_eval):
        report = pilothouse_eval.run(
            dataset="capitals.jsonl", target=answer, scorers=[{"type": "icontains", "value": "{{city}}"}]
        )
        report.assert_mean("icontains", at_least=0.9)
        report.assert_no_regression(baseline="3fbfdbf1ce87")   # a stored run

``assert_no_regression`` is ``pilothouse gate``: the same comparison (:class:`pilothouse.evals.Evaluations`)
at the plugin's alpha, so a metric graded by a judge without a calibration is refused (a
``ComparisonError``, the test neither passes nor fails) unless ``allow_uncalibrated=True``.

Spec files named ``eval_*.yaml`` or ``*.eval.yaml`` are collected as tests: each runs its spec and
checks its ``assert:`` means. Runs are stored (``--pilothouse-database-url``, else
``$PILOTHOUSE_DATABASE_URL``, else ``./.pilothouse/pilothouse.db``) so their response cache makes
re-runs free and ``pilothouse gate`` can compare them. ``--pilothouse-alpha`` (0.05) sets the
significance level; ``--pilothouse-inconclusive=skip`` skips, rather than fails, an undecided test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pilothouse.domain.evals import EvalRun, RunSummary
from pilothouse.evals.assertions import AssertionResult, check_minimum
from pilothouse.evals.gate import GateVerdict
from pilothouse.evals.scoring import Sample, ScoreResult, build_scorer
from pilothouse.evals.spec import EvalSpec, SpecError, load_spec, parse_spec

if TYPE_CHECKING:
    from pilothouse.evals import Comparison, Evaluations

__all__ = ["EvalHelper", "EvalReport"]

SpecLike = EvalSpec | str | Path | Mapping[str, Any] | None


def _evaluations(store: Any) -> Evaluations:
    # imported on first use: every pytest session loads this plugin, few of them compare runs
    from pilothouse.evals import Evaluations
    from pilothouse.store.calibrations import CalibrationStore

    return Evaluations(store, CalibrationStore(store.store))


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's command-line options."""
    group = parser.getgroup("pilothouse", "Pilothouse evals")
    group.addoption("--pilothouse-database-url", default=None, help="Where eval runs are stored.")
    group.addoption("--pilothouse-alpha", type=float, default=0.05, help="Significance level (0.05).")
    group.addoption(
        "--pilothouse-inconclusive",
        choices=("fail", "skip"),
        default="fail",
        help="What an eval that cannot decide does (default: fail).",
    )


class EvalReport:
    """A finished run, with assertions that use the gate's statistics."""

    def __init__(self, run: EvalRun, store: Any, alpha: float, inconclusive: str) -> None:
        self.run = run
        self.store = store
        self.alpha = alpha
        self.inconclusive = inconclusive

    @property
    def summary(self) -> RunSummary:
        """The run's totals and per-metric means."""
        assert self.run.summary is not None
        return self.run.summary

    def values(self, metric: str) -> dict[str, list[float]]:
        """``{item_id: [value per epoch]}`` of the measured values of a scorer."""
        self._known(metric)
        by_item, _, _ = self.store.metric_values(self.run.id, metric)
        return dict(by_item)

    def mean(self, metric: str) -> float | None:
        """A scorer's mean over its measured values."""
        found = self.summary.metric(self._known(metric))
        return None if found is None else found.mean

    def _known(self, metric: str) -> str:
        if metric not in self.run.scorers:
            raise KeyError(f"no scorer {metric!r} in this run (scorers: {', '.join(self.run.scorers)})")
        return metric

    def _decide(self, verdict: GateVerdict, message: str) -> None:
        if verdict is GateVerdict.PASS:
            return
        if verdict is GateVerdict.INCONCLUSIVE and self.inconclusive == "skip":
            pytest.skip(f"inconclusive: {message}")
        raise AssertionError(f"{verdict.value}: {message} (run {self.run.id})")

    def check_mean(self, metric: str, at_least: float) -> AssertionResult:
        """The verdict on "the mean of ``metric`` is at least ``at_least``", without asserting."""
        by_item, unmeasured, _ = self.store.metric_values(self.run.id, self._known(metric))
        return check_minimum(metric, by_item, at_least, unmeasured=unmeasured, alpha=self.alpha)

    def assert_mean(self, metric: str, at_least: float) -> None:
        """Fail unless the mean of ``metric`` is at least ``at_least`` with ``1 - alpha`` confidence."""
        result = self.check_mean(metric, at_least)
        self._decide(result.verdict, f"{metric}: {result.explanation}")

    def compare(
        self,
        baseline: str,
        metric: str | Sequence[str] | None = None,
        *,
        margin: float | str | None = None,
        margins: Mapping[str, float | str] | None = None,
        lower_is_better: Sequence[str] = (),
        group_by: str | None = None,
        allow_uncalibrated: bool = False,
        min_kappa: float | None = None,
        record_look: bool = False,
    ) -> Comparison:
        """The gate's comparison of this run with the stored run ``baseline`` (an id or id prefix), at
        the plugin's alpha, without asserting: what ``pilothouse gate`` decides on the same runs at its
        next look (``record_look``: and record the look, as the gate does). ``margin`` is every
        metric's, ``margins`` per metric (``{"accuracy": 0.01, "faithful": "10%"}``). Raises
        :class:`~pilothouse.evals.ComparisonError` where the gate refuses (exit 2)."""
        settings: list[float | str] = [] if margin is None else [margin]
        settings += [f"{name}={value}" for name, value in (margins or {}).items()]
        names = () if metric is None else (metric,) if isinstance(metric, str) else tuple(metric)
        return _evaluations(self.store).compare_runs(
            baseline,
            self.run,
            metrics=names,
            margin=settings or None,
            alpha=self.alpha,
            lower_is_better=lower_is_better,
            group_by=group_by,
            allow_uncalibrated=allow_uncalibrated,
            min_kappa=min_kappa,
            changed_limit=0,
            record_look=record_look,
        )

    def assert_no_regression(
        self,
        baseline: str,
        metric: str | Sequence[str] | None = None,
        *,
        margin: float | str | None = None,
        margins: Mapping[str, float | str] | None = None,
        lower_is_better: Sequence[str] = (),
        group_by: str | None = None,
        allow_uncalibrated: bool = False,
        min_kappa: float | None = None,
    ) -> None:
        """Fail when this run is worse than the stored run ``baseline`` (the gate's non-inferiority
        test, per metric; ``metric`` None: every scorer of the baseline), recorded as a look of the pair
        as ``pilothouse gate`` records it. A metric graded by an uncalibrated judge is refused as the
        gate refuses it, unless ``allow_uncalibrated``: the :class:`~pilothouse.evals.ComparisonError`
        is a usage error of the test, neither pass nor fail."""
        comparison = self.compare(
            baseline,
            metric,
            margin=margin,
            margins=margins,
            lower_is_better=lower_is_better,
            group_by=group_by,
            allow_uncalibrated=allow_uncalibrated,
            min_kappa=min_kappa,
            record_look=True,
        )
        results = comparison.results
        findings = "; ".join(f"{r.metric.name}: {r.explanation}" for r in results)
        look = f" (look {comparison.look}, alpha {comparison.look_alpha:.4g})"
        self._decide(comparison.verdict, findings + look)

    def assert_spec(self, assertions: Mapping[str, float]) -> None:
        """Every ``assert:`` mean of a spec (regressions reported before inconclusive ones)."""
        if not assertions:
            raise AssertionError("the spec has no 'assert:' means to check (e.g. assert: {contains: 0.9})")
        results = [self.check_mean(metric, minimum) for metric, minimum in assertions.items()]
        order = (GateVerdict.REGRESSION, GateVerdict.INCONCLUSIVE)
        for verdict in order:
            failing = [r for r in results if r.verdict is verdict]
            if failing:
                self._decide(verdict, "; ".join(f"{r.metric}: {r.explanation}" for r in failing))


class EvalHelper:
    """The ``pilothouse_eval`` fixture: run evals and score samples from tests."""

    def __init__(self, config: pytest.Config, base_dir: Path) -> None:
        self.config = config
        self.base_dir = base_dir
        self._store: Any = None

    @property
    def store(self) -> Any:
        """The eval store (opened on first use)."""
        if self._store is None:
            from pilothouse.store.evals import EvalStore
            from pilothouse.store.sql import SqlStore

            self._store = EvalStore(SqlStore.from_url(self.database_url()))
        return self._store

    def database_url(self) -> str:
        """The option, else the settings as the CLI resolves them ($PILOTHOUSE_DATABASE_URL, the
        config file's ``server:`` section, else SQLite in $PILOTHOUSE_HOME, ./.pilothouse)."""
        from pilothouse.config import load_settings

        option = self.config.getoption("--pilothouse-database-url")
        return load_settings(database_url=str(option) if option else None).resolved_database_url

    def close(self) -> None:
        """Close the store."""
        if self._store is not None:
            self._store.store.close()
            self._store = None

    def spec(self, spec: SpecLike = None, **keys: Any) -> EvalSpec:
        """A spec from a file, a mapping, or keyword arguments (see :meth:`EvalSpec.create`)."""
        if isinstance(spec, EvalSpec):
            return spec
        if isinstance(spec, str | Path):
            path = Path(spec)
            return load_spec(path if path.is_absolute() else self.base_dir / path)
        if isinstance(spec, Mapping):
            return parse_spec(dict(spec), base_dir=self.base_dir)
        return EvalSpec.create(base_dir=self.base_dir, **keys)

    async def arun(
        self, spec: EvalSpec | str | Path | Mapping[str, Any] | None = None, **keys: Any
    ) -> EvalReport:
        """Run an eval (in an async test)."""
        run = await _evaluations(self.store).run(self.spec(spec, **keys))
        alpha = float(self.config.getoption("--pilothouse-alpha"))
        return EvalReport(run, self.store, alpha, str(self.config.getoption("--pilothouse-inconclusive")))

    def run(self, spec: SpecLike = None, **keys: Any) -> EvalReport:
        """Run an eval (in a sync test); ``keys`` are spec keys when ``spec`` is None."""
        return asyncio.run(self.arun(spec, **keys))

    def score(
        self,
        scorer: Mapping[str, Any],
        output: str,
        *,
        expected: Any = None,
        judge: Any = None,
        **variables: Any,
    ) -> ScoreResult:
        """One scorer's verdict on one output (``variables`` fill its ``{{placeholders}}``)."""
        built = build_scorer(scorer, judge, base_dir=self.base_dir)
        sample = Sample(item_id="test", input=variables, output=output, expected=expected)
        return asyncio.run(built.score(sample))


@pytest.fixture
def pilothouse_eval(request: pytest.FixtureRequest) -> Iterator[EvalHelper]:
    """Run evals and score outputs from a test (see :mod:`pilothouse.pytest_plugin`)."""
    helper = EvalHelper(request.config, Path(str(request.path)).parent)
    yield helper
    helper.close()


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    """Collect ``eval_*.yaml`` and ``*.eval.yaml`` spec files as tests."""
    name = file_path.name
    if name.endswith((".eval.yaml", ".eval.yml")) or (
        name.startswith("eval_") and file_path.suffix in (".yaml", ".yml")
    ):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class SpecFile(pytest.File):
    """A spec file: one test."""

    def collect(self) -> Iterator[pytest.Item]:
        yield SpecItem.from_parent(self, name=self.path.stem)


class SpecItem(pytest.Item):
    """Runs a spec and checks its ``assert:`` means."""

    def runtest(self) -> None:
        helper = EvalHelper(self.config, self.path.parent)
        try:
            spec = load_spec(self.path)
            report = helper.run(spec)
            report.assert_spec(spec.assertions)
        finally:
            helper.close()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        from pilothouse.evals import ComparisonError

        if isinstance(excinfo.value, AssertionError | SpecError | ComparisonError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"eval spec {self.path.name}"

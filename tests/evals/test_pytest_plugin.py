"""The pytest plugin: scorer assertions, a whole eval as one test with the gate's statistics, spec
files collected as tests."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

import pilothouse.evals.runner
import pilothouse.pytest_plugin  # loaded before pytester snapshots sys.modules
import pilothouse.store.evals  # noqa: F401
from tests.evals.conftest import sim_config, topic_items, write_jsonl, write_yaml

pytest_plugins = ["pytester"]


def plugin_args(pytester: pytest.Pytester, tmp_path: Path) -> list[str]:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    args = ["-p", "no:cacheprovider", f"--pilothouse-database-url=sqlite:///{tmp_path / 'plugin.db'}"]
    if not any(ep.value == "pilothouse.pytest_plugin" for ep in entry_points(group="pytest11")):
        args = ["-p", "pilothouse.pytest_plugin", *args]  # before the entry point is installed
    return args


def test_scorer_and_eval_assertions(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_jsonl(pytester.path / "topics.jsonl", topic_items(30))
    pytester.makepyfile(
        test_app="""
        def answer(variables):
            return f"Here is {variables['topic']}."

        def sloppy(variables):
            vague = variables["topic"].startswith(("t", "g", "r"))
            return "Here is something." if vague else variables["topic"]

        SCORERS = [{"type": "contains", "value": "{{topic}}"}]

        def test_one_output(pilothouse_eval):
            scorer = {"type": "icontains", "value": "{{city}}"}
            result = pilothouse_eval.score(scorer, "It is PARIS.", city="paris")
            assert result.passed and result.value == 1.0

        def test_whole_eval_passes(pilothouse_eval):
            report = pilothouse_eval.run(dataset="topics.jsonl", target=answer, scorers=SCORERS, repeats=2)
            report.assert_mean("contains", at_least=0.9)
            assert report.summary.results == 60

        def test_regression_fails(pilothouse_eval):
            report = pilothouse_eval.run(dataset="topics.jsonl", target=sloppy, scorers=SCORERS)
            report.assert_mean("contains", at_least=0.9)

        def test_inconclusive_fails_with_the_items_needed(pilothouse_eval):
            report = pilothouse_eval.run(dataset="topics.jsonl", target=sloppy, scorers=SCORERS)
            report.assert_mean("contains", at_least=0.55)

        def test_no_regression_against_a_stored_run(pilothouse_eval):
            good = pilothouse_eval.run(dataset="topics.jsonl", target=answer, scorers=SCORERS)
            bad = pilothouse_eval.run(dataset="topics.jsonl", target=sloppy, scorers=SCORERS)
            again = pilothouse_eval.run(dataset="topics.jsonl", target=answer, scorers=SCORERS)
            again.assert_no_regression(baseline=good.run.id, margins={"contains": 0.2})
            bad.assert_no_regression(baseline=good.run.id)
        """
    )
    result = pytester.runpytest(*plugin_args(pytester, tmp_path))
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*regression: contains: mean 0.5 * below 0.9 with 95% confidence*",
            "*inconclusive: contains: mean 0.5 * cannot tell whether it reaches 0.55; "
            "about * items would likely decide*",
            "*regression: contains: Regression*(look 1, alpha 0.045)*",
        ]
    )


def test_spec_files_are_collected_as_tests(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_jsonl(pytester.path / "items.jsonl", topic_items(12))
    sim_config(pytester.path / "models.yaml")
    for name, prompt in (("eval_good.yaml", "Explain {{topic}}."), ("eval_bad.yaml", "Explain it.")):
        write_yaml(
            pytester.path / name,
            {
                "dataset": "items.jsonl",
                "target": {"model": "sim", "config": "models.yaml", "prompt": prompt},
                "scorers": [{"type": "contains", "value": "{{topic}}"}],
                "assert": {"contains": 0.8},
            },
        )
    result = pytester.runpytest(*plugin_args(pytester, tmp_path), "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*eval_good.yaml::eval_good PASSED*", "*regression: contains: mean 0 *"])

"""``pilothouse prompts optimise`` end to end on a rule-scored task: the task model (a deterministic
rule behind a real provider, see rule_models.py) answers wrong in format and on negations until its
instruction says otherwise; a scripted proposer improves the best instruction it is shown. The
optimiser must find the instruction that fixes both, store it as a new version labelled
``candidate`` (production untouched), and the gate on the held-out test split must then pass it with
a significant improvement. Also: the budget stops a run cleanly, a run resumes after an interruption,
and bad inputs are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pilothouse.cli import cli
from pilothouse.cli.common import CliError
from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.queries import TraceQuery
from pilothouse.evals import Evaluations
from pilothouse.evals.gate import GateVerdict
from pilothouse.prompts import PromptRegistry
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.improve.rule_models import true_label
from tests.server.inprocess import cli_in_process

pytestmark = pytest.mark.slow  # each test runs the CLI over dozens of eval calls

SUBJECTS = ["the film", "the meal", "the hotel", "the concert", "the book", "the service", "the game"]
WORDS = ["good", "great", "lovely", "bad", "awful", "dull", "not good", "not great", "not lovely"]


def _items(start: int, count: int) -> list[DatasetItem]:
    items = []
    for n in range(start, start + count):
        text = f"{SUBJECTS[n % len(SUBJECTS)]} number {n} was {WORDS[n % len(WORDS)]}"
        items.append(DatasetItem(id=f"s{n}", input={"text": text}, expected=true_label(text)))
    return items


@pytest.fixture
def task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path, Path]:
    """A database with the prompt (production: version 1) and the three splits, a models file, and
    the common options (``--database-url``, ``--config``)."""
    monkeypatch.setenv("PILOTHOUSE_HOME", str(tmp_path / "home"))
    url = sqlite_at_head(tmp_path / "optimise.db")
    fail_file = tmp_path / "proposer-fails"
    config = tmp_path / "models.yaml"
    price = {"input": 1000, "output": 1000}  # $ per 1M tokens: a cent or two a call, for the budget
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "task", "provider": "rule-test", "model": "task-1", "price": price},
                    {
                        "name": "proposer",
                        "provider": "rule-test",
                        "model": "proposer-1",
                        "options": {"role": "proposer", "fail_file": str(fail_file)},
                        "price": price,
                    },
                ]
            }
        )
    )
    store = SqlStore.from_url(url)
    try:
        evals = EvalStore(store)
        for name, start, count in (("train", 0, 27), ("validation", 100, 36), ("test", 200, 45)):
            evals.import_items("default", f"sentiment-{name}", _items(start, count))
        PromptRegistry(store).create(
            "default",
            "sentiment",
            {"prompt": "Text: {{text}}", "model": "task"},
            actor="test",
            labels=["production"],
        )
    finally:
        store.close()
    return ["--database-url", url, "--config", str(config)], tmp_path, fail_file


OPTIMISE = ["prompts", "optimise", "sentiment", "--train", "sentiment-train"]
OPTIMISE += ["--validation", "sentiment-validation", "--scorer", "exact", "--proposer", "proposer"]


def test_the_optimiser_finds_a_better_prompt_and_the_gate_passes_it_on_test(
    task: tuple[list[str], Path, Path],
) -> None:
    common, _tmp, _fail = task
    done = cli_in_process(*OPTIMISE, "--trials", "4", "--minibatch", "12", *common)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trial 4/4" in done.stderr  # progress, a line per trial
    assert "validation: starting prompt 0.000, best 1.000" in done.stdout
    url = common[1]
    store = SqlStore.from_url(url)
    try:
        registry = PromptRegistry(store)
        assert registry.get("default", "sentiment", label="production").version == 1  # untouched
        stored = registry.get("default", "sentiment", label="candidate")
        assert stored.version == 2
        system = stored.template[0]
        assert (
            system["role"] == "system" and "one word" in system["content"] and "negation" in system["content"]
        )
        assert stored.template[-1] == {"role": "user", "content": "Text: {{text}}"}
        # every call traced and priced: the proposer's calls are traces of their own, tagged
        proposals = store.list_traces("default", TraceQuery(tags=("optimise",))).data
        assert len(proposals) >= 2 and all(t.trace.cost_usd and t.trace.cost_usd.usd > 0 for t in proposals)
        # full evaluations are runs on the validation split itself; minibatches, versions of one dataset
        names = {d.name for d in EvalStore(store).list_datasets("default")}
        assert names == {"sentiment-train", "sentiment-validation", "sentiment-test", "sentiment-optimise"}
    finally:
        store.close()
    saved = next((task[1] / "home" / "optimise").glob("*.json"))
    assert saved.stat().st_mode & 0o077 == 0  # it quotes train items: the owner's alone
    state = json.loads(saved.read_text())
    assert state["status"] == "finished" and state["stored_version"] == 2
    assert (
        state["proposer_calls"] >= 2
        and float(state["eval_spent_usd"]) > 0
        and float(state["proposer_spent_usd"]) > 0
    )
    store = SqlStore.from_url(url)
    try:
        full = [EvalStore(store).get_run(c["full_run"]) for c in state["candidates"] if c["full_run"]]
    finally:
        store.close()
    assert len(full) >= 2 and {r.dataset for r in full if r is not None} == {"sentiment-validation"}

    gate = cli_in_process(
        "prompts", "promote", "sentiment", "--version", "2", "--dataset", "sentiment-test",
        "--scorer", "exact", *common,
    )  # fmt: skip
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "PROMOTED" in gate.stdout
    store = SqlStore.from_url(url)
    try:
        registry = PromptRegistry(store)
        assert registry.get("default", "sentiment", label="production").version == 2
        detail = registry.history("default", "sentiment", 1)[0].detail
        assert detail["verdict"] == "pass" and detail["metrics"]["exact"]["delta"] == pytest.approx(1.0)
        # significant, by the gate's own test: the old version against the new one is a regression
        reverse = Evaluations.over(store).compare_runs(detail["candidate_run"], detail["baseline_run"])
        assert reverse.verdict is GateVerdict.REGRESSION
    finally:
        store.close()


def test_the_budget_stops_a_run_which_resumes_with_more(task: tuple[list[str], Path, Path]) -> None:
    common, _tmp, _fail = task
    stopped = cli_in_process(*OPTIMISE, "--trials", "3", "--few-shot", "2", "--budget-usd", "0.05", *common)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "STOPPED: the budget $0.05 would be passed" in stopped.stdout
    assert "0 trials" in stopped.stdout
    resume = ["prompts", "optimise", "sentiment", "--resume", "--budget-usd", "100", *common]
    # an option that differs from the saved run is refused, not silently ignored
    for changed in (["--trials", "5"], ["--scorer", "contains"], ["--few-shot", "0"], ["--proposer", "task"]):
        refused = _usage_error(*resume, *changed)
        assert refused.startswith(f"{changed[0]} differs from the run being resumed"), refused
    resumed = cli_in_process(*resume, "--trials", "3", "--scorer", "exact")  # the same: allowed
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "3 trials" in resumed.stdout and "stored sentiment@2" in resumed.stdout
    # few-shot sets from the train split's answers (the starting prompt got none right), tried in trial 2
    state = json.loads(next((task[1] / "home" / "optimise").glob("*.json")).read_text())
    assert len(state["demo_sets"]) > 1 and all(len(d["assistant"].split()) == 1 for d in state["demo_pool"])
    assert any(c["demos"] > 0 and c["trial"] == 2 and c["minibatch_scores"] for c in state["candidates"])


def test_a_run_resumes_after_an_interruption(
    task: tuple[list[str], Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    common, _tmp, fail_file = task
    fail_file.touch()  # the proposer fails once it has been shown a second instruction
    broken = _usage_error(*OPTIMISE, "--trials", "3", "--minibatch", "12", *common)
    assert "the proposer 'proposer' failed" in broken and "continue with --resume" in broken
    progress = capsys.readouterr().err
    assert "trial 1/3" in progress and "trial 2/3" not in progress
    fail_file.unlink()
    resumed = cli_in_process("prompts", "optimise", "sentiment", "--resume", *common)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "trial 1/3" not in resumed.stderr and "trial 3/3" in resumed.stderr  # trial 1 is not redone
    assert "3 trials" in resumed.stdout and "stored sentiment@2" in resumed.stdout


def _usage_error(*args: str) -> str:
    with pytest.raises(CliError) as caught:
        cli.main(list(args), standalone_mode=False)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_bad_inputs_are_one_line_errors(task: tuple[list[str], Path, Path]) -> None:
    common, _tmp, _fail = task
    base = ["prompts", "optimise", "sentiment", "--scorer", "exact", "--proposer", "proposer", *common]
    both = ["--train", "sentiment-train", "--validation", "sentiment-validation"]
    assert "no dataset 'nope'" in _usage_error(
        *base, "--train", "nope", "--validation", "sentiment-validation"
    )
    assert "no dataset 'nope'" in _usage_error(*base, "--train", "sentiment-train", "--validation", "nope")
    assert "unknown scorer" in _usage_error(*base[:3], "--scorer", "exactish", *both, *common).lower()
    assert "--train and --validation" in _usage_error(*base)
    same = ["--train", "sentiment-train", "--validation", "sentiment-train"]
    assert "are the same dataset" in _usage_error(*base, *same)
    no_scorer = _usage_error(*base[:3], "--proposer", "proposer", *both, *common)
    assert no_scorer.startswith("give at least one --scorer") and "--spec" not in no_scorer
    assert "no optimisation to resume" in _usage_error("prompts", "optimise", "other", "--resume", *common)
    assert "not 'production'" in _usage_error(*base, *both, "--label", "production")
    assert "--budget-usd" in _usage_error(*base, *both, "--budget-usd", "-1")
    assert "not served" in _usage_error(
        *base[:3], "--scorer", "exact", "--proposer", "nobody", *both, *common
    )
    assert "no label" in _usage_error(*base, *both, "--from-label", "staging")
    store = SqlStore.from_url(common[1])
    try:  # items curated from traces hold a chat, not the prompt's {{text}}
        chat = [{"role": "user", "content": "the film was good"}]
        EvalStore(store).import_items(
            "default", "chats", [DatasetItem(id=f"c{n}", input={}, messages=chat) for n in range(3)]
        )
    finally:
        store.close()
    assert "uses {{text}}, which 3 of the 3 items of dataset 'chats' lack" in _usage_error(
        *base, "--train", "chats", "--validation", "sentiment-validation"
    )

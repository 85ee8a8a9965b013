"""The CLI: eval run/list/show/compare, datasets import/export/list/from-traces, and the gate's exit
codes (0 pass, 1 regression, 3 inconclusive, 2 usage error) and reports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pilothouse.cli import main
from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, RunStatus, ScoreRecord
from pilothouse.domain.traces import (
    Observation,
    ObservationKind,
    Score,
    ScoreDataType,
    SpanRecord,
    TraceAttributes,
)
from pilothouse.evals.scoring import BaseScorer, Sample, ScoreResult, ScorerSpec, register_scorer
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from pilothouse.testing import SimulatedUpstream
from tests.evals.conftest import explain_spec, write_yaml


class Cli:
    def __init__(self, url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.url = url
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        self.monkeypatch.setattr(sys, "argv", ["pilothouse", *args, "--database-url", self.url])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)
    return Cli(f"sqlite:///{tmp_path / 'cli.db'}", capsys, monkeypatch)


def stored_run(url: str, values: list[float | None], name: str = "contains", prefix: str = "") -> str:
    """A completed run with one binary score per item (None: the target failed); the items are
    ``prefix`` and their position."""
    store = EvalStore(SqlStore.from_url(url))
    items = [DatasetItem(f"{prefix}{n}") for n in range(len(values))]
    version, _ = store.import_items("default", "fixed", items)
    run = store.create_run(
        "default",
        name=None,
        spec={},
        dataset="fixed",
        dataset_version_id=version.id,
        dataset_version=1,
        target="test",
        epochs=1,
        items_total=len(values),
        scorers=[name],
    )
    store.write_results(
        [
            EvalResult(
                run.id,
                f"{prefix}{n}",
                0,
                n + 1,
                None if v is None else "out",
                error="boom" if v is None else None,
                scores=(ScoreRecord(name, v, None if v is None else v >= 1),),
            )
            for n, v in enumerate(values)
        ]
    )
    store.set_run_status(run.id, RunStatus.COMPLETED)
    store.store.close()
    return run.id


def test_eval_run_prints_a_summary_and_the_id_last(cli: Cli, tmp_path: Path) -> None:
    spec = write_yaml(tmp_path / "spec.yaml", explain_spec(tmp_path, 6, repeats=2, concurrency=3))
    code, out, err = cli("eval", "run", str(spec))
    assert code == 0, err
    lines = out.strip().splitlines()
    run_id = lines[-1]
    assert len(run_id) == 32 and run_id.isalnum()
    assert "contains" in out and "100.0%" in out and "items@1: 6 items x 2 repeats" in out
    assert "12/12" in err  # the progress bar
    code, out, _ = cli("eval", "list")
    assert code == 0 and run_id[:6] in out
    code, out, _ = cli("eval", "show", run_id[:10], "--items", "3")
    assert code == 0 and "Explain tides briefly." in out
    code, out, _ = cli("eval", "show", run_id, "--json")
    assert json.loads(out.splitlines()[0])["id"] == run_id and len(out.splitlines()) == 13


@pytest.mark.slow  # a process of its own: what it imports is the point
def test_eval_run_over_http_loads_only_what_it_runs(tmp_path: Path, echo_upstream: SimulatedUpstream) -> None:
    """An eval over HTTP does not import the server, the gateway's pipeline, the comparison's statistics
    or numpy: each would add to every start (benchmarks/eval_runner.py times it)."""
    target = {
        "model": "sim",
        "base_url": echo_upstream.base_url + "/v1",
        "api_key": "k",
        "prompt": "{{topic}}",
    }
    spec = write_yaml(tmp_path / "spec.yaml", explain_spec(tmp_path, 4, target=target))
    unwanted = ("numpy", "pilothouse.server", "pilothouse.gateway._gateway", "pilothouse.evals.gate")
    script = (
        "import sys\n"
        "from pilothouse.cli import main\n"
        f"sys.argv = ['pilothouse', 'eval', 'run', '-q', {str(spec)!r}, '--database-url', "
        f"{'sqlite:///' + str(tmp_path / 'run.db')!r}]\n"
        "main()\n"
        f"print('loaded:', [m for m in {unwanted!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines[-2]) == 32 and "100.0%" in done.stdout  # the run id, then the check below it
    assert lines[-1] == "loaded: []"


def test_eval_run_with_assertions_exits_like_the_gate(cli: Cli, tmp_path: Path) -> None:
    good = write_yaml(tmp_path / "good.yaml", explain_spec(tmp_path, 8, **{"assert": {"contains": 0.5}}))
    code, out, _ = cli("eval", "run", "-q", str(good))
    assert code == 0 and "PASS" in out
    bad = explain_spec(tmp_path, 8, prompt="Explain it.", **{"assert": {"contains": 0.5}})
    code, out, _ = cli("eval", "run", "-q", str(write_yaml(tmp_path / "bad.yaml", bad)))
    assert code == 1 and "REGRESSION" in out and len(out.strip().splitlines()[-1]) == 32


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        ("dataset: [unclosed\n", "not valid YAML"),
        (
            "dataset: missing.jsonl\ntarget: {callable: 'json:dumps'}\nscorers: [{type: is-json}]\n",
            "dataset: the file 'missing.jsonl' does not exist",
        ),
        (
            "dataset: [{a: 1}]\ntarget: {callable: 'json:dumps'}\nscorers: [{type: nope}]\n",
            "unknown scorer type 'nope'",
        ),
        (
            "dataset: nothing-stored\ntarget: {callable: 'json:dumps'}\nscorers: [{type: is-json}]\n",
            "no dataset named 'nothing-stored'",
        ),
    ],
)
def test_bad_specs_are_one_line_usage_errors(cli: Cli, tmp_path: Path, spec_text: str, message: str) -> None:
    (tmp_path / "spec.yaml").write_text(spec_text)
    code, _, err = cli("eval", "run", "spec.yaml")
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_gate_exit_codes_and_reports(cli: Cli, tmp_path: Path) -> None:
    base = stored_run(cli.url, [1.0] * 100)
    worse = stored_run(cli.url, [1.0] * 70 + [0.0] * 30)
    slightly = stored_run(cli.url, [1.0] * 98 + [0.0] * 2)
    other = stored_run(cli.url, [1.0] * 100, name="exact")

    code, _, err = cli("gate", "--baseline", base, "--candidate", base)
    assert code == 2 and "the baseline and the candidate are the same run" in err
    code, out, _ = cli("gate", "--baseline", base, "--candidate", worse, "--report-dir", "reports")
    assert code == 1 and "regression" in out and "reports/gate.md" in out
    report = json.loads((tmp_path / "reports" / "gate.json").read_text())
    assert report["verdict"] == "regression" and report["metrics"][0]["n_paired"] == 100
    assert "<failure" in (tmp_path / "reports" / "gate.xml").read_text()
    assert "Quality gate: REGRESSION" in (tmp_path / "reports" / "gate.md").read_text()
    # the same configuration as `worse`: the pair's second look, at alpha 0.0025
    code, out, _ = cli("gate", "--baseline", base, "--candidate", slightly)
    assert code == 3 and "inconclusive" in out and "items would likely decide at the next look" in out
    assert "Look 2 of this baseline and candidate configuration" in out
    code, out, _ = cli("gate", "--baseline", base, "--candidate", slightly, "--margin", "0.15")
    assert code == 0 and "set a margin" not in out
    code, out, _ = cli("gate", "--baseline", base, "--candidate", slightly, "--margin", "contains=10%")
    assert code == 3  # 10% of the baseline's failure rate (0%): a margin of 0
    assert "with a margin of 0 the gate can show a regression but never a pass" in out
    assert "set a margin" not in out

    code, _, err = cli("gate", "--baseline", base, "--candidate", "0123456789abcdef")
    assert code == 2 and "no eval run '0123456789abcdef'" in err
    code, _, err = cli("gate", "--baseline", base, "--candidate", worse, "--metric", "rubric")
    assert code == 2 and "metric 'rubric' is not in both runs" in err
    code, _, err = cli("gate", "--baseline", base, "--candidate", other)
    assert code == 2 and "no metric (scorer) in common" in err
    code, _, err = cli("gate", "--baseline", base, "--candidate", worse, "--alpha", "0.7")
    assert code == 2 and "--alpha" in err


def test_gate_counts_unmeasured_apart_and_never_lets_them_buy_a_pass(cli: Cli) -> None:
    base = stored_run(cli.url, [1.0] * 50)
    flaky = stored_run(cli.url, [1.0] * 45 + [None] * 5)  # 5 target errors: not failures, not passes
    code, out, _ = cli("gate", "--baseline", base, "--candidate", flaky, "--margin", "0.05")
    assert code == 3 and "candidate 5" in out
    assert "did not score 5 items the baseline measured" in out  # at worst a 10-point loss
    code, out, _ = cli("gate", "--baseline", base, "--candidate", flaky, "--margin", "0.3")
    assert code == 0  # a 10-point worst case is well inside 30 points


def test_gate_refuses_runs_with_no_item_in_common(cli: Cli) -> None:
    base = stored_run(cli.url, [1.0] * 20)
    elsewhere = stored_run(cli.url, [1.0] * 20, prefix="x")
    code, _, err = cli("gate", "--baseline", base, "--candidate", elsewhere)
    assert code == 2 and "cannot be compared: no item in common" in err


def test_eval_compare_shows_item_differences(cli: Cli) -> None:
    base = stored_run(cli.url, [1.0] * 10)
    worse = stored_run(cli.url, [1.0] * 7 + [0.0] * 3)
    code, out, _ = cli("eval", "compare", base, worse)
    assert code == 0
    assert "0 items better, 3 worse, 7 unchanged" in out and "-1.000" in out
    assert "gate: INCONCLUSIVE (contains inconclusive) at look 1" in out  # mid-p McNemar p 0.0625
    code, _, err = cli("eval", "compare", base, worse, "--metric", "exact")
    assert code == 2 and "metric 'exact' is not in both runs" in err


def test_datasets_import_export_list(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "qa.csv").write_text("id,question,expected\nq1,Capital of France?,Paris\nq2,2+2?,4\n")
    code, out, _ = cli("datasets", "import", "qa.csv")
    assert code == 0 and "dataset 'qa' version 1: 2 items" in out
    code, out, _ = cli("datasets", "import", "qa.csv")
    assert "unchanged: version 1" in out
    code, out, _ = cli("datasets", "export", "qa", "-o", "qa.yaml")
    assert code == 0 and "wrote 2 items of qa@1" in out
    code, out, _ = cli("datasets", "export", "qa", "--format", "jsonl")
    assert [json.loads(line)["expected"] for line in out.splitlines()] == ["Paris", "4"]
    code, out, _ = cli("datasets", "export", "qa", "-o", "-")  # stdout, as usual
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == ["q1", "q2"]
    (tmp_path / "notes.txt").write_text("keep me")
    code, _, err = cli("datasets", "export", "qa", "-o", "notes.txt")
    assert code == 2 and "suffix" in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"  # refused before the file was opened
    assert not (tmp_path / "-").exists()
    code, out, _ = cli("datasets", "list")
    assert "qa" in out and "qa.csv" in out
    code, _, err = cli("datasets", "export", "nope")
    assert code == 2 and "no dataset 'nope'" in err
    code, _, err = cli("datasets", "import", "missing.jsonl")
    assert code == 2 and "cannot read the dataset" in err
    (tmp_path / "blank.jsonl").write_text("\n")
    code, _, err = cli("datasets", "import", "blank.jsonl")
    assert code == 2 and "no items for the dataset 'blank'" in err
    code, out, _ = cli("datasets", "list")
    assert "blank" not in out


def test_dataset_from_traces_with_filters(cli: Cli) -> None:
    store = SqlStore.from_url(cli.url)
    now = time.time_ns()
    records = []
    for n, (model, question) in enumerate([("gpt-4o", "Why is the sky blue?"), ("sim-1", "What is 2+2?")]):
        trace_id = f"{n + 1:032x}"
        observation = Observation(
            trace_id=trace_id,
            id=f"{n + 1:016x}",
            name="chat",
            start_ns=now - n,
            end_ns=now,
            kind=ObservationKind.GENERATION,
            input=json.dumps([{"role": "user", "content": question}]),
            output="an answer",
            model=model,
        )
        records.append(SpanRecord("default", observation, TraceAttributes(name="qa", tags=("prod",))))
    store.write_spans(records)
    store.add_scores("default", [Score("s1", f"{1:032x}", "helpful", ScoreDataType.NUMERIC, 1.0)])
    store.close()
    code, out, err = cli(
        "datasets",
        "from-traces",
        "--name",
        "golden",
        "--since",
        "1h",
        "--tag",
        "prod",
        "--score",
        "helpful>=1",
    )
    assert code == 0, err
    assert "1 item from traces" in out
    code, out, _ = cli("datasets", "export", "golden")
    [item] = [json.loads(line) for line in out.splitlines()]
    assert item["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert item["expected"] == "an answer" and item["source_trace_id"] == f"{1:032x}"
    assert item["metadata"]["scores"] == {"helpful": 1.0}
    code, out, _ = cli("datasets", "from-traces", "--name", "sim-only", "--model", "sim-1")
    assert "1 item from traces" in out
    code, _, err = cli("datasets", "from-traces", "--name", "x", "--score", "helpful")
    assert code == 2 and "NAME>=VALUE" in err
    # A filter that matches nothing (a typo) stores no empty version
    code, _, err = cli("datasets", "from-traces", "--name", "typo", "--model", "sim-l")
    assert code == 1 and "nothing stored" in err and err.count("\n") == 1
    code, out, _ = cli("datasets", "list")
    assert "typo" not in out


def test_dataset_files_are_read_within_bounds_and_export_errors_are_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pilothouse.evals.datasets as dataset_files

    # /dev/zero has no newline and a stat size of 0: it was read whole (20 GB) before any error
    monkeypatch.setattr(dataset_files, "MAX_LINE_CHARS", 4096)
    monkeypatch.setattr(dataset_files, "MAX_YAML_DATASET_BYTES", 4096)
    for fmt, message in [
        ("jsonl", "a line longer than"),
        ("csv", "a line longer than"),
        ("yaml", "larger than"),
    ]:
        code, _, err = cli("datasets", "import", "/dev/zero", "--format", fmt, "--name", "zeros")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    (tmp_path / "qa.jsonl").write_text('{"question": "2+2?", "expected": "4"}\n')
    assert cli("datasets", "import", "qa.jsonl")[0] == 0
    for target in ("/proc/nope", str(tmp_path / "missing" / "qa.jsonl")):
        code, _, err = cli("datasets", "export", "qa", "--format", "openai", "-o", target)
        assert code == 2 and err.startswith("Error: cannot write") and "Traceback" not in err
    code, _, err = cli("datasets", "export", "qa", "--version", "99")
    assert code == 2 and "no version 99 of dataset 'qa'" in err


@register_scorer("test-novel-topic", replace=True)
class NovelTopic(BaseScorer):
    """A plugin scorer that reports spans as the hallucination scorer does: the item's topic where the
    output names it, flagged when the topic is listed in ``novel``."""

    allowed_options = frozenset({"novel"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.novel = set(spec.option("novel", []))

    async def measure(self, sample: Sample) -> ScoreResult:
        topic = str(sample.input["topic"])
        at = sample.output.find(topic)
        flagged = topic in self.novel and at >= 0
        spans = [{"start": at, "end": at + len(topic), "text": topic, "reason": "novel", "score": 1.0}]
        return ScoreResult(float(not flagged), details={"spans": spans if flagged else [], "source": "test"})


def test_eval_run_and_show_count_flagged_results_and_json_has_the_details(cli: Cli, tmp_path: Path) -> None:
    spec = explain_spec(tmp_path, 4)
    spec["scorers"] = [{"type": "test-novel-topic", "name": "novel", "novel": ["gravity", "volcanoes"]}]
    code, out, err = cli("eval", "run", str(write_yaml(tmp_path / "spec.yaml", spec)), "--quiet")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    flagged = (
        f"flagged   novel: 2 of 4 results have unsupported spans (see them: pilothouse eval show {run_id[:8]}"
    )
    assert flagged in out
    code, out, _ = cli("eval", "show", run_id, "--items", "3")
    assert code == 0 and "novel=0 (1 span)" in out and "novel=1 (0 spans)" in out
    assert "flagged   novel: 1 of 3 results shown have unsupported spans" in out  # short: no spans printed
    assert 'novel"' not in out
    code, out, _ = cli("eval", "show", run_id, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()[1:]]
    details = {row["item_id"]: row["scores"][0]["details"] for row in rows}
    assert details["2"] == {
        "spans": [{"start": 8, "end": 15, "text": "gravity", "reason": "novel", "score": 1.0}],
        "source": "test",
    }
    assert details["1"] == {"spans": [], "source": "test"}
    old = stored_run(cli.url, [1.0, 0.0])  # stored before details were kept, or by a scorer without any
    code, out, _ = cli("eval", "show", old)
    assert code == 0 and "flagged" not in out and "span" not in out


@register_scorer("test-list-details", replace=True)
class ListDetails(BaseScorer):
    """A plugin scorer whose details are a list, with a secret inside a mapping of it."""

    async def measure(self, sample: Sample) -> ScoreResult:
        return ScoreResult(1.0, details=["spans", {"X-Api-Key": "sk-plugin-secret"}])  # type: ignore[arg-type]


def test_eval_run_takes_a_plugin_scorers_details_that_are_not_a_mapping(cli: Cli, tmp_path: Path) -> None:
    spec = explain_spec(tmp_path, 2)
    spec["scorers"] = [{"type": "test-list-details", "name": "listed"}]
    code, out, err = cli("eval", "run", str(write_yaml(tmp_path / "spec.yaml", spec)))
    assert code == 0 and "Traceback" not in err, err
    run_id = out.strip().splitlines()[-1]
    code, out, _ = cli("eval", "show", run_id, "--json")
    assert code == 0 and "sk-plugin-secret" not in out
    details = [json.loads(line)["scores"][0]["details"] for line in out.splitlines()[1:]]
    assert details == [{"value": ["spans", {"X-Api-Key": "<redacted>"}]}] * 2


def test_eval_run_and_show_print_ids_names_and_outputs_literally(cli: Cli, tmp_path: Path) -> None:
    """Rich markup and terminal escapes in what a run holds are printed as text, never read: a scorer
    named ``[/]`` used to end ``eval run`` and ``eval show`` with a MarkupError."""
    spec = explain_spec(tmp_path, 1, prompt="[link=http://x]{{topic}}[/link] \x1b[31mred\x1b[0m")
    spec["dataset"] = {"items": [{"id": "[red]i[/red]", "input": {"topic": "[/bold]"}}]}
    spec["scorers"] = [{"type": "contains", "value": "{{topic}}", "name": "[/]"}]
    code, out, err = cli("eval", "run", str(write_yaml(tmp_path / "spec.yaml", spec)))
    assert code == 0 and "Traceback" not in err, err
    assert "│ [/]" in out  # the metric's row
    run_id = out.strip().splitlines()[-1]
    code, out, err = cli("eval", "show", run_id)
    assert code == 0, err
    assert "[red]i[/red]" in out and "[/]=1" in out and "[link=http://x][/bold][/link]" in out
    assert "\x1b[31m" not in out and "?[31mred" in out
    code, out, _ = cli("eval", "list")
    assert code == 0 and "[/] 1.000" in out


def test_eval_run_says_why_a_scorer_measured_nothing(cli: Cli, tmp_path: Path) -> None:
    # The judge answers words with no score in them (a model that cannot grade): every rubric score is
    # unmeasured, and `eval run` says so with the judge's problem instead of a silent "n/a".
    with SimulatedUpstream() as judge_server:
        spec = explain_spec(
            tmp_path,
            n=4,
            judge={
                "model": "gpt-4o-mini",
                "base_url": judge_server.base_url + "/v1",
                "api_key": "not-needed",
            },
            scorers=[
                {"type": "contains", "value": "{{topic}}"},
                {"type": "rubric", "criteria": "Is it correct?"},
            ],
        )
        write_yaml(tmp_path / "spec.yaml", spec)
        code, out, err = cli("eval", "run", "spec.yaml", "-q")
    assert code == 0
    run_id = out.strip().splitlines()[-1]
    warnings = [line for line in err.replace("\n", " ").split("warning: ") if line.startswith("scorer ")]
    assert len(warnings) == 1, err  # contains measured every answer: no warning for it
    assert warnings[0].startswith("scorer rubric measured none of the 4 answers: could not find a score")
    assert f"pilothouse eval show {run_id[:8]} --json" in warnings[0]


@pytest.mark.parametrize(
    ("ms", "shown"),
    [(8.97, "8.97 ms"), (412.4, "412 ms"), (999.9, "1,000 ms"), (11_312.5, "11,300 ms")],
)
def test_the_run_summary_prints_a_mean_latency_people_read(ms: float, shown: str) -> None:
    from pilothouse.cli.evals import _milliseconds

    assert _milliseconds(ms) == shown  # a local model's 11 s was "1.13e+04 ms"


def test_eval_run_shows_the_first_target_error_when_every_call_failed(cli: Cli, tmp_path: Path) -> None:
    # a typo in the template's variable fails every call; the warning used to say only "see eval show"
    write_yaml(tmp_path / "spec.yaml", explain_spec(tmp_path, n=3, prompt="Explain {{topik}} briefly."))
    code, _, err = cli("eval", "run", "spec.yaml", "-q")
    assert code == 0
    flat = " ".join(err.split())
    assert "every call to the target failed (3 of 3), so nothing was measured. The first: " in flat, err
    assert "template variable 'topik' is not defined" in flat, err

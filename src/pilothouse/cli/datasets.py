"""``pilothouse datasets``: stored, versioned datasets. Import and export files (and training files for
fine-tuning), list them, curate them from traces. Heavy modules are imported inside the commands."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilothouse.cli.common import CliError, database_option
from pilothouse.cli.evals import eval_store, evaluations

if TYPE_CHECKING:
    from pilothouse.domain.curation import CurationPlan
    from pilothouse.domain.datasets import DatasetItem
    from pilothouse.evals._curation import Curated, Embed
    from pilothouse.store.evals import EvalStore

EXPORT_FORMATS = ("jsonl", "csv", "yaml", "openai", "hf-chat", "dpo")


@click.group()
def datasets() -> None:
    """Stored, versioned datasets: import and export files, curate from traces."""


@datasets.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Dataset name (default: the file name without suffix).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "yaml"]), default=None)
@click.option("--description", default=None)
@click.option("--project", default="default", show_default=True)
@database_option
def import_command(
    file: Path,
    name: str | None,
    fmt: str | None,
    description: str | None,
    project: str,
    database_url: str | None,
) -> None:
    """Store FILE (JSONL, CSV or YAML) as the next version of a dataset."""
    from pilothouse.domain.datasets import DatasetError
    from pilothouse.evals.datasets import read_items

    store = eval_store(database_url, create=True)
    try:
        version, created = store.import_items(
            project, name or file.stem, read_items(file, fmt), source=str(file), description=description
        )
    except DatasetError as exc:
        raise CliError(str(exc), exit_code=2) from None
    finally:
        store.store.close()
    if created:
        click.echo(f"dataset {version.name!r} version {version.version}: {version.item_count} items")
    else:
        click.echo(
            f"dataset {version.name!r} unchanged: version {version.version} has the same "
            f"{version.item_count} items"
        )


class _StoredItems:
    """A dataset version's items, re-iterable (CSV export reads them twice)."""

    def __init__(self, store: EvalStore, version_id: str) -> None:
        self.store = store
        self.version_id = version_id

    def __iter__(self) -> Iterator[DatasetItem]:
        return (item for _, item in self.store.iter_items(self.version_id))


@datasets.command("export")
@click.argument("name")
@click.option(
    "--version", "version_number", type=click.IntRange(min=1), default=None, help="Default: newest."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default=None,
    help="A dataset file (jsonl, csv, yaml; default: from the suffix) or a training file: openai "
    "(fine-tuning JSONL), hf-chat (TRL prompt-completion), dpo (TRL preference pairs).",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Default: stdout.")
@click.option("--project", default="default", show_default=True)
@database_option
def export_command(
    name: str,
    version_number: int | None,
    fmt: str | None,
    output: Path | None,
    project: str,
    database_url: str | None,
) -> None:
    """Write a stored dataset version as JSONL, CSV or YAML, or as a training file."""
    from pilothouse.domain.datasets import DatasetError
    from pilothouse.evals.datasets import format_of, write_items

    if output == Path("-"):
        output = None  # the usual spelling of stdout
    kind = None
    if fmt not in ("openai", "hf-chat", "dpo"):
        # decided before the file is opened: a bad suffix must not leave an empty (or emptied) file
        try:
            kind = format_of(output if output is not None else Path("x.jsonl"), fmt)
        except DatasetError as exc:
            raise CliError(str(exc), exit_code=2) from None
    store = eval_store(database_url)
    try:
        version = store.get_version(project, name, version_number)
        if version is None and version_number is not None and store.get_version(project, name) is not None:
            raise CliError(f"no version {version_number} of dataset {name!r}", exit_code=2)
        if version is None:
            raise CliError(f"no dataset {name!r} in project {project!r}", exit_code=2)
        items = _StoredItems(store, version.id)
        skipped = 0
        with _output(output) as handle:
            if kind is None:
                from pilothouse.evals._finetune_formats import write_training_file

                count, skipped = write_training_file(items, handle, fmt)  # type: ignore[arg-type]
            else:
                count = write_items(items, handle, kind)
    finally:
        store.store.close()
    if skipped:
        reason = "no rejected answer" if fmt == "dpo" else "no expected answer"
        click.echo(f"skipped {skipped} items of {version.label} ({reason})", err=True)
    if count == 0 and fmt in ("openai", "hf-chat", "dpo"):
        hint = " (curate with --dedup --prefer-score SCORE)" if fmt == "dpo" else ""
        raise CliError(f"no item of {version.label} makes a {fmt} record{hint}")
    if output is not None:
        click.echo(f"wrote {count} items of {version.label} to {output}")


@contextmanager
def _output(path: Path | None) -> Iterator[Any]:
    if path is None:
        yield sys.stdout
        return
    try:
        handle = path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}", exit_code=2) from None
    with handle:
        yield handle


@datasets.command("list")
@click.option("--project", default="default", show_default=True)
@database_option
def list_datasets_command(project: str, database_url: str | None) -> None:
    """Datasets with their newest version."""
    from pilothouse.domain.timeparse import iso

    store = eval_store(database_url)
    found = store.list_datasets(project)
    store.store.close()
    click.echo(f"{'NAME':30}  {'VERSION':>7}  {'ITEMS':>8}  {'CREATED':20}  SOURCE")
    for d in found:
        v = d.latest
        click.echo(
            f"{d.name[:30]:30}  {v.version:>7}  {v.item_count:>8}  "
            f"{iso(v.created_ns)[:19]:20}  {v.source or ''}"
        )


@datasets.command("from-traces")
@click.option("--name", required=True, help="The dataset to add a version to.")
@click.option("--since", default=None, help="Traces after this: 1h, 7d, ISO 8601 or Unix seconds.")
@click.option("--until", default=None, help="Traces before this.")
@click.option("--model", default=None)
@click.option("--trace-name", default=None, help="Only traces of this name.")
@click.option("--tag", "tags", multiple=True, help="Only traces with this tag (repeatable).")
@click.option("--status", type=click.Choice(["ok", "error"]), default=None)
@click.option("--score", "scores", multiple=True, help="A score condition, e.g. 'correct>=1' (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many traces.")
@click.option("--dedup", is_flag=True, help="One item per distinct input (the best answer kept).")
@click.option(
    "--near-duplicates",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Also drop inputs this similar (cosine, e.g. 0.95) to one kept, by the local embedding model.",
)
@click.option(
    "--embedding-model",
    default="all-minilm-l6-v2",
    show_default=True,
    help="For --near-duplicates: a bundled model or a Hugging Face folder.",
)
@click.option(
    "--prefer-score",
    default=None,
    help="With --dedup: keep the answer best by this score, the worst as the rejected one (DPO).",
)
@click.option("--lower-is-better", is_flag=True, help="For --prefer-score.")
@click.option("--split", "split_text", default=None, help="Shares, e.g. 80/10/10 (train/validation/test).")
@click.option("--group-by", default=None, help="Keep each session, user (or metadata KEY) in one split.")
@click.option("--stratify-by", default=None, help="Keep the shares of 'expected' (or a metadata KEY).")
@click.option("--seed", type=int, default=0, show_default=True, help="For --split.")
@click.option("--project", default="default", show_default=True)
@database_option
def from_traces_command(
    name: str,
    since: str | None,
    until: str | None,
    model: str | None,
    trace_name: str | None,
    tags: tuple[str, ...],
    status: str | None,
    scores: tuple[str, ...],
    limit: int | None,
    dedup: bool,
    near_duplicates: float | None,
    embedding_model: str,
    prefer_score: str | None,
    lower_is_better: bool,
    split_text: str | None,
    group_by: str | None,
    stratify_by: str | None,
    seed: int,
    project: str,
    database_url: str | None,
) -> None:
    """A dataset version from stored traces: the input as the item, the output as expected.

    Curation: --dedup (one item per input), --near-duplicates, --prefer-score (preference pairs),
    --split with --group-by and --stratify-by (stored as NAME-train, NAME-validation, NAME-test)."""
    from pilothouse.domain.datasets import DatasetError, check_dataset_name
    from pilothouse.domain.queries import InvalidQuery, TraceQuery
    from pilothouse.domain.timeparse import parse_time_ns
    from pilothouse.domain.traces import Status

    now = time.time_ns()
    try:
        query = TraceQuery(
            start_ns=parse_time_ns(since, now) if since else None,
            end_ns=parse_time_ns(until, now) if until else None,
            name=trace_name,
            model=model,
            tags=tags,
            status=Status(status) if status else None,
        )
        filters = [_score_filter(text) for text in scores]
    except (ValueError, InvalidQuery) as exc:
        raise CliError(str(exc), exit_code=2) from None
    source = "traces " + " ".join(
        f"{k}={v}"
        for k, v in (("since", since), ("until", until), ("model", model), ("name", trace_name))
        if v
    )
    plan = _plan(
        dedup, near_duplicates, prefer_score, lower_is_better, split_text, group_by, stratify_by, seed
    )
    try:  # every name it would store, before any trace is read
        for stored in [f"{name}-{split.name}" for split in plan.splits] or [name]:
            check_dataset_name(stored)
    except DatasetError as exc:
        raise CliError(f"--name: {exc}", exit_code=2) from None
    embed = _embedder(embedding_model) if near_duplicates is not None else None
    with evaluations(database_url) as service:
        try:
            curated = service.curate(
                project, name, query, filters, plan, limit=limit, source=source.strip(), embed=embed
            )
        except DatasetError as exc:
            raise CliError(str(exc)) from None
    _print_curated(name, curated, plan)


def _plan(
    dedup: bool,
    near_duplicates: float | None,
    prefer_score: str | None,
    lower_is_better: bool,
    split_text: str | None,
    group_by: str | None,
    stratify_by: str | None,
    seed: int,
) -> CurationPlan:
    from pilothouse.domain.curation import CurationPlan, parse_splits
    from pilothouse.domain.datasets import DatasetError

    if prefer_score is not None and not dedup:
        raise CliError("--prefer-score needs --dedup (it picks among the answers to one input)", exit_code=2)
    if (group_by is not None or stratify_by is not None) and not split_text:
        raise CliError("--group-by and --stratify-by need --split", exit_code=2)
    if group_by == "" or stratify_by == "":
        raise CliError(
            "--group-by and --stratify-by need a key (session, user, expected or a metadata key)", exit_code=2
        )
    if lower_is_better and prefer_score is None:
        raise CliError("--lower-is-better applies to --prefer-score: give both", exit_code=2)
    try:
        splits = parse_splits(split_text) if split_text else ()
    except DatasetError as exc:
        raise CliError(f"--split: {exc}", exit_code=2) from None
    return CurationPlan(
        dedup=dedup,
        near_duplicate=near_duplicates,
        preference_score=prefer_score,
        lower_is_better=lower_is_better,
        splits=splits,
        group_by=group_by,
        stratify_by=stratify_by,
        seed=seed,
    )


def _embedder(model: str) -> Embed:
    """The embedding function of a local model (loaded on first use)."""
    from pilothouse.providers.base import Deployment, ProviderError
    from pilothouse.providers.local_embedding import LocalEmbeddingProvider

    provider = LocalEmbeddingProvider(Deployment(name=model, provider="local", model=model))

    def embed(texts: list[str]) -> list[list[float]]:
        try:
            return provider.embed_texts(texts)[0]
        except ProviderError as exc:
            raise CliError(f"--embedding-model: {exc}", exit_code=2) from None

    return embed


def _print_curated(name: str, curated: Curated, plan: CurationPlan) -> None:
    report = curated.report
    steps = [f"{report.matched} traces"]
    if plan.dedup:
        steps.append(f"{report.exact_duplicates} duplicate inputs merged")
    if plan.near_duplicate is not None:
        steps.append(f"{report.near_duplicates} near-duplicates dropped")
    if report.corrected:
        steps.append(f"{report.corrected} reviewed corrections used")
    if plan.preference_score is not None:
        steps.append(f"{report.preference_pairs} preference pairs")
    if report.scrubbed:
        steps.append(f"{report.scrubbed} items scrubbed")
    if plan.dedup or plan.near_duplicate is not None or plan.splits:
        click.echo("curated: " + ", ".join(steps))
    before = report.matched - report.exact_duplicates
    if plan.near_duplicate is not None and report.near_duplicates * 2 > before:
        click.echo(
            f"note: {report.near_duplicates} of {before} inputs were dropped as near-duplicates; "
            f"if they differ, raise --near-duplicates above {plan.near_duplicate:g}",
            err=True,
        )
    if plan.group_by is not None and report.ungrouped:
        click.echo(
            f"note: {report.ungrouped} items have no {plan.group_by!r} (each is a group of its own)", err=True
        )
    if report.unstratified:
        click.echo(
            f"note: {report.unstratified} items have no {plan.stratify_by!r} in their metadata "
            "(stratified as one value)",
            err=True,
        )
    for stored, (version, created) in curated.versions.items():
        state = "" if created else " (unchanged)"
        groups = ""
        if plan.splits:
            split_name = stored.removeprefix(f"{name}-")
            count = report.groups.get(split_name, 0)
            groups = f" in {count} group{'' if count == 1 else 's'}"
        items = f"{version.item_count} item{'' if version.item_count == 1 else 's'}"
        click.echo(f"dataset {version.name!r} version {version.version}{state}: {items} from traces{groups}")


def _score_filter(text: str) -> Any:
    import re

    from pilothouse.store.evals import ScoreFilter

    match = re.fullmatch(r"\s*([^<>=!\s]+)\s*(>=|<=|==|=|>|<)\s*(-?[\d.]+(?:[eE][-+]?\d+)?)\s*", text)
    if match is None:
        raise ValueError(f"--score {text!r}: write NAME>=VALUE (or <=, >, <, ==)")
    op = "==" if match.group(2) == "=" else match.group(2)
    return ScoreFilter(match.group(1), op, float(match.group(3)))

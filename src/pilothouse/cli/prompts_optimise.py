"""``pilothouse prompts optimise``: search a better instruction and few-shot set for a registered prompt
(see :mod:`pilothouse.improve.optimise`) and store the winner as a new version under a label of its
own; promotion to production stays ``pilothouse prompts promote ... --dataset TEST``."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from pilothouse.cli.common import CliError, database_option, run_async


def _budget(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise CliError(f"--budget-usd: not a number: {value!r}", exit_code=2) from None
    if not amount.is_finite() or amount <= 0 or amount > 1_000_000:
        raise CliError("--budget-usd: must be more than 0 and at most 1000000", exit_code=2)
    return str(amount)


@click.command("optimise")
@click.argument("name")
@click.option("--from-label", default="production", show_default=True, help="The version to start from.")
@click.option("--train", "train", default=None, help="The stored train split (failures, demonstrations).")
@click.option("--validation", default=None, help="The stored validation split candidates are scored on.")
@click.option(
    "--scorer",
    "scorers",
    multiple=True,
    help="A scorer: a type ('exact') or a YAML mapping ('{type: regex, value: ...}'); repeatable.",
)
@click.option("--proposer", default=None, help="The model that writes instructions (default: the prompt's).")
@click.option("--trials", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--few-shot", type=click.IntRange(0, 16), default=0, show_default=True, help="Demos per set.")
@click.option("--minibatch", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--budget-usd", "budget", default=None, help="Stop before spending more than this.")
@click.option("--label", default="candidate", show_default=True, help="The label the winner gets.")
@click.option("--config", "config", default=None, help="The gateway config file of in-process models.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the interrupted (or budget-stopped) run of NAME.")
@click.option("--project", default="default", show_default=True, help="The project.")
@database_option
def optimise(
    name: str,
    from_label: str,
    train: str | None,
    validation: str | None,
    scorers: tuple[str, ...],
    proposer: str | None,
    trials: int,
    few_shot: int,
    minibatch: int,
    budget: str | None,
    label: str,
    config: str | None,
    seed: int,
    resume: bool,
    project: str,
    database_url: str | None,
) -> None:
    """Search instructions and few-shot examples for prompt NAME: a proposer model writes
    instructions from the current prompt, failing train examples and earlier scores; candidates are
    scored on validation minibatches, the best few on all of it. The winner is stored as a new
    version labelled --label (never production). Every call is traced and priced; the state is kept
    under $PILOTHOUSE_HOME/optimise/ after each trial, so --resume continues a stopped run. Exit 0
    when a better version was stored, 1 when none beat the start, 3 when the budget stopped it."""
    from pilothouse.cli.prompts import _actor, _promotion_spec, _registry, _usage_errors
    from pilothouse.config import ConfigError, load_settings, load_yaml
    from pilothouse.domain.datasets import DatasetError
    from pilothouse.evals import Evaluations
    from pilothouse.evals.calls import Options, TargetConfigError
    from pilothouse.evals.clients import chat_model
    from pilothouse.evals.runner import RunError
    from pilothouse.evals.spec import SpecError, read_spec_file
    from pilothouse.improve._optimise_core import OptimiseSettings, OptimiseState
    from pilothouse.improve.optimise import OptimiseError, Optimiser, load_state, state_file

    try:
        home = load_settings(database_url=database_url).home
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    path = state_file(home, project, name)
    cap = _budget(budget)
    state: OptimiseState | None = None
    with _registry(database_url) as (registry, store), _usage_errors():
        try:
            if resume:
                state = load_state(path)
                given = {
                    "from_label": from_label, "train": train, "validation": validation,
                    "scorers": scorers, "proposer": proposer, "trials": trials, "few_shot": few_shot,
                    "minibatch": minibatch, "label": label, "seed": seed,
                }  # fmt: skip
                _check_unchanged(state.settings, given, load_yaml)
                if cap is not None:  # raising the cap is how a budget-stopped run goes on
                    from dataclasses import replace

                    state.settings = replace(state.settings, budget_usd=cap)
            else:
                if train is None or validation is None:
                    raise CliError(
                        "give --train and --validation (stored datasets), or --resume", exit_code=2
                    )
                if train == validation:
                    raise CliError(
                        "--train and --validation are the same dataset: candidates would be scored on "
                        "the examples they were written from; give two splits",
                        exit_code=2,
                    )
                if not scorers:
                    raise CliError(
                        "give at least one --scorer (what candidates are scored by on --validation)",
                        exit_code=2,
                    )
                spec, _ = _promotion_spec(None, validation, scorers, load_yaml, read_spec_file, SpecError)
                start = registry.get(project, name, label=from_label)
                settings = OptimiseSettings(
                    project=project,
                    name=name,
                    from_label=from_label,
                    base_version=start.version,
                    train=train,
                    validation=validation,
                    scorers=tuple(spec["scorers"]),
                    proposer=proposer or start.model or "",
                    trials=trials,
                    few_shot=few_shot,
                    budget_usd=cap,
                    label=label,
                    minibatch_size=minibatch,
                    seed=seed,
                )
                Optimiser.check_settings(settings)
                state = OptimiseState(settings)
            if not state.settings.proposer:
                raise CliError("the prompt names no model: give --proposer", exit_code=2)
            target: dict[str, Any] = {"config": config} if config else {}
            options = Options(target, "proposer", {"config"})
            model = chat_model(options, state.settings.proposer, Path.cwd(), 120.0)
            optimiser = Optimiser(
                Evaluations.over(store),
                registry,
                state,
                path=path,
                proposer=model,
                target=target,
                base_dir=Path.cwd(),
                actor=_actor(),
                progress=lambda line: click.echo(line, err=True),
            )
            optimiser.check()
            state = run_async(optimiser.run())
        except (OptimiseError, SpecError, DatasetError, TargetConfigError, RunError) as exc:
            if (
                state is not None and state.prepared and path.exists()
            ):  # an interrupted run: the state is kept
                raise CliError(f"{exc}; continue with --resume ({path})", exit_code=2) from None
            raise CliError(str(exc), exit_code=2) from None
    _report(state, path)


# each option --resume compares with the saved run, and the saved setting it names
_RESUMED = {
    "from_label": "from_label", "train": "train", "validation": "validation", "scorers": "scorers",
    "proposer": "proposer", "trials": "trials", "few_shot": "few_shot", "minibatch": "minibatch_size",
    "label": "label", "seed": "seed",
}  # fmt: skip


def _check_unchanged(settings: Any, given: dict[str, Any], load_yaml: Any) -> None:
    """--resume continues a run as it was started: an option given on the command line that differs
    from the saved run is refused rather than silently ignored (--budget-usd may change: raising it is
    how a budget-stopped run goes on)."""
    from click.core import ParameterSource

    from pilothouse.cli.prompts import _promotion_spec

    context = click.get_current_context()
    for option, setting in _RESUMED.items():
        if context.get_parameter_source(option) is not ParameterSource.COMMANDLINE:
            continue
        value, saved = given[option], getattr(settings, setting)
        if option == "scorers":
            value = tuple(_promotion_spec(None, "-", value, load_yaml, None, None)[0]["scorers"])
            saved = tuple(saved)
        if value != saved:
            flag = "--" + option.replace("_", "-").removesuffix("s" if option == "scorers" else "")
            raise CliError(
                f"{flag} differs from the run being resumed ({saved!r}): --resume continues a run as it "
                "was started (only --budget-usd may change); start a new run without --resume",
                exit_code=2,
            )


def _report(state: Any, path: Path) -> None:
    import sys

    settings = state.settings
    baseline = state.baseline.full_score if state.candidates else None
    best = state.best() if state.candidates and baseline is not None else None
    unpriced = f" (+{state.unpriced_calls} unpriced calls)" if state.unpriced_calls else ""
    click.echo(
        f"{state.trials_done} trials, {len(state.candidates)} candidates, "
        f"{state.proposer_calls} proposer calls, {len(state.eval_runs)} eval runs, "
        f"spent {state.spent.display()}{unpriced}"
    )
    if best is not None:
        click.echo(f"validation: starting prompt {baseline:.3f}, best {best.full_score:.3f}")
    if state.stored_version is not None:
        click.echo(
            f"stored {settings.name}@{state.stored_version} as {settings.label!r}; "
            "gate it on the test split: "
            f"pilothouse prompts promote {settings.name} --version {state.stored_version} --dataset TEST ..."
        )
    if state.status == "budget":
        click.echo(f"STOPPED: {state.stopped_because}; continue with --resume --budget-usd MORE ({path})")
        sys.exit(3)
    sys.exit(0 if state.stored_version is not None else 1)

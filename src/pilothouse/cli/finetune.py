"""``pilothouse finetune``: train a LoRA adapter (or every weight) of a local model on a dataset's
answers, list the trained versions, export one for vLLM or TGI."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import click

from pilothouse.cli.common import CliError, database_option


@click.group()
def finetune() -> None:
    """Fine-tune local models on datasets (distillation: a dataset of a teacher's answers)."""


@finetune.command("run")
@click.option("--dataset", required=True, help="A stored dataset: NAME (newest version) or NAME@N.")
@click.option("--name", required=True, help="The adapter to train (a new version of it).")
@click.option("--base", default="smollm2", show_default=True, help="smollm2, a .gguf file or a model folder.")
@click.option("--method", type=click.Choice(["lora", "full"]), default="lora", show_default=True)
@click.option("--lora-r", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=int, default=16, show_default=True)
@click.option(
    "--target-modules", default="q_proj,v_proj", show_default=True, help="For LoRA, comma-separated."
)
@click.option("--learning-rate", type=float, default=2e-4, show_default=True)
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps (wins over --epochs).")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True, help="Longer examples are skipped.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--checkpoint-every", type=int, default=50, show_default=True, help="Steps between checkpoints."
)
@click.option(
    "--restart", is_flag=True, help="Discard an unfinished run of this adapter instead of continuing it."
)
@click.option("--project", default="default", show_default=True)
@database_option
def run_command(
    dataset: str,
    name: str,
    base: str,
    method: str,
    lora_r: int,
    lora_alpha: int,
    target_modules: str,
    learning_rate: float,
    epochs: float,
    max_steps: int | None,
    batch_size: int,
    max_length: int,
    seed: int,
    device: str,
    checkpoint_every: int,
    restart: bool,
    project: str,
    database_url: str | None,
) -> None:
    """Train the adapter NAME on the answers of DATASET. Interrupted (Ctrl-C), it writes a checkpoint;
    the same command continues from it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pilothouse.cli.evals import eval_store
    from pilothouse.domain.datasets import DatasetError
    from pilothouse.improve import FinetuneError, FinetuneSettings, train_adapter

    settings = FinetuneSettings(
        method=method,  # type: ignore[arg-type]
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
        learning_rate=learning_rate,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        device=device,
        checkpoint_every=checkpoint_every,
    )
    try:
        settings.check()
    except FinetuneError as exc:
        raise CliError(str(exc), exit_code=2) from None
    interrupted: list[bool] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        interrupted.append(True)

    previous = signal.signal(signal.SIGINT, stop)
    store = eval_store(database_url)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, TextColumn("{task.fields[status]}"), transient=False) as bar:
            task = bar.add_task(f"training {name}", total=None, status="loading")

            def show(p: object) -> None:
                from pilothouse.improve import Progress as Step

                assert isinstance(p, Step)
                status = f"loss {p.loss:.3f}  {p.tokens_per_s:.0f} tokens/s"
                bar.update(task, total=p.total_steps, completed=p.step, status=status)

            result = train_adapter(
                store,
                project,
                dataset,
                name,
                base=base,
                settings=settings,
                restart=restart,
                progress=show,
                should_stop=lambda: bool(interrupted),
            )
    except (FinetuneError, DatasetError) as exc:
        raise CliError(str(exc), exit_code=2) from None
    finally:
        signal.signal(signal.SIGINT, previous)
        store.store.close()
    if "stopped_at" in result.card:
        click.echo(
            f"stopped at step {result.card['stopped_at']} of {result.card['steps']}: checkpoint in "
            f"{result.output_dir} (run the same command to continue)"
        )
        raise SystemExit(130)
    card = result.card
    if card.get("resumed_from"):
        click.echo(f"continued the checkpoint of step {card['resumed_from']}")
    click.echo(
        f"trained {card['name']}@{card['version']} on {card['dataset']}: {card['examples']} examples, "
        f"{card['steps']} steps, final loss {card['final_loss']}, {card['tokens_per_s']} tokens/s "
        f"(load average {card['load_average_after'][0]})"
    )
    click.echo(f"weights: {result.weights_dir}")
    click.echo(
        "serve it with a model entry: {name: "
        f"{card['name']}, provider: local, model: {card['base']}, options: {{adapter: {card['name']}}}}}"
    )


@finetune.command("list")
def list_command() -> None:
    """Trained adapter versions (unfinished runs marked)."""
    from pilothouse.providers.local_adapters import all_versions

    found = all_versions()
    click.echo(f"{'ADAPTER':32}  {'BASE':12}  {'DATASET':24}  {'STEPS':>6}  {'LOSS':>7}  CREATED")
    for v in found:
        card = v.card
        if not v.finished:
            click.echo(f"{v.label[:32]:32}  (unfinished: 'finetune run' with the same settings continues it)")
            continue
        base, dataset = str(card.get("base", ""))[:12], str(card.get("dataset", ""))[:24]
        click.echo(
            f"{v.label[:32]:32}  {base:12}  {dataset:24}  "
            f"{card.get('steps', ''):>6}  {card.get('final_loss', ''):>7}  {card.get('created', '')}"
        )


@finetune.command("export")
@click.argument("adapter")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path), help="A new folder.")
@click.option("--merged", is_flag=True, help="Merge the adapter into its base: a full model folder.")
def export_command(adapter: str, output: Path, merged: bool) -> None:
    """Write ADAPTER (NAME or NAME@N) for another server: the PEFT adapter (vLLM --lora-modules, TGI
    LORA_ADAPTERS) or, --merged, a full Hugging Face model."""
    from pilothouse.improve import FinetuneError, export_adapter

    try:
        written = export_adapter(adapter, output, merged=merged)
    except FinetuneError as exc:
        raise CliError(str(exc), exit_code=2) from None
    except OSError as exc:  # an output path that is a file, or under one, or not writable
        raise CliError(f"cannot write {output}: {exc.strerror or exc}", exit_code=2) from None
    click.echo(f"wrote {adapter} to {written}" + (" (merged into its base)" if merged else ""))

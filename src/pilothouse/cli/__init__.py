"""The ``pilothouse`` command: one module per command group."""

from __future__ import annotations

import sys

import click

from pilothouse import __version__
from pilothouse.cli import budgets, costs, db, keys, prices, serve, serve_model, traces
from pilothouse.cli import evals as evals_cli
from pilothouse.cli import gate as gate_cli
from pilothouse.cli import judge as judge_cli
from pilothouse.cli.common import CliError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pilothouse")
def cli() -> None:
    """Pilothouse: gateway, traces, costs and evals for LLM applications.

    Start with 'pilothouse serve' (its first start prints an API key), then point an OpenAI client
    at http://127.0.0.1:4000/v1 (an Anthropic client at http://127.0.0.1:4000) or send
    OpenTelemetry traces to http://127.0.0.1:4000/v1/traces. More keys: 'pilothouse keys create'.
    """


cli.add_command(serve.serve)
cli.add_command(serve_model.serve_model)
cli.add_command(keys.keys)
cli.add_command(traces.traces)
cli.add_command(db.db)
cli.add_command(evals_cli.eval_group)
cli.add_command(evals_cli.datasets)
cli.add_command(gate_cli.gate)
cli.add_command(judge_cli.judge)
cli.add_command(prices.prices)
cli.add_command(costs.costs)
cli.add_command(budgets.budgets)


def main() -> None:
    """Console entry point: one-line errors and a non-zero exit instead of tracebacks."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CliError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)

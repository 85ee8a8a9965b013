"""The ``pilothouse`` command: one module per command group."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping

import click

from pilothouse import __version__
from pilothouse.cli.common import CliError

# Each command's module, imported when the command is looked up, so that a command loads only what it
# uses (`pilothouse eval run` does not import the server, the cost reports or numpy).
_COMMANDS = {
    "serve": "serve:serve",
    "serve-model": "serve_model:serve_model",
    "keys": "keys:keys",
    "traces": "traces:traces",
    "db": "db:db",
    "eval": "evals:eval_group",
    "datasets": "datasets:datasets",
    "gate": "gate:gate",
    "judge": "judge:judge",
    "prices": "prices:prices",
    "costs": "costs:costs",
    "budgets": "budgets:budgets",
    "finetune": "finetune:finetune",
    "prompts": "prompts:prompts",
    "review": "review:review",
    "monitors": "monitors:monitors",
    "evaluators": "evaluators:evaluators",
    "projects": "projects:projects",
}


class _LazyCommands(MutableMapping[str, click.Command]):
    """The top-level commands by name; a command's module is imported the first time it is looked up."""

    def __init__(self, homes: dict[str, str]) -> None:
        self._homes = dict(homes)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded.get(name)
        if command is None:
            module, _, attribute = self._homes[name].partition(":")
            command = getattr(importlib.import_module(f"pilothouse.cli.{module}"), attribute)
            assert isinstance(command, click.Command)
            self._loaded[name] = command
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._homes.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._homes.pop(name, None)
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._homes or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter([*self._homes, *(n for n in self._loaded if n not in self._homes)])

    def __len__(self) -> int:
        return len(self._homes.keys() | self._loaded.keys())


@click.group(commands=_LazyCommands(_COMMANDS), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pilothouse")
def cli() -> None:
    """Pilothouse: gateway, traces, costs and evals for LLM applications.

    Start with 'pilothouse serve' (its first start prints an API key), then point an OpenAI client
    at http://127.0.0.1:4000/v1 (an Anthropic client at http://127.0.0.1:4000) or send
    OpenTelemetry traces to http://127.0.0.1:4000/v1/traces. More keys: 'pilothouse keys create'.
    """


def main() -> None:
    """Console entry point: one-line errors and a non-zero exit instead of tracebacks."""
    # Local models (the local provider, the hallucination detector) compute with OpenMP threads, whose
    # default is to spin while they wait: on cores shared with the server's own work that made a
    # detector check 2-4 times slower (docs/hallucination.md, "Latency and memory"). Set before torch
    # loads; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
    except ValueError as exc:  # a ConfigError met before a command could catch it (e.g. at import)
        from pilothouse.config import ConfigError

        if not isinstance(exc, ConfigError):
            raise
        click.echo(f"Error: invalid settings: {exc}", err=True)
        sys.exit(2)

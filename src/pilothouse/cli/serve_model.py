"""``pilothouse serve-model``: one model as its own OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import click

from pilothouse.cli.common import CliError, check_port


def _options(pairs: tuple[str, ...]) -> dict[str, object]:
    options: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--option takes NAME=VALUE, not {pair!r}", exit_code=2)
        try:
            options[name] = int(value)
        except ValueError:
            try:
                options[name] = float(value)
            except ValueError:
                options[name] = value
    return options


@click.command("serve-model")
@click.option(
    "--model", required=True, help="The model: 'smollm2', a Hugging Face model folder, or an upstream id."
)
@click.option("--provider", default="local", show_default=True, help="local, sim, openai, anthropic, ...")
@click.option("--name", default=None, help="The model name clients ask for (default: --model).")
@click.option("--base-url", default=None, help="Upstream URL, for the openai and anthropic providers.")
@click.option("--option", "options", multiple=True, help="Provider setting NAME=VALUE (repeatable).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535))
def serve_model(
    model: str,
    provider: str,
    name: str | None,
    base_url: str | None,
    options: tuple[str, ...],
    host: str,
    port: int,
) -> None:
    """Serve one model on /v1/chat/completions and /v1/embeddings (no keys, no tracing): a replica a
    gateway routes to with provider 'openai' and this server's base_url."""
    import uvicorn

    from pilothouse.providers.base import Deployment
    from pilothouse.server.model_server import create_model_app

    if provider == "local" and model not in ("smollm2", "all-minilm-l6-v2") and not Path(model).exists():
        raise CliError(
            f"--model {model!r} is neither 'smollm2', 'all-minilm-l6-v2' nor an existing path", exit_code=2
        )
    check_port(host, port)
    deployment = Deployment(
        name=name or model, provider=provider, model=model, base_url=base_url, options=_options(options)
    )
    try:
        app = create_model_app(deployment)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    click.echo(f"Serving model '{deployment.name}' ({provider}) on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)

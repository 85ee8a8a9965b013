"""The config model: one file, the environment and options, merged with one precedence, and errors
that name the file (or variable), the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse.config import ConfigError, load_config, load_settings, parse_config
from pilothouse.gateway.config import GatewayConfig


@pytest.fixture(autouse=True)
def _no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PILOTHOUSE_"):
            monkeypatch.delenv(name)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pilothouse.yaml"
    path.write_text(text)
    return path


def test_option_beats_environment_beats_file_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _file(tmp_path, "server:\n  port: 4001\n  host: 0.0.0.0\n  log_level: warning\n")
    assert load_settings().port == 4000  # the default
    settings = load_settings(config)
    assert (settings.port, settings.host, settings.config) == (4001, "0.0.0.0", config)
    monkeypatch.setenv("PILOTHOUSE_PORT", "4002")
    assert load_settings(config).port == 4002
    assert load_settings(config, port=4003, host=None).port == 4003  # None: not given
    assert load_settings(config).log_level == "warning"


def test_the_environment_names_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _file(tmp_path, "server:\n  port: 4005\nmodels:\n  - name: sim\n    provider: sim\n")
    monkeypatch.setenv("PILOTHOUSE_CONFIG", str(config))
    loaded = load_config()
    assert loaded.server.port == 4005 and [m.name for m in loaded.models] == ["sim"]
    assert loaded.source == str(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  prot: 1\n", "pilothouse.yaml: server.prot: unknown key (known: admin_key,"),
        (
            "server:\n  port: 99999\n",
            "pilothouse.yaml: server.port: Input should be less than or equal to 65535",
        ),
        ("models:\n  - {name: x, provider: sim, colour: red}\n", "models[0].colour: unknown key"),
        ("models:\n  - {name: x, provider: sim, weight: -1}\n", "models[0].weight: Input should be greater"),
        (
            "models:\n  - {name: x, provider: sim, price: {input: 1}}\n",
            "models[0].price: needs input and output",
        ),
        ("router: {strategy: random-walk}\n", "router.strategy: Input should be 'weighted'"),
        ("models:\n  - {name: x, provider: sim}\nfallbacks: {x: [y]}\n", "fallbacks.x names 'y'"),
        (
            "cascades:\n  - {name: c, models: [a, b], verifier: {}}\n",
            "cascades[0].verifier: must be a scorer",
        ),
        ("models: [\n", "pilothouse.yaml: not valid YAML"),
        ("- just a list\n", "must be a YAML mapping"),
        (
            "models:\n  - {name: x, provider: openai, api_key: '${PH_UNSET_VAR}'}\n",
            "pilothouse.yaml: models[0].api_key: environment variable PH_UNSET_VAR is not set",
        ),
        ("server:\n  port: 4001\n  port: 4002\n", "the key 'port' is given twice"),
        ("server:\n  config: other.yaml\n", "pilothouse.yaml: server.config: unknown key"),
        (
            "models:\n  - {name: x, provider: sim, weight: .inf}\n",
            "models[0].weight: Input should be a finite",
        ),
        (
            "models:\n  - {name: x, provider: sim, price: {input: .nan, output: 1}}\n",
            "models[0].price.input: Input should be a finite number",
        ),
        (
            "models:\n  - {name: x, provider: sim, price: {input: 1e308, output: 1}}\n",
            "models[0].price.input: must be a number from 0 to 1,000,000",
        ),
        ("a: " + "[" * 1500, "nested more than 64 levels deep"),
        (
            "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
            + "".join(
                f"{x}: &{x} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, x in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "more than 100,000 values (are YAML aliases nested?)",
        ),
    ],
)
def test_errors_name_the_file_the_key_and_what_was_expected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_file(tmp_path, text))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "pilothouse.yaml"))


def test_a_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pilothouse.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"pilothouse.yaml: not UTF-8 text"):
        load_config(path)
    path.write_bytes(b"# " + b"x" * (1024 * 1024 + 10))
    with pytest.raises(ConfigError, match=r"pilothouse.yaml: larger than 1024 KiB"):
        load_config(path)


def test_a_value_from_the_environment_is_not_echoed_in_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PH_TEST_WEIGHT", "sk-LEAKME-123")
    with pytest.raises(ConfigError) as caught:
        load_config(_file(tmp_path, "models:\n  - {name: x, provider: sim, weight: '${PH_TEST_WEIGHT}'}\n"))
    assert "models[0].weight" in str(caught.value) and "sk-LEAKME" not in str(caught.value)


def test_an_option_replaces_a_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTHOUSE_PORT", "70000")
    assert load_settings(port=4005).port == 4005


def test_errors_of_the_environment_and_of_options_name_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTHOUSE_PORT", "70000")
    with pytest.raises(ConfigError, match=r"^PILOTHOUSE_PORT: Input should be less than or equal to 65535"):
        load_settings()
    monkeypatch.delenv("PILOTHOUSE_PORT")
    with pytest.raises(ConfigError, match=r"^--port: Input should be greater than or equal to 1"):
        load_settings(port=0)


def test_a_provider_no_one_registered_is_named_with_its_key(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path, "models:\n  - {name: x, provider: nope}\n"))
    with pytest.raises(ConfigError, match=r"models\[0\]\.provider: provider must be one of .*'nope'"):
        GatewayConfig.from_config(config)


def test_env_expands_everywhere_in_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PH_TEST_DB", "sqlite:///x.db")
    monkeypatch.setenv("PH_TEST_KEY", "sk-test")
    config = parse_config(
        {
            "server": {"database_url": "${PH_TEST_DB}"},
            "models": [{"name": "m", "provider": "openai", "api_key": "${PH_TEST_KEY}"}],
        }
    )
    assert config.server.database_url == "sqlite:///x.db"
    (deployment,) = GatewayConfig.from_config(config).deployments
    assert deployment.api_key == "sk-test"
    assert "sk-test" not in repr(config)  # a key in the config is never printed


def test_prices_and_sections_reach_the_gateway(tmp_path: Path) -> None:
    config = load_config(
        _file(
            tmp_path,
            "models:\n"
            "  - {name: a, provider: sim, price: {per_hour_usd: 1.2, tokens_per_s: 900}}\n"
            "  - {name: b, provider: sim, model: b-1, price: {input: 1, output: 2}}\n"
            "fallbacks: {a: b}\n"
            "router: {retries: 0}\n"
            "cache: {enabled: true, semantic: {threshold: 0.9}}\n"
            "cascades:\n  - {name: c, models: [a, b], verifier: {type: regex, value: x}}\n",
        )
    )
    gateway = GatewayConfig.from_config(config)
    assert [d.model for d in gateway.deployments] == ["a", "b-1"]
    assert gateway.fallbacks == {"a": ["b"]} and gateway.router.retries == 0
    hourly, per_token = gateway.prices
    assert hourly.output == pytest.approx(1.2 / (900 * 3600) * 1e6) and per_token.input == 1.0
    assert gateway.cache.enabled and gateway.semantic_cache.threshold == 0.9
    assert [c.name for c in gateway.cascades] == ["c"]

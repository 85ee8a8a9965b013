"""Baseline for the gateway benchmark: LiteLLM proxy 1.108.7 in front of the same simulated upstream.

    python benchmarks/baseline_litellm.py [--duration 10] [--connections 16] [--latency-requests 2000]

Installs ``litellm[proxy]==1.108.7`` from PyPI into its own virtualenv (/tmp/litellm-venv, reused when
present), serves ``litellm --config <yaml>`` on a free loopback port pinned to CPU 0, with one model
(``openai/`` provider, ``api_base`` the simulated upstream) and a master key (no database, the local
model cost map, so that nothing leaves the machine), and measures it as benchmarks/gateway.py measures
Pilothouse: req/s at --connections with wrk, added latency at 1 connection, RSS after the load and
the time from process start to the first 200 from /health/liveliness. Run on its own, it starts its
own simulated upstream (CPU 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import ensure_venv

from gateway import (
    GATEWAY_CPU,
    LOAD_CPU,
    MODEL,
    Served,
    chat_body,
    latency_pairs,
    measured_load,
    rss_mib,
    run_wrk,
    start_many,
    start_upstream,
    wait_quiet,
)
from pilothouse.testing import free_port

LITELLM_VERSION = "1.108.7"
VENV = Path("/tmp/litellm-venv")
MASTER_KEY = "sk-bench-master-key"


def ensure_litellm(venv: Path = VENV) -> Path:
    """The ``litellm`` command of a virtualenv with litellm[proxy]==LITELLM_VERSION, installed if needed."""
    ensure_venv(venv, "litellm", LITELLM_VERSION, f"litellm[proxy]=={LITELLM_VERSION}", "litellm")
    return venv / "bin" / "litellm"


def litellm_config(path: Path, upstream_url: str) -> None:
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        "      model: openai/sim\n"
        f"      api_base: {upstream_url}/v1\n"
        "      api_key: sk-upstream\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


def litellm_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", "DATABASE_URL", "PYTHON", "VIRTUAL_ENV", "OPENAI_"))
    }
    # The bundled cost map (no fetch from GitHub at start), quiet logs, no telemetry.
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    return env


def measure_litellm(
    upstream: Served, args: argparse.Namespace, workdir: Path, workers: int = 1
) -> dict[str, float]:
    """LiteLLM's req/s, added latency (ms), RSS (MiB) and ready time (s), measured like Pilothouse's:
    one worker on GATEWAY_CPU, or ``workers`` worker processes on any CPU (as ``serve --workers``)."""
    command = ensure_litellm()
    config = workdir / "litellm.yaml"
    litellm_config(config, upstream.base_url)
    pin = ["taskset", "-c", GATEWAY_CPU] if workers == 1 else []

    def starter() -> Served:
        port = free_port()
        return Served(
            [
                *pin,
                str(command),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                str(workers),
            ],
            port,
            "/health/liveliness",
            name="litellm",
            env=litellm_env(),
            log_path=workdir / "litellm.log",
            start_timeout_s=180,
        )

    server, ready = start_many(starter, args.starts)
    print(f"litellm: ready after {', '.join(f'{t:.2f}' for t in ready)} s", flush=True)
    body = chat_body(MODEL)
    target = server.base_url + "/v1/chat/completions"
    try:
        warm = run_wrk(target, body, MASTER_KEY, args.connections, 2, workdir)
        if warm["ok"] == 0:
            raise RuntimeError(f"no 200 from litellm during warm-up; log tail:\n{server.log_tail()}")
        load = measured_load(server, target, body, MASTER_KEY, args, workdir)
        settled = wait_quiet(server.pid)
        print(f"litellm: quiet {settled:.1f} s after the load", flush=True)
        lat = latency_pairs(
            server.port,
            "/v1/chat/completions",
            {"Authorization": f"Bearer {MASTER_KEY}"},
            upstream.port,
            args.latency_requests,
        )
        print(
            f"litellm: 1 connection: gateway p50 {lat['gateway_p50_ms']:.3f} / p99 "
            f"{lat['gateway_p99_ms']:.3f} ms, direct p50 {lat['direct_p50_ms']:.3f} / p99 "
            f"{lat['direct_p99_ms']:.3f} ms",
            flush=True,
        )
        rss = rss_mib(server.pid)
    finally:
        server.stop()
    return {
        "rps": load["rps"],
        "added_p50_ms": lat["added_p50_ms"],
        "added_p99_ms": lat["added_p99_ms"],
        "rss_mib": rss,
        "cpu_ms_per_req": load["cpu_ms_per_req"],
        "ready_s": statistics.median(ready),
        "ready_max_s": max(ready),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()

    os.sched_setaffinity(0, {int(LOAD_CPU)})
    workdir = Path(tempfile.mkdtemp(prefix="ph-bench-litellm-"))
    upstream = start_upstream(workdir)
    try:
        result = measure_litellm(upstream, args, workdir)
    finally:
        upstream.stop()
    print(f"{'metric':32} {'litellm ' + LITELLM_VERSION:>16}")
    print(f"{f'req/s at {args.connections} connections':32} {result['rps']:16,.1f}")
    print(f"{'added latency p50 (ms)':32} {result['added_p50_ms']:16.3f}")
    print(f"{'added latency p99 (ms)':32} {result['added_p99_ms']:16.3f}")
    print(f"{'RSS after load (MiB)':32} {result['rss_mib']:16.1f}")
    print(f"{'ready after start (s, median)':32} {result['ready_s']:16.2f}")
    print(f"{'server CPU ms/request':32} {result['cpu_ms_per_req']:16.2f}")
    print(f"work dir: {workdir}  cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()

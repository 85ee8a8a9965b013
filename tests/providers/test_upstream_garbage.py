"""An upstream that answers 200 with something that is not JSON is a retryable 502, not our 500."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pilothouse.providers.anthropic import AnthropicProvider
from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.openai import OpenAIProvider


class _Garbage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"<html>proxy error</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def garbage_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("provider_class", [OpenAIProvider, AnthropicProvider])
def test_non_json_answer_is_a_retryable_502(garbage_url: str, provider_class: type) -> None:
    async def run() -> None:
        provider = provider_class(Deployment("m", "x", "m", base_url=garbage_url + "/v1"))
        try:
            with pytest.raises(ProviderError) as info:
                await provider.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            assert info.value.status == 502 and info.value.retryable
        finally:
            await provider.close()

    asyncio.run(run())

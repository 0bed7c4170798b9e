"""A fake OpenAI-compatible server on 127.0.0.1 for the openai backend's unit tests (retries, what the client sends):
``http.server`` in a thread. It serves ``/v1/models`` and ``/v1/chat/completions`` (replies from the scripted engine,
tests/helpers/stand_in.py; with ``logprobs`` asked, the top first tokens are the letters A-Z with hash-based log-probs, so
every label gets a first-token score), and nothing else (404: no ``/tokenize``, so the backend scores by top
log-probs). ``script[path]`` answers the next requests to ``path`` first: a status code (with an error body), or
``"drop"`` (the connection closed without a reply). Every request is recorded with its arrival time and headers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from apo_local.engine.protocol import GenerationRequest
from tests.helpers.stand_in import StandIn

SERVED = "fake-model"


@dataclass
class Seen:
    at: float
    method: str
    path: str
    headers: dict
    body: dict | None


@dataclass
class FakeServer:
    script: dict[str, list] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stand_in: StandIn = field(default_factory=StandIn)

    def __enter__(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                fake.answer(self, None)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                fake.answer(self, json.loads(self.rfile.read(n) or b"null"))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    # -- answers -------------------------------------------------------------------------------------

    def answer(self, h: BaseHTTPRequestHandler, body: dict | None) -> None:
        self.seen.append(Seen(time.monotonic(), h.command, h.path, dict(h.headers), body))
        queued = self.script.get(h.path)
        action = queued.pop(0) if queued else None
        if action == "drop":
            h.close_connection = True
            return
        if isinstance(action, int):
            return _send(h, action, {"error": {"message": f"scripted {action}\nsecond line", "code": action}})
        if h.command == "GET" and h.path == "/v1/models":
            return _send(h, 200, {"data": [{"id": SERVED, "max_model_len": 2048, "root": "/srv/" + SERVED}]})
        if h.command == "POST" and h.path == "/v1/chat/completions":
            return _send(h, 200, self.chat(body))
        _send(h, 404, {"error": {"message": "Not Found"}})

    def chat(self, body: dict) -> dict:
        prompt = body["messages"][-1]["content"]
        n_in = len(prompt) // 4
        if body.get("logprobs"):
            top = [{"token": c, "logprob": -(_h(prompt, c) % 900 / 100 + 0.01)} for c in map(chr, range(65, 91))]
            choices = [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "A"},
                    "logprobs": {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": top}]},
                }
            ]
            return {"choices": choices, "usage": {"prompt_tokens": n_in, "completion_tokens": 1}}
        req = GenerationRequest(
            prompt,
            max_tokens=body.get("max_tokens", 16),
            n=body.get("n", 1),
            seed=body.get("seed"),
            temperature=body.get("temperature", 0.0),
        )
        gen = self.stand_in.generate([req])[0]
        choices = [{"index": i, "message": {"role": "assistant", "content": t}} for i, t in enumerate(gen.texts)]
        return {"choices": choices, "usage": {"prompt_tokens": n_in, "completion_tokens": gen.output_tokens}}


def _h(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "little")


def _send(h: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)

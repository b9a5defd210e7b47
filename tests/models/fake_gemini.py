"""A fake Gemini REST server on 127.0.0.1 for the teacher tests.

It answers the calls the real `google-genai` client makes (../shared/NOTES.md):
`POST /v1/models/<model>:generateContent` and the resumable upload
(`POST /upload/v1/files`, then the bytes to the session URL), plus `GET /v1/files/<id>`.
Each generateContent call takes the next scripted behaviour (`FakeGemini.script`), or the
default one when the script is empty; every request is recorded for the assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer_text(label: str = "happy", labels: tuple[str, ...] = ("neutral", "angry", "happy", "sad",
                                                                   "worried", "surprise")) -> str:
    """A valid JSON answer (the default prompt's schema) that picks `label`."""
    scores = {x: (0.7 if x == label else round(0.3 / (len(labels) - 1), 4)) for x in labels}
    return json.dumps({"scores": scores, "label": label, "reasoning": "smiles and laughs",
                       "modality_shares": {"video": 0.5, "audio": 0.3, "text": 0.2}})


def ok(text: str, tokens_in: int = 1000, tokens_out: int = 80) -> dict:
    return {"status": 200, "body": {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": tokens_in, "candidatesTokenCount": tokens_out,
                          "totalTokenCount": tokens_in + tokens_out},
        "modelVersion": "fake"}}


def error(code: int, status: str, message: str = "scripted error") -> dict:
    return {"status": code, "body": {"error": {"code": code, "message": message, "status": status}}}


def blocked() -> dict:
    """A prompt blocked for safety: no candidates, a block reason."""
    return {"status": 200, "body": {"promptFeedback": {"blockReason": "SAFETY"},
                                    "usageMetadata": {"promptTokenCount": 900, "totalTokenCount": 900}}}


def slow(seconds: float, then: dict | None = None) -> dict:
    return {**(then or ok(answer_text())), "delay": seconds}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGemini:
    default: dict = field(default_factory=lambda: ok(answer_text()))
    script: deque = field(default_factory=deque)
    requests: list[Seen] = field(default_factory=list)
    port: int = 0
    echo_key_in_errors: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def generate_calls(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith(":generateContent")]

    def next_behaviour(self) -> dict:
        return self.script.popleft() if self.script else self.default


def _handler(fake: FakeGemini, lock: threading.Lock):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep the test output quiet
            pass

        def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def _record(self, body: Any) -> Seen:
            seen = Seen(self.command, self.path, dict(self.headers.items()), body)
            with lock:
                fake.requests.append(seen)
            return seen

        def do_GET(self):
            self._record(None)
            if self.path.startswith("/v1/files/"):
                name = self.path.split("/v1/", 1)[1]
                self._send(200, self._file(name))
            else:
                self._send(404, error(404, "NOT_FOUND")["body"])

        def _file(self, name: str) -> dict:
            return {"name": name, "uri": f"{fake.base_url}/v1/{name}", "state": "ACTIVE",
                    "mimeType": "video/mp4"}

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/upload/v1/files":
                self._record(json.loads(raw or b"{}"))
                url = f"{fake.base_url}/upload-session/{len(fake.requests)}"
                self._send(200, {}, {"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})
            elif self.path.startswith("/upload-session/"):
                self._record(len(raw))
                name = "files/f" + self.path.rsplit("/", 1)[1]
                self._send(200, {"file": self._file(name)}, {"X-Goog-Upload-Status": "final"})
            elif self.path.endswith(":generateContent"):
                self._record(json.loads(raw or b"{}"))
                with lock:
                    behaviour = fake.next_behaviour()
                time.sleep(behaviour.get("delay", 0))
                body = behaviour["body"]
                if fake.echo_key_in_errors and behaviour["status"] >= 400:
                    # A hostile server that echoes the key: the teacher must redact it.
                    body = {"error": {**body["error"], "message": "bad key "
                                      + self.headers.get("x-goog-api-key", "")}}
                self._send(behaviour["status"], body)
            else:
                self._record(None)
                self._send(404, error(404, "NOT_FOUND")["body"])

    return Handler


class FakeGeminiServer:
    """Context manager: a running FakeGemini on a free port."""

    def __init__(self) -> None:
        self.fake = FakeGemini()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.fake, threading.Lock()))
        self._server.daemon_threads = True
        self.fake.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def __enter__(self) -> FakeGemini:
        self._thread.start()
        return self.fake

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

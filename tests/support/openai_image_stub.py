"""A stub OpenAI-compatible image server on 127.0.0.1, for the HTTP renderer's tests.

A `ThreadingHTTPServer` in a background thread (no event loop of its own, so it works with any
test's loop). Images are deterministic PNGs drawn with Pillow from a digest of the model, prompt,
size, seed, image index and init image, so the renderer contract's determinism properties hold.

Test hooks: `reply_next(...)` scripts the next POST's answer (429, 500, 400, garbage, ...);
`hold = True` makes POSTs wait until `release()` (a server that never answers in time); `answer_with
= "url"` answers with download links instead of base64 (`url_host` picks the host they name);
`requests` records every request (method, path, headers, JSON body or multipart form).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def stub_png(*, model: str, prompt: str, size: str, seed: object, index: int, init: bytes | None) -> bytes:
    """The stub's picture: a background and two rectangles whose colours and places come from a digest."""
    width, height = (int(side) for side in size.split("x"))
    digest = hashlib.sha256(
        json.dumps(
            [model, prompt, size, seed, index, hashlib.sha256(init).hexdigest() if init else None]
        ).encode()
    ).digest()
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(image)
    for k in (3, 10):
        x0, y0 = digest[k] * width // 256, digest[k + 1] * height // 256
        draw.rectangle(
            (x0, y0, x0 + width // 3, y0 + height // 3), fill=(digest[k + 2], digest[k + 3], digest[k + 4])
        )
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


class StubImageServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.replies: list[Reply] = []
        self.hold = False
        self.answer_with = "b64_json"
        self.url_host = "127.0.0.1"
        self.received = threading.Event()  # set when a POST arrives
        self._release = threading.Event()
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll interval: `shutdown()` waits for the serving loop's next wake-up.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StubImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def release(self) -> None:
        """Let every held POST go on (its client has usually given up by then)."""
        self._release.set()

    def reply_next(
        self, status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self.replies.append(Reply(status, raw, headers or {}))

    @property
    def posts(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    # --- Called from the handler threads ---

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _answer_images(self, fields: dict[str, Any], init: bytes | None) -> Reply:
        with self._lock:
            scripted = self.replies.pop(0) if self.replies else None
        if scripted is not None:
            return scripted
        data = []
        for index in range(int(fields.get("n", 1))):
            png = stub_png(
                model=str(fields.get("model")),
                prompt=str(fields["prompt"]),
                size=str(fields.get("size", "256x256")),
                seed=fields.get("seed"),
                index=index,
                init=init,
            )
            if self.answer_with == "url":
                name = hashlib.sha256(png).hexdigest()
                with self._lock:
                    self._files[name] = png
                data.append({"url": f"http://{self.url_host}:{self.port}/files/{name}.png"})
            else:
                data.append({"b64_json": base64.b64encode(png).decode(), "revised_prompt": fields["prompt"]})
        return Reply(200, json.dumps({"created": 1_700_000_000, "data": data}).encode())

    def _file(self, name: str) -> bytes | None:
        with self._lock:
            return self._files.get(name)


def _handler_for(stub: StubImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the renderer's pool expects

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return None

        def do_GET(self) -> None:
            stub._record(RecordedRequest("GET", self.path, _headers(self)))
            if self.path == "/v1/models":
                self._send(Reply(200, json.dumps({"object": "list", "data": []}).encode()))
            elif self.path.startswith("/files/") and (data := stub._file(self.path[7:].removesuffix(".png"))):
                self._send(Reply(200, data, {"Content-Type": "image/png"}))
            else:
                self._send(Reply(404, json.dumps({"error": {"message": "no such file"}}).encode()))

        def do_POST(self) -> None:
            headers = _headers(self)
            body = self.rfile.read(int(headers.get("content-length", "0")))
            if headers.get("content-type", "").startswith("multipart/form-data"):
                form, files = _multipart(headers["content-type"], body)
                recorded = RecordedRequest("POST", self.path, headers, form=form, files=files)
                fields: dict[str, Any] = dict(form)
                if "seed" in fields:  # form fields are text; JSON sends the seed as a number
                    fields["seed"] = int(fields["seed"])
                init = files.get("image")
            else:
                recorded = RecordedRequest("POST", self.path, headers, json=json.loads(body))
                fields, init = dict(recorded.json or {}), None
            stub._record(recorded)
            stub.received.set()
            if stub.hold:
                stub._release.wait()
            if self.path not in ("/v1/images/generations", "/v1/images/edits"):
                self._send(Reply(404, json.dumps({"error": {"message": "unknown path"}}).encode()))
                return
            self._send(stub._answer_images(fields, init))

        def _send(self, reply: Reply) -> None:
            try:
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:  # the client gave up (a timeout or a cancel test)
                self.close_connection = True

    return Handler


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    return {name.lower(): value for name, value in handler.headers.items()}


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    form: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if part.get_filename():
            files[name] = payload
        else:
            form[name] = payload.decode()
    return form, files

"""A real callback server for the tests: HTTP (or HTTPS) on 127.0.0.1, in a thread.

It records what it is sent, answers notifications with the status a test sets
(once ``answering`` is set: a test may hold the answers back), serves OAuth2
client-credentials tokens at ``/token``, and can be stopped and started again on the
same port (a callback server that is down, then back). Its URLs may name it by
address (127.0.0.1) or by name (``localhost``).
"""

import dataclasses
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER_TIMEOUT = 120.0  # seconds a held answer waits at most (a test that forgot it)


@dataclasses.dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    at: float  # time.monotonic()

    @property
    def json(self):
        return json.loads(self.body)


class Receiver:
    """A callback server that records requests; ``status`` is its answer to
    notifications, ``/token`` answers OAuth2 client-credentials requests."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.tls = tls
        self.port = 0
        self.status = 200
        self.requests: list[Received] = []
        self.token_requests: list[Received] = []
        self.tokens_issued = 0
        self.server: ThreadingHTTPServer | None = None
        self.answering = threading.Event()  # cleared: a notification waits for its answer
        self.answering.set()

    def url(self, path: str = "/callback", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = Received(self.path, dict(self.headers), body, time.monotonic())
                if self.path == "/token":
                    receiver.token_requests.append(received)
                    receiver.tokens_issued += 1
                    status, answer = (
                        200,
                        {
                            "access_token": f"access-{receiver.tokens_issued}",
                            "token_type": "Bearer",
                            "expires_in": 3600,
                        },
                    )
                else:
                    receiver.requests.append(received)
                    receiver.answering.wait(ANSWER_TIMEOUT)
                    status, answer = receiver.status, {"ok": receiver.status == 200}
                    if status >= 400:
                        answer = {"error": "boom"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_arguments):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

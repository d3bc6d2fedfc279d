"""An HTTP proxy in front of the local AWS that injects faults into S3 and SQS calls, for tests and the soak.

Point a client's endpoint at `FaultProxy.url`. Each S3 or SQS call is, by chance: answered 503 (`SlowDown` for
S3, `ServiceUnavailable` for SQS) without reaching moto; dropped without an answer before it reaches moto; or
dropped after moto has acted on it (the nastiest: a ReceiveMessage whose messages are now in flight, a
DeleteMessage that happened). `outage(seconds)` fails every call for a while. `script(service, ...)` gives the
next calls of a service the faults named, in order, before chance decides again: a test that needs each kind of
fault to have happened scripts it instead of hoping the dice roll it. Other services pass through.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import random
import threading
import time
import urllib.parse

S3_503 = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate. (injected)</Message></Error>"
)
SQS_503 = b'{"__type": "com.amazonaws.sqs#ServiceUnavailable", "message": "injected"}'
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "content-length"}


def service_of(headers) -> str:
    """'sqs', 's3' or another service name, from the SigV4 credential scope (one endpoint serves them all)."""
    if str(headers.get("X-Amz-Target", "")).startswith("AmazonSQS"):
        return "sqs"
    scope = str(headers.get("Authorization", "")).split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    return scope[3] if len(scope) > 3 else "other"


def operation_of(service: str, method: str, path: str, headers) -> str:
    """How AWS bills the call: the SQS action (X-Amz-Target), or the S3 request class (LIST is a GET with a
    `list-type` or on the bucket root; the rest by HTTP method)."""
    if service == "sqs":
        return str(headers.get("X-Amz-Target", "")).rsplit(".", 1)[-1] or method
    if service != "s3":
        return method
    parts = urllib.parse.urlsplit(path)
    if method == "GET" and ("list-type" in parts.query or parts.path.strip("/").count("/") == 0):
        return "LIST"
    return method


class FaultProxy:
    """Forwards to `upstream` (http://localhost:port); `rates` are the chances of each fault per S3/SQS call."""

    def __init__(self, upstream: str, *, error_rate: float = 0.05, drop_rate: float = 0.02, seed: int = 7):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.error_rate, self.drop_rate = error_rate, drop_rate
        self.random, self.lock = random.Random(seed), threading.Lock()
        self.outage_until = 0.0
        self.scripted: dict[str, collections.deque] = {"s3": collections.deque(), "sqs": collections.deque()}
        self.counts: collections.Counter = collections.Counter()
        self.operations: collections.Counter = collections.Counter()  # "s3 GET", "sqs ReceiveMessage", ...
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if not size:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                service = service_of(self.headers)
                proxy.count_operation(service, operation_of(service, self.command, self.path, self.headers))
                fault = proxy.choose(service)
                if fault == "drop_before":
                    self.close_connection = True
                    return
                if fault in ("error", "outage"):
                    return (
                        self._reply(503, {"Content-Type": "application/xml"}, S3_503)
                        if service == "s3"
                        else self._reply(503, {"Content-Type": "application/x-amz-json-1.0"}, SQS_503)
                    )
                status, headers, answer = proxy.forward(self.command, self.path, self.headers, body)
                if fault == "drop_after":
                    self.close_connection = True
                    return
                self._reply(status, headers, answer)

            def _reply(self, status, headers, body):
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in HOP_HEADERS:
                        self.send_header(name, value)
                # a HEAD's reply has no body but the object's length: pass the upstream's on
                length = (
                    next((v for k, v in headers.items() if k.lower() == "content-length"), "0")
                    if self.command == "HEAD"
                    else str(len(body))
                )
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that went away mid-answer (a killed agent, a timed-out retry): nothing to report

        self.server = Server(("localhost", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://localhost:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def count_operation(self, service: str, operation: str) -> None:
        with self.lock:
            self.operations[f"{service} {operation}"] += 1

    def choose(self, service: str) -> str | None:
        """Which fault (if any) this call gets; counted."""
        with self.lock:
            self.counts[f"{service}_calls"] += 1
            if service not in ("s3", "sqs"):
                return None
            roll = self.random.random()
            if self.scripted[service]:
                fault = self.scripted[service].popleft()
                if fault is None:
                    return None
            elif time.monotonic() < self.outage_until:
                fault = "outage"
            elif roll < self.error_rate:
                fault = "error"
            elif roll < self.error_rate + self.drop_rate:
                fault = "drop_before" if self.random.random() < 0.5 else "drop_after"
            else:
                return None
            self.counts[f"{service}_{fault}"] += 1
            return fault

    def forward(self, method: str, path: str, headers, body: bytes):
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
            sent["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=sent)
            reply = connection.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            connection.close()

    def script(self, service: str, *faults: str | None) -> None:
        """The next calls of `service` ("s3" or "sqs") get `faults` in order ("error", "drop_before",
        "drop_after", or None for a call that passes), whatever the rates and any outage say."""
        unknown = [f for f in faults if f not in (None, "error", "drop_before", "drop_after")]
        if unknown or service not in self.scripted:
            raise ValueError(f"cannot script {service!r} with {unknown}")
        with self.lock:
            self.scripted[service].extend(faults)

    def outage(self, seconds: float) -> None:
        """Fail every S3 and SQS call for `seconds` from now."""
        self.outage_until = time.monotonic() + seconds

    def faults(self) -> int:
        return sum(n for name, n in self.counts.items() if not name.endswith("_calls"))

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()

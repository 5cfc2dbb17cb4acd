"""The ASGI app: a handful of read-only routes, no framework.

======================  ==============================================================
``GET /``               the status page (one self-contained HTML file, package data)
``GET /metrics``        Prometheus text or OpenMetrics, as the ``Accept`` header asks
``GET /api/v1/clusters``            every cluster, the document of ``ctl ls --json``
``GET /api/v1/clusters/{name}``     one cluster, that of ``ctl ls <name> --json``
``GET /healthz``        200 while the service runs
``GET /ready``          200 when every cluster has a member taking new calls, else 503
======================  ==============================================================

HEAD is served wherever GET is (HTTP requires it); any other method is 405, an unknown
path 404, and a request that carries a body 413 (nothing here reads one). The app never
reads the request body, so hypercorn closes such a connection after the reply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from rtpcluster.cluster.control import (
    ClusterInfo,
    ControlError,
    cluster_document,
    clusters_document,
)
from rtpcluster.http.metrics import exposition, make_registry
from rtpcluster.http.readings import StatusSource
from rtpcluster.sdnotify import plural

log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

API_PREFIX = "/api/v1/clusters"
_ALLOW = [(b"allow", b"GET, HEAD")]
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
# The page and the API are read-only views for anyone who can reach the port: no caching
# by proxies of stale state, no framing by other sites, no MIME sniffing.
_COMMON_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src 'self' data:",
    )
]


class Response:
    __slots__ = ("body", "content_type", "extra_headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes | str,
        content_type: str = _TEXT,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self.extra_headers = extra_headers or []


def status_page() -> bytes:
    """The status page as shipped in the package."""
    return resources.files("rtpcluster.http").joinpath("status.html").read_bytes()


def readiness(clusters: list[ClusterInfo], stopping: bool) -> tuple[bool, str]:
    """Whether every cluster has a member that takes new calls, and why not."""
    if stopping:
        return False, "stopping"
    idle = [
        info.name
        for info in clusters
        if not any(m.online and m.status == "ACTIVE" for m in info.members)
    ]
    if idle:
        return False, "no member taking new calls in cluster " + ", ".join(idle)
    return True, f"ready: {plural(len(clusters), 'cluster')}"


class StatusApp:
    """The ASGI application over one :class:`StatusSource`."""

    def __init__(self, source: StatusSource) -> None:
        self._source = source
        self._registry = make_registry(source)
        self._page = status_page()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            response = self.respond(scope)
            await _send_response(send, response, head=scope["method"] == "HEAD")
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    def respond(self, scope: Scope) -> Response:
        """The response to one HTTP request (pure apart from reading the service)."""
        path = scope["path"]
        route = self._route(path)
        if route is None:
            return Response(404, "not found\n")
        if scope["method"] not in ("GET", "HEAD"):
            return Response(405, "only GET and HEAD\n", extra_headers=_ALLOW)
        if _has_body(scope):
            return Response(413, "a request body is not accepted\n")
        try:
            return route(scope)
        except Exception:  # a bug must not leave the client hanging or kill the server
            log.exception("HTTP %s failed", path[:200])
            return Response(500, "internal error\n")

    def _route(self, path: str) -> Callable[[Scope], Response] | None:
        if path == "/":
            return lambda scope: Response(200, self._page, _HTML, _PAGE_HEADERS)
        if path == "/metrics":
            return self._metrics
        if path == "/healthz":
            return lambda scope: Response(200, "ok\n")
        if path == "/ready":
            return self._ready
        if path in (API_PREFIX, API_PREFIX + "/"):
            return lambda scope: _json(
                200, clusters_document(self._source.clusters(), self._source.session_store())
            )
        if path.startswith(API_PREFIX + "/"):
            name = path[len(API_PREFIX) + 1 :]  # hypercorn has percent-decoded it
            if name and "/" not in name:
                return lambda scope: self._cluster(name)
        return None

    def _metrics(self, scope: Scope) -> Response:
        body, content_type = exposition(self._registry, _header(scope, b"accept"))
        return Response(200, body, content_type)

    def _ready(self, scope: Scope) -> Response:
        ready, reason = readiness(self._source.clusters(), self._source.stopping)
        return Response(200 if ready else 503, reason + "\n")

    def _cluster(self, name: str) -> Response:
        try:
            info = self._source.cluster(name)
        except ControlError as exc:
            return _json(404, {"error": str(exc)})
        return _json(200, cluster_document(info))


def _json(status: int, document: object) -> Response:
    return Response(status, json.dumps(document, indent=1) + "\n", _JSON)


def _header(scope: Scope, name: bytes) -> str:
    """Every value of one request header, comma-joined."""
    values = [value for key, value in scope["headers"] if key.lower() == name]
    return b",".join(values).decode("latin-1")


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length").strip()
    return bool(_header(scope, b"transfer-encoding")) or (length not in ("", "0"))


async def _send_response(send: Send, response: Response, head: bool) -> None:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        *_COMMON_HEADERS,
        *response.extra_headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to set up or tear down; answer hypercorn so it knows lifespan is handled."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

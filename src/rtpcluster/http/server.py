"""Serving the status app with hypercorn on trio, inside the service's nursery.

The endpoint is read-only and has no authentication: bound to anything but loopback it
says so in the log. Every resource a client can hold is bounded by :class:`HttpLimits`.
hypercorn has no cap on the number of connections; idle and slow ones are closed by the
keep-alive and read timeouts, and the process's descriptor limit (``LimitNOFILE``) is
the last bound.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from rtpcluster.http.app import StatusApp
from rtpcluster.http.readings import StatusSource
from rtpcluster.transport.endpoint import Endpoint

log = logging.getLogger(__name__)


class HttpEndpointError(Exception):
    """The HTTP endpoint cannot listen; the message names the address and says why."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may hold of the server, and for how long."""

    # Request line plus headers: a browser or Prometheus sends well under 2 KiB. Past this
    # h11 gives up and hypercorn answers 431 and closes.
    max_header_bytes: int = 16 * 1024
    # An idle connection (before its first request, between requests, or a request whose
    # headers trickle in) is closed after this long. Prometheus scrapes every >= 1 s and
    # the status page polls every 1.5 s, so both keep their connection.
    keep_alive_timeout: float = 5.0
    # No byte from the client for this long closes the connection, whatever its state.
    read_timeout: int = 10
    keep_alive_max_requests: int = 1000
    backlog: int = 64
    # HTTP/2 (h2c): concurrent streams and header block size per connection.
    h2_max_streams: int = 16
    h2_max_header_bytes: int = 16 * 1024
    # Request events queued for the app; it reads no body, so a few suffice.
    app_queue: int = 4
    # Seconds in-flight requests get at shutdown.
    graceful_timeout: float = 1.0


def hypercorn_config(bind: Endpoint, limits: HttpLimits) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [bind.address]
    config.errorlog = log
    config.accesslog = None
    config.include_server_header = False
    config.h11_max_incomplete_size = limits.max_header_bytes
    config.keep_alive_timeout = limits.keep_alive_timeout
    config.read_timeout = limits.read_timeout
    config.keep_alive_max_requests = limits.keep_alive_max_requests
    config.backlog = limits.backlog
    config.h2_max_concurrent_streams = limits.h2_max_streams
    config.h2_max_header_list_size = limits.h2_max_header_bytes
    config.max_app_queue_size = limits.app_queue
    config.graceful_timeout = limits.graceful_timeout
    config.websocket_max_message_size = 4096
    return config


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


async def serve_http(
    source: StatusSource,
    bind: Endpoint,
    shutdown: Callable[[], Awaitable[None]] | None = None,
    limits: HttpLimits = HttpLimits(),  # frozen: sharing the default is safe
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve :class:`StatusApp` on ``bind`` until cancelled or ``shutdown`` returns.

    ``task_status.started`` gets the URLs bound once the socket listens; a bind that
    fails raises :class:`HttpEndpointError` before that.
    """
    if not is_loopback(bind.host):
        log.warning(
            "HTTP endpoint on %s is reachable from other hosts and has no authentication "
            "(it is read-only); bind it to 127.0.0.1 or firewall it",
            bind.address,
        )
    app = StatusApp(source)
    try:
        await serve(
            cast(ASGIFramework, app),
            hypercorn_config(bind, limits),
            shutdown_trigger=shutdown,
            task_status=task_status,
            mode="asgi",
        )
    except* OSError as group:
        # hypercorn binds inside two nurseries of its own: a bind that failed arrives as
        # a group of one OSError; say it in one line (a Cancelled is never caught here).
        error = _first(group)
        raise HttpEndpointError(
            f"HTTP endpoint {bind.address}: {error.strerror or error}"
        ) from None


def _first(group: BaseExceptionGroup[OSError]) -> OSError:
    inner: OSError | BaseExceptionGroup[OSError] = group
    while isinstance(inner, BaseExceptionGroup):
        inner = inner.exceptions[0]
    return inner

"""A tiny HTTP/1.1 client over trio streams, for tests of the HTTP endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import trio


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> HttpReply:
    """One GET with ``Connection: close``; the reply read to the end."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    stream = await trio.open_tcp_stream(host, port)
    chunks = []
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        with trio.fail_after(10):
            while data := await stream.receive_some(65536):
                chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return HttpReply(int(status_line.split()[1]), parsed, body)

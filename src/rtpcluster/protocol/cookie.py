"""UDP cookies: the first word of a control datagram, echoed before the reply.

Only datagram sockets carry a cookie; stream sockets never do.
"""

from __future__ import annotations

from rtpcluster.protocol.errors import E_SYNTAX, ProtocolError

_WHITESPACE = b" \t\r\n"


def split_cookie(datagram: bytes) -> tuple[bytes, bytes]:
    """Split a datagram into its cookie and the command text after it.

    A datagram with nothing but blanks has no cookie to answer to: raise E5 and
    let the caller stay silent.  A cookie alone gives ``(cookie, b"")``; parsing
    the empty command then yields the ``<cookie> E5`` reply RTPproxy would send.
    """
    text = datagram.lstrip(_WHITESPACE)
    if not text:
        raise ProtocolError(E_SYNTAX, "empty datagram")
    cookie, space, rest = text.partition(b" ")
    if space and b"\t" not in cookie and b"\n" not in cookie and b"\r" not in cookie:
        return cookie, rest.lstrip(_WHITESPACE)  # the usual shape: "<cookie> <command>"
    end = len(text)
    for separator in _WHITESPACE:
        index = text.find(separator)
        if 0 <= index < end:
            end = index
    return text[:end], text[end:].lstrip(_WHITESPACE)


def join_cookie(cookie: bytes, reply: str | bytes) -> bytes:
    """Build a reply datagram: ``cookie``, one space, ``reply``, exactly one ``\\n``."""
    body = reply.encode("utf-8") if isinstance(reply, str) else reply
    return cookie + b" " + body.rstrip(b"\n") + b"\n"

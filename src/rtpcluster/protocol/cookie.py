"""UDP cookies: the first word of a control datagram, echoed before the reply.

Only datagram sockets carry a cookie; stream sockets never do.
"""

from __future__ import annotations

from rtpcluster.protocol.errors import E_SYNTAX, MAX_COMMAND_BYTES, ProtocolError

#: Longest cookie answered. RTPproxy builds each UDP reply, cookie first, in a 256-byte
#: buffer (``buf_r[256]`` in rtpp_command.c, cut by snprintf): for a much longer cookie
#: the datagram it sends holds no whole cookie and no reply, nothing a client can match,
#: so the cluster sends nothing at all. Real clients use 32 hex digits (sippy) or
#: ``<pid>_<random>_<seq>`` (OpenSIPS, Kamailio): under 40 bytes. 128 is three times
#: that and still leaves half of RTPproxy's buffer for the reply itself.
MAX_COOKIE_BYTES = 128

#: Longest datagram taken as a command. RTPproxy reads a datagram, cookie included, into
#: its 8 KiB command buffer and silently cuts what does not fit, so it would run the
#: front part of a longer one; the cluster answers such a datagram E5 instead.
MAX_DATAGRAM_BYTES = MAX_COMMAND_BYTES

_WHITESPACE = b" \t\r\n"


def split_cookie(datagram: bytes) -> tuple[bytes, bytes]:
    """Split a datagram into its cookie and the command text after it.

    A datagram with nothing but blanks, or whose cookie is longer than
    :data:`MAX_COOKIE_BYTES`, has no cookie to answer to: raise E5 and let the caller
    stay silent. (Echoing a long cookie would also make the cluster a reflector that
    sends kilobytes to whatever source address a datagram claims.) A cookie alone gives
    ``(cookie, b"")``; parsing the empty command then yields the ``<cookie> E5`` reply
    RTPproxy would send.
    """
    text = datagram.lstrip(_WHITESPACE)
    if not text:
        raise ProtocolError(E_SYNTAX, "empty datagram")
    cookie, space, rest = text.partition(b" ")
    if space and b"\t" not in cookie and b"\n" not in cookie and b"\r" not in cookie:
        rest = rest.lstrip(_WHITESPACE)  # the usual shape: "<cookie> <command>"
    else:
        end = len(text)
        for separator in _WHITESPACE:
            index = text.find(separator)
            if 0 <= index < end:
                end = index
        cookie, rest = text[:end], text[end:].lstrip(_WHITESPACE)
    if len(cookie) > MAX_COOKIE_BYTES:
        raise ProtocolError(E_SYNTAX, "cookie too long")
    return cookie, rest


def join_cookie(cookie: bytes, reply: str | bytes) -> bytes:
    """Build a reply datagram: ``cookie``, one space, ``reply``, exactly one ``\\n``."""
    body = reply.encode("utf-8") if isinstance(reply, str) else reply
    return cookie + b" " + body.rstrip(b"\n") + b"\n"

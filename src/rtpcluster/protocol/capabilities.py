"""The protocol version and the capability dates the cluster relies on (``V``, ``VF``)."""

from __future__ import annotations

#: What ``V`` answers; bumped only on incompatible changes, so it has been this since 2004.
PROTOCOL_VERSION = "20040107"
#: Several media streams per call: Kamailio and OpenSIPS refuse a node without it.
CAP_MULTI_STREAM = "20050322"
#: Session timeout notifications (only with ``-n``).
CAP_NOTIFY = "20081224"
#: ``%%CC_SELF%%`` wildcard notify targets: what the disconnect-notify relay needs.
CAP_WILDCARD_NOTIFY = "20150617"
#: ``&&`` subcommands.
CAP_SUBCOMMANDS = "20191015"
#: Capabilities every RTPproxy since 2.0 has, whatever its options (20081224 needs -n).
BASE_CAPABILITIES = frozenset(
    {PROTOCOL_VERSION, CAP_MULTI_STREAM, "20060704", "20071116", "20071218", "20080403", "20081102"}
)

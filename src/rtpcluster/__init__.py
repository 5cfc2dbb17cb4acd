"""rtpcluster: one local RTPproxy to the SIP server, a balanced fleet of RTPproxies behind it."""

__version__ = "0.1.0"

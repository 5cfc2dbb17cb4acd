"""End-to-end tests: Kamailio and sipp through rtpcluster (nox -s e2e)."""

"""The old home of :mod:`rtpcluster.endpoint`, kept only as a name for it.

Code of this package imports :mod:`rtpcluster.endpoint`. The test-support files that a
parallel branch is rewriting (tests/integration/harness.py) still import this name; once
they import :mod:`rtpcluster.endpoint`, this module goes.
"""

from rtpcluster.endpoint import DEFAULT_PORT, Endpoint, EndpointError, Kind

__all__ = ["DEFAULT_PORT", "Endpoint", "EndpointError", "Kind"]

"""The read-only HTTP endpoint: ``/metrics``, ``/api/v1/...``, ``/healthz``, ``/ready``, ``/``.

An ASGI app of our own (:mod:`.app`) served by hypercorn on trio (:mod:`.server`) in the
service's root nursery. It only reads: what the service reports through
:class:`~rtpcluster.http.readings.StatusSource`, and the counters the executors keep.
"""

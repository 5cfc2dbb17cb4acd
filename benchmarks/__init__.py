"""Benchmark of rtpcluster against a direct RTPproxy; entry point ``python -m benchmarks.run``.

Modules:

* :mod:`benchmarks.loadgen`: a cheap, selector-driven RTPproxy control client that plays
  calls (U, L, re-U, D) and counts errors, timeouts, retransmits and misrouted commands;
  :class:`~benchmarks.loadgen.LoadPool` runs it in several worker processes.
* :mod:`testsupport` (beside this package, shared with the tests): real RTPproxy members
  (rtp-io, one subprocess each) and the cluster subprocess, started and stopped by PID.
* :mod:`benchmarks.scale`: session-table lookup cost and memory per tracked call.
* :mod:`benchmarks.scenarios`: the measured phases (side by side, live sessions, failover).
* :mod:`benchmarks.report`: ``results/latest.json``, the plot and ``docs/performance.md``.
"""

"""Sessions: tests, lint, typecheck, bench, e2e."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PY = "3.11"


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """Unit, property and integration tests (real RTPproxies from rtp-io)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "not e2e", *session.posargs)


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    paths = ["src", "tests", "testsupport", "benchmarks", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "src", "testsupport")


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Cluster against a direct RTPproxy, side by side; writes benchmarks/results/."""
    session.install("-e", ".[test]", "matplotlib", "psutil")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session(python=PY)
def e2e(session: nox.Session) -> None:
    """Kamailio, the Sippy B2BUA and sipp through rtpcluster; skips where not installed."""
    # sippy: the Sippy B2BUA, a second real RTPproxy client and notify consumer (PyPI).
    session.install("-e", ".[test]", "sippy==2.5.0")
    session.run("pytest", "-m", "e2e", "tests/e2e", *session.posargs)

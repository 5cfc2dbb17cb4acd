"""``--log-format json``: one JSON object per line, context keys where given."""

from __future__ import annotations

import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from rtpcluster.daemon import JsonLogFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("rtpcluster.cluster", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_fields() -> None:
    rec = record("member %s is offline", "m1", cluster="c1", member="m1")
    rec.created = 1_700_000_000.25
    document = json.loads(JsonLogFormatter().format(rec))
    assert document == {
        "time": "2023-11-14T22:13:20.250+00:00",
        "level": "WARNING",
        "logger": "rtpcluster.cluster",
        "message": "member m1 is offline",
        "cluster": "c1",
        "member": "m1",
    }


def test_call_id_is_a_key_not_part_of_the_message() -> None:
    document = json.loads(JsonLogFormatter().format(record("deferred a delete", call_id="a@b")))
    assert document["call_id"] == "a@b" and "call_id" not in document["message"]


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        import sys

        rec.exc_info = sys.exc_info()
    line = JsonLogFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


@given(st.text(max_size=200), st.one_of(st.none(), st.text(max_size=20), st.integers()))
def test_any_message_is_one_line_of_json(message: str, cluster: object) -> None:
    line = JsonLogFormatter().format(record("%s", message, cluster=cluster))
    assert "\n" not in line and "\r" not in line
    document = json.loads(line)
    assert document["message"] == message
    if cluster is None:
        assert "cluster" not in document
    else:
        assert document["cluster"] == (cluster if isinstance(cluster, int) else str(cluster))

"""The ``rtpcluster`` command line: ``ctl`` exit codes and ``serve --check``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner, Result

from rtpcluster.admin.server import serve_admin
from rtpcluster.cli.app import app
from tests.unit.test_admin_commands import CONFIG_XML, FakeControl

runner = CliRunner()


async def invoke(*args: str) -> Result:
    """Run the CLI in a thread: its client blocks, the server lives on this event loop."""
    return await trio.to_thread.run_sync(lambda: runner.invoke(app, list(args)))


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> tuple[FakeControl, str]:
    control = FakeControl(str(tmp_path / "rtp_cluster.xml"))
    path = str(tmp_path / "admin.sock")
    await nursery.start(serve_admin, control, path)
    return control, path


async def test_ctl_ok_reply_exits_0(served: tuple[FakeControl, str]) -> None:
    _, path = served
    result = await invoke("ctl", "-s", path, "ls", "empty")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "Active members of the cluster #1:",
        "Inactive members of the cluster #1:",
        "OK",
    ]


async def test_ctl_error_reply_exits_1(served: tuple[FakeControl, str]) -> None:
    _, path = served
    result = await invoke("ctl", "--socket", path, "ls", "nope")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == ["ERROR: nope: cluster not found"]


async def test_ctl_unreachable_socket_exits_2(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody.sock")
    result = await invoke("ctl", "-s", path, "ls")
    assert result.exit_code == 2
    assert f"cannot connect to admin socket {path}" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "call"),
    [
        (["modify", "empty", "add", "name=p,protocol=udp,address=1.2.3.4:5"], "add_member"),
        (["modify", "c", "delete", "rp1", "timeout=3"], ("remove_member", "c", "rp1", 3.0)),
        (["modify", "c", "pause", "rp1"], ("suspend_member", "c", "rp1")),
        (["create", "c2", "address=udp:127.0.0.1:23000"], "create_cluster"),
        (["destroy", "c2"], ("destroy_cluster", "c2")),
        (["reload", "--dry-run"], ("reload", True)),
        (["reload"], ("reload", False)),
        (["raw", "modify c resume rp1"], ("resume_member", "c", "rp1")),
    ],
)
async def test_ctl_subcommands_send_the_admin_line(
    served: tuple[FakeControl, str], args: list[str], call: object
) -> None:
    control, path = served
    result = await invoke("ctl", "-s", path, *args)
    assert result.exit_code == 0, result.output
    [made] = control.calls
    if isinstance(call, tuple):
        assert made == call
    else:
        assert made[0] == call


async def test_ctl_ls_json_and_save(served: tuple[FakeControl, str], tmp_path: Path) -> None:
    _, path = served
    result = await invoke("ctl", "-s", path, "ls", "--json")
    assert result.exit_code == 0 and result.stdout.startswith("{")
    target = tmp_path / "saved.xml"
    result = await invoke("ctl", "-s", path, "save", str(target))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"Saved to {target}", "OK"]
    assert target.exists()


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "good.xml"
    path.write_text(CONFIG_XML)
    return path


def test_check_prints_the_summary(good_config: Path) -> None:
    result = runner.invoke(app, ["serve", "--check", "-c", str(good_config)])
    assert result.exit_code == 0
    assert "cluster Supercluster#1" in result.stdout
    assert "rtpproxy RTPPROXY1" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CONFIG_XML.replace("<weight>100</weight>", "<weight>0</weight>"), "<weight>"),
        ("<rtp_cluster_config><rtp_cluster>", "malformed XML"),
        (None, "bad.xml"),  # the file does not exist
    ],
)
def test_check_of_a_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, text: str | None, expected: str
) -> None:
    path = tmp_path / "bad.xml"
    if text is not None:
        path.write_text(text)
    # a real process, to see exactly what reaches stderr
    done = subprocess.run(
        [sys.executable, "-m", "rtpcluster", "serve", "-d", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert expected in line
    assert "Traceback" not in done.stderr


def test_bad_config_at_start_exits_2_before_anything_else(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_text("<nope/>")
    pidfile = tmp_path / "x.pid"
    result = runner.invoke(app, ["serve", "-c", str(path), "-P", str(pidfile)])
    assert result.exit_code == 2
    assert "root element is <nope>" in result.stderr
    assert not pidfile.exists()


def test_bad_owner_exits_2(good_config: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "-f", "-c", str(good_config), "-o", "no-such-user-x:root"]
    )
    assert result.exit_code == 2
    assert "no such user: no-such-user-x" in result.stderr


def test_check_names_the_session_store_with_its_password_masked(good_config: Path) -> None:
    result = runner.invoke(app, ["serve", "--check", "-c", str(good_config)])
    assert result.exit_code == 0 and "session store: memory\n" in result.stdout
    flag = ["--session-store", "redis://:s3cret@127.0.0.1:6390/2"]
    result = runner.invoke(app, ["serve", "--check", "-c", str(good_config), *flag])
    assert result.exit_code == 0
    assert "session store: redis://:***@127.0.0.1:6390/2\n" in result.stdout
    assert "s3cret" not in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--session-store", "redis://:pw@host:99999/0"], "--session-store: session store URL"),
        (["--session-store", "mysql://db"], "expected memory, redis://"),
        (["--session-store", ""], "is empty"),
        (["--state-file", "/nonexistent-dir-x/state"], "directory /nonexistent-dir-x does not"),
        (["--state-file", "/"], "--state-file: / is a directory"),
    ],
)
def test_a_bad_session_store_or_state_file_is_one_line_and_exit_2_also_in_check(
    good_config: Path, args: list[str], expected: str
) -> None:
    for check in (["--check"], ["-f"]):
        done = subprocess.run(
            [sys.executable, "-m", "rtpcluster", "serve", *check, "-c", str(good_config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        [line] = done.stderr.splitlines()
        assert expected in line and "pw" not in line
        assert "Traceback" not in done.stderr


def test_a_redis_store_without_the_extra_installed_is_one_line(
    good_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "coredis", None)  # import coredis fails
    monkeypatch.delitem(sys.modules, "rtpcluster.store.redis", raising=False)
    flag = ["--session-store", "unix:///run/redis/redis.sock"]
    result = runner.invoke(app, ["serve", "--check", "-c", str(good_config), *flag])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert "needs the coredis package (pip install 'rtpcluster[redis]')" in line

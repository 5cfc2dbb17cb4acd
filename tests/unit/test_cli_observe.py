"""The command line for operators and scripts: --version, ctl --json, ctl help, the
default admin socket and its fallback, --http and --log-format checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from typer.testing import CliRunner

from rtpcluster.admin.server import serve_admin
from rtpcluster.cli import app as cli
from tests.unit.test_admin_commands import CONFIG_XML, FakeControl
from tests.unit.test_cli import invoke

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"rtpcluster {cli._version()}\n"
    assert result.stdout.split()[1][0].isdigit()


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> str:
    path = str(tmp_path / "admin.sock")
    await nursery.start(serve_admin, FakeControl(), path)
    return path


async def test_ctl_ls_json_is_strict_json(served: str) -> None:
    for args in (["ls", "--json"], ["ls", "Supercluster#1", "--json"]):
        result = await invoke("ctl", "-s", served, *args)
        assert result.exit_code == 0
        document = json.loads(result.stdout)  # the whole of stdout: no trailing OK
        assert isinstance(document, dict)


async def test_ctl_json_error_goes_to_stderr_with_exit_1(served: str) -> None:
    result = await invoke("ctl", "-s", served, "ls", "nope", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "ERROR: nope: cluster not found\n"


async def test_ctl_help_lists_the_admin_commands(served: str) -> None:
    result = await invoke("ctl", "-s", served, "help")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[-1] == "OK"
    for command in ("ls", "modify", "reload", "save", "create", "destroy"):
        assert any(line.lstrip().startswith(command) for line in lines), command


async def test_ctl_without_socket_tries_the_new_place_then_the_old(
    served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "run" / "rtpcluster.sock")
    monkeypatch.setattr(cli, "CTL_SOCKETS", (missing, served))
    result = await invoke("ctl", "ls", "empty")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "OK"


async def test_ctl_prefers_the_new_place(
    served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = str(tmp_path / "old.sock")  # nothing there: never reached
    monkeypatch.setattr(cli, "CTL_SOCKETS", (served, old))
    assert (await invoke("ctl", "ls")).exit_code == 0


def test_ctl_with_no_socket_anywhere_names_both_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new, old = str(tmp_path / "new.sock"), str(tmp_path / "old.sock")
    monkeypatch.setattr(cli, "CTL_SOCKETS", (new, old))
    result = runner.invoke(cli.app, ["ctl", "ls"])
    assert result.exit_code == 2
    assert new in result.stderr and old in result.stderr
    assert result.stderr.count("\n") == 1


def test_default_ctl_sockets() -> None:
    assert cli.CTL_SOCKETS == ("/run/rtpcluster/rtpcluster.sock", "/var/run/rtp_cluster.sock")


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "good.xml"
    path.write_text(CONFIG_XML)
    return path


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1", "127.0.0.1:0", "*:80", "unix:/x"])
def test_bad_http_flag_is_one_line_and_exit_2(good_config: Path, value: str) -> None:
    result = runner.invoke(cli.app, ["serve", "-f", "-c", str(good_config), "--http", value])
    assert result.exit_code == 2
    assert result.stderr.startswith("rtpcluster: --http: ")
    assert result.stderr.count("\n") == 1


def test_bad_log_format_is_refused(good_config: Path) -> None:
    result = runner.invoke(cli.app, ["serve", "-c", str(good_config), "--log-format", "xml"])
    assert result.exit_code == 2

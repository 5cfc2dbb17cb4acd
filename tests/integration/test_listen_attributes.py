"""``<listen>`` attributes from the XML file to the running sockets, and back by ``save``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import trio

from rtpcluster.config import load_config
from rtpcluster.service import ServeOptions, run_service
from tests.integration.harness import stream_command
from tests.integration.test_admin_live import Admin


def mode_of(path: Path) -> int | None:
    """The socket's permission bits, None while it is being reopened."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


async def test_mode_owner_and_limits_reach_the_sockets_and_survive_save(tmp_path: Path) -> None:
    uid, gid = os.getuid(), os.getgid()
    narrow, default = tmp_path / "narrow.sock", tmp_path / "default.sock"
    config_path = tmp_path / "rtp_cluster.xml"
    config_path.write_text(
        f"""<rtp_cluster_config><rtp_cluster><name>c1</name>
        <listen mode="0660" owner="{uid}:{gid}" max_connections="8">unix:{narrow}</listen>
        <listen idle_timeout="30">cunix:{default}</listen>
        </rtp_cluster></rtp_cluster_config>"""
    )
    config = load_config(config_path)
    admin_path = str(tmp_path / "admin.sock")
    options = ServeOptions(config_path=str(config_path), admin_socket=admin_path, stop_grace=0.5)
    async with trio.open_nursery() as nursery:
        service = await nursery.start(run_service, config, options)
        info = os.stat(narrow)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (uid, gid)
        assert stat.S_IMODE(os.stat(default).st_mode) == 0o666  # RTPproxy's default
        assert await stream_command(f"unix:{narrow}", "V", newline=False) == "20040107\n"

        saved = tmp_path / "saved.xml"
        assert await Admin(admin_path).ok(f"save {saved}") == [f"Saved to {saved}"]
        assert load_config(saved) == config
        assert f'<listen mode="0660" owner="{uid}:{gid}" max_connections="8">' in saved.read_text()

        # a reload that narrows the mode reopens the socket with it
        config_path.write_text(saved.read_text().replace('mode="0660"', 'mode="0600"'))
        admin = Admin(admin_path)
        assert await admin.ok("reload --dry-run") == [
            f"cluster c1: listen on unix:{narrow}, cunix:{default}",
            "Would load 1 clusters and 0 RTP proxies (dry run, nothing changed)",
        ]
        await admin.ok("reload")
        await admin.until("ls", lambda _: mode_of(narrow) == 0o600)
        assert await stream_command(f"unix:{narrow}", "V", newline=False) == "20040107\n"
        service.stop()

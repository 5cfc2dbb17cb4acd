"""Finding 5: ``save PATH`` over the real admin socket writes only where the operator allowed.

Each refusal is played against a running service: an unrelated file, a symlink, the
live unix control socket, the admin socket itself, ``../`` — refused with a reason
naming the path, and nothing on disk changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from rtpcluster.config import Config, load_config, save_config
from rtpcluster.service import ServeOptions, Service, run_service
from tests.integration.harness import cluster_config
from tests.integration.test_admin_live import Admin, check_config
from testsupport import stream_command


class Layout:
    """``etc/`` holds the config file and both sockets; ``outside/`` a file to protect."""

    def __init__(self, tmp_path: Path) -> None:
        self.etc = tmp_path / "etc"
        self.outside = tmp_path / "outside"
        self.etc.mkdir()
        self.outside.mkdir()
        self.config = self.etc / "rtp_cluster.xml"
        self.admin = self.etc / "admin.sock"
        self.control = self.etc / "ctl.sock"
        self.victim = self.outside / "victim.txt"
        self.victim.write_text("precious\n")


@asynccontextmanager
async def serving(layout: Layout, save_dirs: tuple[str, ...] = ()) -> AsyncIterator[Admin]:
    config = Config(clusters=[cluster_config([], [f"unix:{layout.control}"])])
    save_config(config, layout.config)
    options = ServeOptions(
        config_path=str(layout.config),
        admin_socket=str(layout.admin),
        save_dirs=save_dirs,
        stop_grace=0.5,
    )
    async with trio.open_nursery() as nursery:
        service: Service = await nursery.start(run_service, config, options)
        try:
            yield Admin(str(layout.admin))
        finally:
            service.stop()


async def test_save_refuses_everything_but_files_in_the_allowed_directory(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    link = layout.etc / "link.xml"
    link.symlink_to(layout.victim)
    (layout.etc / "alias").symlink_to(layout.outside)  # a directory link leading outside
    (layout.etc / "sub").mkdir()
    allowed = f"not inside an allowed directory ({layout.etc}; see serve --save-dir)"
    async with serving(layout) as admin:
        before = sorted(os.listdir(layout.etc))
        refusals = {
            str(layout.victim): allowed,
            str(link): "is a symlink",
            str(layout.control): "is a socket of this service",
            str(layout.admin): "is a socket of this service",
            "../escape.xml": allowed,
            f"{layout.etc}/../escape.xml": allowed,
            f"{layout.etc}/alias/escape.xml": allowed,
            f"{layout.etc}/sub": "is a directory",
            f"{layout.etc}/": "not a file name",
        }
        for path, reason in refusals.items():
            assert await admin(f"save {path}") == [f"ERROR: cannot save to {path}: {reason}"]

        assert layout.victim.read_text() == "precious\n"
        assert link.is_symlink() and os.readlink(link) == str(layout.victim)
        assert not (tmp_path / "escape.xml").exists()
        assert not (layout.outside / "escape.xml").exists()
        assert sorted(os.listdir(layout.etc)) == before  # no temporary file left either
        assert stat.S_ISSOCK(os.lstat(layout.control).st_mode)
        # both sockets still serve: a control client and the admin plane
        assert await stream_command(f"unix:{layout.control}", "V", newline=False) == "20040107\n"
        assert "    name = c1" in await admin.ok("ls")


async def test_save_inside_the_allowed_directory(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    async with serving(layout) as admin:
        backup = layout.etc / "backup.xml"
        assert await admin.ok(f"save {backup}") == [f"Saved to {backup}"]
        checked = check_config(backup)
        assert checked.returncode == 0, checked.stderr
        assert f"listen: unix:{layout.control}" in checked.stdout

        # a relative path lands in the allowed directory, not in the service's cwd
        assert await admin.ok("save relative.xml") == [f"Saved to {layout.etc / 'relative.xml'}"]
        assert load_config(layout.etc / "relative.xml") == load_config(backup)

        # an existing file is replaced, its mode kept; without a path: the config file
        os.chmod(layout.config, 0o640)
        assert await admin.ok("save") == [f"Saved to {layout.config}"]
        assert stat.S_IMODE(os.stat(layout.config).st_mode) == 0o640
        assert layout.config.read_text() == backup.read_text()


async def test_save_dir_option_replaces_the_default(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    saves = tmp_path / "saves"
    saves.mkdir()
    async with serving(layout, save_dirs=(str(saves),)) as admin:
        assert await admin.ok(f"save {saves / 'a.xml'}") == [f"Saved to {saves / 'a.xml'}"]
        assert await admin.ok("save b.xml") == [f"Saved to {saves / 'b.xml'}"]
        other = layout.etc / "other.xml"
        assert await admin(f"save {other}") == [
            f"ERROR: cannot save to {other}: not inside an allowed directory "
            f"({saves}; see serve --save-dir)"
        ]
        assert not other.exists()
        assert await admin.ok("save") == [f"Saved to {layout.config}"]  # the config: always

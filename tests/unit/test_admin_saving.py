"""Where ``save`` may write: the path rules as a property, over a real directory tree."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtpcluster.admin.saving import SaveRefused, allowed_directories, save_target, write_file

# Path components, including the ones that try to lead out: "..", absolute roots,
# a symlink to the parent, a symlink to a directory outside, a symlink to a file.
COMPONENTS = st.sampled_from(
    ["..", ".", "", "sub", "up", "out", "file.xml", "new.xml", "link.xml", "sock", "dev"]
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``root/allowed`` (what save may write into) beside ``root/outside``."""
    root = tmp_path_factory.mktemp("save")
    allowed, outside = root / "allowed", root / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "file.xml").write_text("outside")
    (allowed / "file.xml").write_text("inside")
    (allowed / "up").symlink_to("..")
    (allowed / "out").symlink_to(outside)
    (allowed / "link.xml").symlink_to(outside / "file.xml")
    (allowed / "dev").symlink_to("/dev/null")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(allowed / "sock"))
    listening.close()
    return allowed, outside


@settings(max_examples=300, deadline=None)
@given(
    components=st.lists(COMPONENTS, min_size=1, max_size=5),
    absolute=st.booleans(),
)
def test_a_save_target_is_a_plain_file_inside_the_allowed_directory(
    tree: tuple[Path, Path], components: list[str], absolute: bool
) -> None:
    allowed, _ = tree
    path = os.path.join(*components)
    if absolute:
        path = os.path.join(str(allowed), path)
    try:
        target = save_target(path, str(allowed / "rtp_cluster.xml"), [str(allowed)])
    except SaveRefused as refused:
        assert str(refused).startswith(f"cannot save to {path}: ")
        return
    directory = os.path.realpath(os.path.dirname(target))
    assert directory == str(allowed) or directory.startswith(f"{allowed}/")
    assert os.path.dirname(target) == directory  # the target names no symlinked directory
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    assert stat.S_ISREG(mode)


def test_devices_and_sockets_are_named(tree: tuple[Path, Path]) -> None:
    allowed, _ = tree
    with pytest.raises(SaveRefused, match=r"^cannot save to /dev/null: is a device$"):
        save_target("/dev/null", "/etc/rtp_cluster.xml", ["/dev"])
    with pytest.raises(SaveRefused, match=r"sock: is a socket$"):
        save_target("sock", str(allowed / "x.xml"), [str(allowed)])


def test_allowed_directories_default_to_the_config_files(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    config = str(tmp_path / "alias" / "rtp_cluster.xml")
    assert allowed_directories(config, []) == (str(tmp_path / "real"),)
    assert allowed_directories(config, [str(tmp_path)]) == (str(tmp_path),)


def test_write_file_replaces_atomically_and_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "c.xml"
    target.write_text("old")
    os.chmod(target, 0o600)
    write_file(str(target), b"new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    fresh = tmp_path / "fresh.xml"
    write_file(str(fresh), b"x")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["c.xml", "fresh.xml"]


def test_write_file_into_a_missing_directory_names_the_reason(tmp_path: Path) -> None:
    with pytest.raises(SaveRefused, match="No such file or directory"):
        write_file(str(tmp_path / "missing" / "c.xml"), b"x")

"""The layers hold: which module may import what (docs/architecture.md).

Read from the source, not from what a test run happened to import: each module's own
``import`` statements, at any depth of the file.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "rtpcluster"


def imports_of(relative: str) -> set[str]:
    """Every module the file imports (``from x import y`` gives ``x``)."""
    tree = ast.parse((SRC / relative).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


def ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "rtpcluster" or m.startswith("rtpcluster.")}


@pytest.mark.parametrize("relative", ["endpoint.py", "owner.py"])
def test_base_modules_import_nothing_of_ours(relative: str) -> None:
    assert ours(imports_of(relative)) == set()


def test_protocol_imports_only_itself() -> None:
    for path in (SRC / "protocol").glob("*.py"):
        outside = {m for m in ours(imports_of(f"protocol/{path.name}")) if ".protocol" not in m}
        assert outside == set(), path.name
        assert "trio" not in imports_of(f"protocol/{path.name}"), path.name


def test_config_does_not_import_transport_cluster_or_admin() -> None:
    for path in (SRC / "config").glob("*.py"):
        imported = ours(imports_of(f"config/{path.name}"))
        layers = {m.split(".")[1] for m in imported if "." in m}
        assert not layers & {"transport", "cluster", "admin", "service", "cli"}, (path, imported)


def test_the_admin_address_parser_opens_nothing() -> None:
    imported = imports_of("admin/address.py")
    assert "trio" not in imported and "socket" not in imported
    assert ours(imported) <= {"rtpcluster.admin.token", "rtpcluster.endpoint", "rtpcluster.owner"}


@pytest.mark.parametrize("module", ["rtpcluster.cli.app", "rtpcluster.admin.client"])
def test_the_command_line_does_not_load_the_admin_server(module: str) -> None:
    code = f"import sys, {module}; print('rtpcluster.admin.server' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_endpoint_is_imported_from_its_own_module() -> None:
    assert not (SRC / "transport" / "endpoint.py").exists()
    for path in SRC.rglob("*.py"):
        relative = str(path.relative_to(SRC))
        assert "rtpcluster.transport.endpoint" not in imports_of(relative), relative


@pytest.mark.parametrize(
    "relative",
    [
        "cluster/router.py",
        "cluster/decisions.py",
        "cluster/balancer.py",
        "cluster/sessions.py",
        "cluster/notify_tags.py",
    ],
)
def test_the_deciding_modules_touch_no_sockets_and_no_trio(relative: str) -> None:
    imported = imports_of(relative)
    assert not imported & {"trio", "socket", "select"}, imported
    assert not {m for m in ours(imported) if ".transport" in m}, imported


def test_the_udp_pump_lives_in_the_transport_and_knows_nothing_of_clusters() -> None:
    assert ours(imports_of("transport/pump.py")) == set()


def test_the_router_does_not_load_the_notify_relay() -> None:
    """The router issues notify tags (notify_tags.py); the relay with its sockets and
    tasks (notify.py) is the cluster's to start."""
    loaded = "'rtpcluster.cluster.notify' in sys.modules"
    code = f"import sys, rtpcluster.cluster.router; print({loaded})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

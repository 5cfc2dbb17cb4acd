"""The ``rtpcluster`` command: ``serve`` runs the service, ``ctl`` talks to its admin socket.

Thin on purpose: flags are parsed here and handed to the service, the daemon helpers and
the admin client. Exit codes: 0 success; 1 refused (an ``ERROR`` reply, already running,
a socket that cannot be bound); 2 bad configuration or an unreachable admin socket.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from rtpcluster.admin.address import (
    DEFAULT_ADMIN_SOCKET,
    AdminSocketError,
    check_exposure,
    parse_admin_spec,
    parse_owner,
)
from rtpcluster.admin.client import (
    DEFAULT_TIMEOUT,
    AdminConnectError,
    AdminTimeoutError,
    send_command,
)
from rtpcluster.admin.saving import check_save_dirs
from rtpcluster.admin.token import TokenFileError, read_token_file
from rtpcluster.daemon import (
    DEFAULT_LOGFILE,
    DEFAULT_PIDFILE,
    Daemon,
    DaemonError,
    configure_logging,
    raise_descriptor_limit,
)

if TYPE_CHECKING:
    from rtpcluster.config import Config
    from rtpcluster.endpoint import Endpoint
    from rtpcluster.service import ServeOptions

DEFAULT_CONFIG = "/usr/local/etc/rtp_cluster.xml"
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
# Where `ctl` looks for the admin socket when not told: the systemd unit's place first
# (its RuntimeDirectory), then the original RTP Cluster's default.
CTL_SOCKETS = ("/run/rtpcluster/rtpcluster.sock", DEFAULT_ADMIN_SOCKET)

app = typer.Typer(
    name="rtpcluster",
    help="Load balancer for RTPproxy media relays.",
    no_args_is_help=True,
    add_completion=False,
)
ctl_app = typer.Typer(
    help="Send a command to a running rtpcluster's admin socket.", no_args_is_help=True
)
app.add_typer(ctl_app, name="ctl")


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    PLAIN = "plain"
    JSON = "json"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rtpcluster")
    except metadata.PackageNotFoundError:  # run from a source tree
        from rtpcluster import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"rtpcluster {_version()}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Load balancer for RTPproxy media relays."""


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"rtpcluster: {message}", err=True)
    raise typer.Exit(code)


# --- serve ------------------------------------------------------------------------


def _load(path: str) -> Config:
    from rtpcluster.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    except OSError as err:
        _fail(f"{path}: {err.strerror or err}", EXIT_BAD_INPUT)


def _absolute_admin_spec(spec: str) -> str:
    """A unix admin socket as an absolute path (the daemon runs from ``/``)."""
    endpoint = parse_admin_spec(spec)
    return os.path.abspath(endpoint.path) if endpoint.kind.is_path else spec


def _startup_failure(error: BaseException) -> str | None:
    """The one-line reason of an expected startup failure, looking into exception groups."""
    from rtpcluster.cluster.control import ControlError
    from rtpcluster.config import ConfigError
    from rtpcluster.failures import describe_failure, primary_error
    from rtpcluster.http.server import HttpEndpointError
    from rtpcluster.store import StoreUnavailable, StoreUrlError

    expected = (
        AdminSocketError,
        ConfigError,
        ControlError,
        DaemonError,
        HttpEndpointError,
        OSError,
        StoreUnavailable,
        StoreUrlError,
    )
    if isinstance(primary_error(error), expected):
        return describe_failure(error)
    return None


def _log_warnings(config: Config) -> None:
    """What ``--check`` warns about, in the log once logging is set up."""
    from rtpcluster.config import config_warnings

    log = logging.getLogger("rtpcluster")
    for warning in config_warnings(config):
        log.warning("%s", warning)


def _run_foreground(
    config: Config, options: ServeOptions, level: LogLevel, log_format: LogFormat
) -> None:
    import trio

    from rtpcluster.service import run_service

    configure_logging(level, log_format)
    _log_warnings(config)
    raise_descriptor_limit()
    try:
        trio.run(run_service, config, options)
    except (Exception, BaseExceptionGroup) as err:
        reason = _startup_failure(err)
        if reason is None:
            raise
        _fail(reason, EXIT_REFUSED)


def _run_daemon(
    config: Config,
    options: ServeOptions,
    daemon: Daemon,
    level: LogLevel,
    log_format: LogFormat,
) -> None:
    import trio

    from rtpcluster.failures import describe_failure, primary_error
    from rtpcluster.service import run_service

    try:
        daemon.check_startable()
    except DaemonError as err:
        _fail(str(err), EXIT_REFUSED)
    daemon.detach()  # only the detached process comes back
    configure_logging(level, log_format)
    log = logging.getLogger("rtpcluster")
    _log_warnings(config)
    options = dataclasses.replace(options, reopen_log=daemon.reopen_log)
    raise_descriptor_limit()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_service, config, options)
            log.info("rtpcluster started, pid %d", os.getpid())
            daemon.ready()

    try:
        trio.run(serve)
    except BaseException as err:
        expected = _startup_failure(err)
        reason = expected or f"{type(primary_error(err)).__name__}: {describe_failure(err)}"
        daemon.fail(reason)
        log.error("rtpcluster stopped: %s", reason, exc_info=expected is None)
        raise typer.Exit(EXIT_REFUSED) from None
    finally:
        daemon.cleanup()
    log.info("rtpcluster stopped")


@app.command()
def serve(
    config: Annotated[
        str, typer.Option("--config", "-c", help="XML configuration file")
    ] = DEFAULT_CONFIG,
    admin_socket: Annotated[
        str,
        typer.Option("--admin-socket", "-s", help="admin socket: a unix path or tcp:HOST:PORT"),
    ] = DEFAULT_ADMIN_SOCKET,
    owner: Annotated[
        str | None, typer.Option("--owner", "-o", help="owner of the admin socket, user:group")
    ] = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", "-f", help="stay in the foreground, log to stderr")
    ] = False,
    pidfile: Annotated[
        str, typer.Option("--pidfile", "-p", "-P", help="pidfile (daemon mode)")
    ] = DEFAULT_PIDFILE,
    logfile: Annotated[
        str, typer.Option("--logfile", "-L", help="log file (daemon mode)")
    ] = DEFAULT_LOGFILE,
    check: Annotated[
        bool, typer.Option("--check", "-d", help="check the configuration and exit")
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="logging threshold")
    ] = LogLevel.INFO,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", case_sensitive=False, help="plain, or json (one per line)"),
    ] = LogFormat.PLAIN,
    http: Annotated[
        str | None,
        typer.Option("--http", help="serve metrics, the JSON API and the status page on HOST:PORT"),
    ] = None,
    admin_token_file: Annotated[
        str | None,
        typer.Option(
            "--admin-token-file",
            help="file with the token every admin connection must send first "
            "(required for a TCP admin socket on a non-loopback address)",
        ),
    ] = None,
    save_dirs: Annotated[
        list[str] | None,
        typer.Option(
            "--save-dir",
            help="directory the admin 'save PATH' may write into (repeatable; "
            "default: the config file's directory)",
        ),
    ] = None,
    session_store: Annotated[
        str | None,
        typer.Option(
            "--session-store",
            help="where call affinity is shared: memory, redis://HOST:PORT/DB, rediss://..., "
            "unix:///PATH?db=N (wins over <session_store>)",
        ),
    ] = None,
    state_file: Annotated[
        str | None,
        typer.Option(
            "--state-file",
            help="write the session table here at stop and read it back at start "
            "(a graceful restart keeps every call's member)",
        ),
    ] = None,
) -> None:
    """Run the cluster service (a daemon unless --foreground)."""
    cfg = _load(config)
    store_text = _check_store(session_store, cfg)
    state_path = _check_state_file(state_file) if state_file else None
    if check:
        from rtpcluster.config import config_warnings, summary

        typer.echo(summary(cfg), nl=False)
        typer.echo(f"session store: {store_text}")
        for warning in config_warnings(cfg):
            typer.echo(f"rtpcluster: warning: {warning}", err=True)
        return
    try:
        spec = _absolute_admin_spec(admin_socket)
        if owner:
            parse_owner(owner)
        token = read_token_file(admin_token_file) if admin_token_file else None
        check_exposure(parse_admin_spec(spec), token)
        check_save_dirs(save_dirs or [])
    except (AdminSocketError, TokenFileError, ValueError) as err:
        _fail(str(err), EXIT_BAD_INPUT)

    from rtpcluster.sdnotify import Notifier
    from rtpcluster.service import ServeOptions

    options = ServeOptions(
        config_path=os.path.abspath(config),
        admin_socket=spec,
        admin_owner=owner or None,
        admin_token_file=os.path.abspath(admin_token_file) if admin_token_file else None,
        save_dirs=tuple(os.path.abspath(directory) for directory in save_dirs or []),
        http=_http_endpoint(http) if http else cfg.http,
        notifier=Notifier.from_environment(),
        session_store=session_store,
        state_file=state_path,
    )
    if foreground:
        _run_foreground(cfg, options, log_level, log_format)
    else:
        daemon = Daemon(pidfile=os.path.abspath(pidfile), logfile=os.path.abspath(logfile))
        _run_daemon(cfg, options, daemon, log_level, log_format)


def _check_store(flag: str | None, cfg: Config) -> str:
    """The session store to use (``--session-store`` wins), as shown (password masked).

    Opening it connects nothing; it checks the URL and that the Redis extra is there.
    """
    from rtpcluster.store import StoreUnavailable, StoreUrlError, open_store, parse_store_url

    where = "--session-store" if flag is not None else "<session_store>"
    try:
        url = parse_store_url(flag if flag is not None else cfg.session_store)
        open_store(url)
    except (StoreUrlError, StoreUnavailable) as err:
        _fail(f"{where}: {err}", EXIT_BAD_INPUT)
    return str(url)


def _check_state_file(path: str) -> str:
    """``--state-file``: absolute (the daemon runs from ``/``), in a directory that exists."""
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    if os.path.isdir(absolute):
        _fail(f"--state-file: {path} is a directory", EXIT_BAD_INPUT)
    if not os.path.isdir(directory):
        _fail(f"--state-file: directory {directory} does not exist", EXIT_BAD_INPUT)
    return absolute


def _http_endpoint(text: str) -> Endpoint:
    """``--http`` (it wins over ``<http>``), checked like the XML element."""
    from rtpcluster.config.models import http_endpoint

    try:
        return http_endpoint(text)
    except ValueError as err:
        _fail(f"--http: {err}", EXIT_BAD_INPUT)


# --- ctl --------------------------------------------------------------------------


class _CtlTarget:
    def __init__(self, sockets: tuple[str, ...], timeout: float, token: str | None) -> None:
        self.sockets = sockets  # tried in order until one accepts the connection
        self.timeout = timeout
        self.token = token


@ctl_app.callback()
def ctl(
    ctx: typer.Context,
    socket: Annotated[
        str | None,
        typer.Option(
            "--socket",
            "-s",
            "--admin-socket",
            help=f"admin socket of the service (default: {', then '.join(CTL_SOCKETS)})",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", help="seconds to wait for the whole reply")
    ] = DEFAULT_TIMEOUT,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            "--admin-token-file",
            help="file with the admin token (the service's --admin-token-file)",
        ),
    ] = None,
) -> None:
    try:
        token = read_token_file(token_file) if token_file else None
    except TokenFileError as err:
        _fail(str(err), EXIT_BAD_INPUT)
    ctx.obj = _CtlTarget((socket,) if socket else CTL_SOCKETS, timeout, token)


def _exchange(target: _CtlTarget, line: str) -> tuple[list[str], bool]:
    """Send to the first socket that accepts the connection; exit 2 when none does."""
    errors = []
    for socket in target.sockets:
        try:
            return send_command(socket, line, target.timeout, target.token)
        except AdminConnectError as err:
            errors.append(str(err))
        except AdminTimeoutError as err:  # it may have acted: never retry elsewhere
            _fail(str(err), EXIT_BAD_INPUT)
    _fail("; ".join(errors), EXIT_BAD_INPUT)


def _send(ctx: typer.Context, *words: str, as_json: bool = False) -> NoReturn:
    """Send one command line, print the reply, exit 0 on OK and 1 on ERROR.

    With ``as_json`` stdout gets the JSON document alone (no ``OK``), so it pipes into
    ``jq``; an ``ERROR`` goes to stderr.
    """
    line = " ".join(word for word in words if word)
    lines, ok = _exchange(ctx.obj, line)
    if as_json:
        if ok:
            typer.echo("\n".join(lines[:-1]))
        else:
            typer.echo("\n".join(lines), err=True)
    else:
        for reply_line in lines:
            typer.echo(reply_line)
    raise typer.Exit(0 if ok else EXIT_REFUSED)


@ctl_app.command("ls")
def ctl_ls(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Argument(help="cluster name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
) -> None:
    """List the clusters, or the members of one cluster."""
    _send(ctx, "ls", cluster or "", "--json" if as_json else "", as_json=as_json)


@ctl_app.command("modify")
def ctl_modify(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Argument(help="cluster name")],
    action: Annotated[str, typer.Argument(help="add, delete/remove, suspend/pause, resume")],
    args: Annotated[list[str] | None, typer.Argument(help="member name or k=v,k=v")] = None,
) -> None:
    """Add, remove, suspend or resume a member."""
    _send(ctx, "modify", cluster, action, *(args or []))


@ctl_app.command("create")
def ctl_create(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Argument(help="name of the new cluster")],
    fields: Annotated[list[str], typer.Argument(help="address=KIND:ADDR[,capacity_limit=..]")],
) -> None:
    """Create a cluster."""
    _send(ctx, "create", cluster, *fields)


@ctl_app.command("destroy")
def ctl_destroy(
    ctx: typer.Context, cluster: Annotated[str, typer.Argument(help="cluster name")]
) -> None:
    """Drain and remove a cluster."""
    _send(ctx, "destroy", cluster)


@ctl_app.command("reload")
def ctl_reload(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only show what would change")] = False,
) -> None:
    """Re-read the configuration file and apply it."""
    _send(ctx, "reload", "--dry-run" if dry_run else "")


@ctl_app.command("save")
def ctl_save(
    ctx: typer.Context,
    path: Annotated[
        str | None,
        typer.Argument(help="file in an allowed directory (default: the config file)"),
    ] = None,
) -> None:
    """Write the running configuration to a file."""
    _send(ctx, "save", path or "")


@ctl_app.command("help")
def ctl_help(ctx: typer.Context) -> None:
    """Show the admin commands the service understands."""
    _send(ctx, "help")


@ctl_app.command("raw")
def ctl_raw(
    ctx: typer.Context, line: Annotated[str, typer.Argument(help="a whole admin command line")]
) -> None:
    """Send any admin command line as it is."""
    _send(ctx, line)


def main() -> None:
    app(prog_name="rtpcluster")

"""``dynwf serve``: the project's production host (``emulator.server.production``).

This module reads the options, refuses what must not start (a dynwf check error, an address beyond
loopback without an admin token, missing isolation layers unless allowed), binds the socket,
and decides what signals mean: SIGTERM stops gracefully and exits 0, SIGINT the same with 130.
Everything the server says is a JSON line on stderr.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from dynwf_cli.commands import COMMANDS
from dynwf_cli.commands.check import refuse_check_errors
from dynwf_cli.options import (ConfigOption, IpOption, MaxInflightOption, MaxQueuedOption,
                               PortOption, StateDirOption, DatabaseOption, VarOption)
from emulator import (DEV_IP, DEV_PORT, DynwfError, HostOptions, Project, ProjectHost, SystemClock,
                      __version__, describe_missing, open_project, parse_var, tune_for_serving)
from emulator.server import (ADMIN_PREFIX, ADMIN_TOKEN_ENV, DRAIN_TIMEOUT_S, MAX_INFLIGHT,
                             MAX_QUEUED, Admission, DispatcherLoadError, JsonLog, ProductionServer,
                             admin_token, check_isolation, listen, load_error_line,
                             private_listener, require_admin_token)

HELP = f"""Run the project in production: the dispatcher over HTTP, the durable engine and the
isolate pool, on the real clock, with no hot reload, no fast-forward and no playground. Several
hosts may serve one project's database: each claims instances with expiring leases, and one that
stops hands its leases back so another takes its instances over at once.

Endpoints besides the dispatcher (which answers every other request):

\b
  GET /healthz   200 {{"status": "ok"}} while the process answers
  GET /readyz    200 when the database answers and the server is serving;
                 503 with the reasons otherwise (e.g. while draining)
  GET /metrics   Prometheus text format: instances by status, steps committed,
                 workflows completed, step and database latency, isolates, takeovers

The admin API ({ADMIN_PREFIX}/api/) and the dashboard ({ADMIN_PREFIX}/) are served only with an admin
token, from {ADMIN_TOKEN_ENV} or --admin-token-file, and every request to them must carry it as
'Authorization: Bearer <token>' (a browser asks for it as the password). Without a token they
are not mounted; serve refuses to listen beyond loopback (e.g. --ip 0.0.0.0) without one.

serve refuses to start when a kernel layer of tenant isolation is missing on this machine, unless
--allow-weak-isolation is given; it then says so at start, in /readyz and in /metrics.

SIGTERM (or Ctrl-C) stops gracefully: /readyz turns 503, no new instance is claimed and no new
step starts, the steps in flight get --drain-timeout seconds to commit, then HTTP stops and every
lease is handed back; a second signal stops waiting for the steps. Every line written is one
JSON object on stderr (time, level, event, ...).

--ip and --port default to the config's "dev" section, else {DEV_IP}:{DEV_PORT} (loopback only).

Exit status: 0 when stopped by SIGTERM, 130 by Ctrl-C, 1 when the server cannot start (a dynwf
check error, missing isolation, the port in use, the dispatcher failing to load), 2 on a usage
error (e.g. no admin token on a non-loopback address).

Examples:

\b
  DYNWF_ADMIN_TOKEN=$(openssl rand -hex 24) dynwf serve --ip 0.0.0.0 --port 8080
  dynwf serve --ip 0.0.0.0 --admin-token-file /run/secrets/dynwf-admin --drain-timeout 20
  curl -s localhost:8080/readyz
"""


def serve(
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    database: DatabaseOption = None,
    ip: IpOption = None,
    port: PortOption = None,
    admin_token_file: Annotated[Optional[Path], typer.Option(
        "--admin-token-file", metavar="FILE",
        help=f"A file holding the admin token (its contents, stripped); else {ADMIN_TOKEN_ENV}. "
             "Without a token the admin API and the dashboard are not served.")] = None,
    allow_weak_isolation: Annotated[bool, typer.Option(
        "--allow-weak-isolation",
        help="Start even when a kernel layer of tenant isolation is missing on this machine "
             "(said at start, in /readyz and in /metrics).")] = False,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", min=0, metavar="SECONDS",
        help="On SIGTERM, how long the steps in flight get to commit before the server stops "
             f"(default: {DRAIN_TIMEOUT_S:g}).")] = DRAIN_TIMEOUT_S,
    max_inflight: MaxInflightOption = MAX_INFLIGHT,
    max_queued: MaxQueuedOption = MAX_QUEUED,
    var: VarOption = [],
) -> None:
    env_vars = dict(parse_var(v) for v in var)
    token = admin_token(file=admin_token_file, environ=os.environ)
    project = open_project(config, state_dir, database=database)
    address = ip or project.config.dev.ip
    require_admin_token(address, token)
    refuse_check_errors(project, command="serve")
    missing = check_isolation(allow_weak=allow_weak_isolation)
    sock = listen(address, project.config.dev.port if port is None else port)
    log = JsonLog(clock=SystemClock())
    try:
        code = asyncio.run(_serve(project, sock, log, token=token, missing=missing,
                                  drain_timeout_s=drain_timeout, env_vars=env_vars,
                                  admission=Admission(max_inflight, max_queued)))
    finally:
        sock.close()
    raise typer.Exit(code)


def open_host(project: Project, env_vars: dict[str, str]) -> ProjectHost:
    """The host on the project's store: the one place ``dynwf serve`` chooses its database
    (``--database`` / ``DYNWF_DATABASE_URL``, else the SQLite file in the state folder)."""
    # each host's connections carry its name, so an operator can tell them apart (and cut one
    # host off) in pg_stat_activity; a URL's own application_name wins
    name = f"dynwf serve {socket.gethostname()} {os.getpid()}"[:63]
    return ProjectHost(project.config, HostOptions(state_dir=project.state_dir,
                                                   database=project.store_url, clock=SystemClock(),
                                                   isolation="process", vars=env_vars,
                                                   application_name=name))


async def _serve(project: Project, sock, log: JsonLog, *, token: str | None,
                 missing: dict[str, str], drain_timeout_s: float, env_vars: dict[str, str],
                 admission: Admission) -> int:
    loop = asyncio.get_running_loop()
    received: list[int] = []
    server: ProductionServer | None = None

    def on_signal(signum: int) -> None:
        received.append(signum)
        log.info("shutdown.signal", signal=signal.Signals(signum).name)
        if server is not None:
            server.stop(force=len(received) > 1)   # a second signal stops waiting for steps

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        host = open_host(project, env_vars)
        tune_for_serving()
        try:
            await host.start()
        except BaseException as exc:
            await host.close()
            if isinstance(exc, Exception) and not isinstance(exc, DynwfError):
                raise DispatcherLoadError(problem=load_error_line(exc, project.config.root)) from None
            raise
        server = ProductionServer(host, sock, log=log, token=token, missing_layers=missing,
                                  drain_timeout_s=drain_timeout_s, admission=admission)
        host_ip, port = sock.getsockname()[:2]
        shown_ip = f"[{host_ip}]" if ":" in host_ip else host_ip
        if missing:
            log.warning("isolation.weakened", missing=missing, message=describe_missing(missing))
        log.info("server.started", url=f"http://{shown_ip}:{port}", project=project.config.name,
                 config=str(project.config.path), state_dir=str(project.state_dir),
                 pid=os.getpid(), version=__version__, engine=host.engine.owner,
                 admin_api=token is not None, isolation_weakened=bool(missing),
                 drain_timeout_s=drain_timeout_s, instances=host.engine.store.count_by_status())
        if received:
            server.stop()       # stopped while starting: drain at once
        with private_listener(host_ip, port):   # tenant code never reaches the admin API
            summary = await server.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    stopped_by = received[0] if received else None
    log.info("server.stopped", signal=signal.Signals(stopped_by).name if stopped_by else None,
             **summary)
    return 130 if stopped_by == signal.SIGINT else 0


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP, short_help=COMMANDS["serve"])(serve)

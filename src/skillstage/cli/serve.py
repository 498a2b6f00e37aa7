"""`skillstage serve`: the REST API, the dashboard and /metrics, on uvicorn."""

from __future__ import annotations

import ipaddress
import os
import socket

import click

from skillstage.cli.context import CliContext
from skillstage.errors import UsageError

DEFAULT_PORT = 8750


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="Port."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes. They share nothing but the store, so several (or several servers "
    "behind a load balancer, on one PostgreSQL store) act as one.",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Take requests without a token, each acting as you with every permission. Only on a "
    "loopback address (127.0.0.1, ::1), for trying the server out.",
)
@click.option(
    "--max-requests",
    type=click.IntRange(1),
    help="Stop after this many requests (each worker; a supervisor or load balancer restarts "
    "it). Default: no limit.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="uvicorn's log level (requests are logged at info).",
)
@click.pass_obj
def serve(
    obj: CliContext,
    host: str,
    port: int,
    workers: int,
    insecure_no_auth: bool,
    max_requests: int | None,
    log_level: str,
) -> int:
    """Serve the project over HTTP until Ctrl-C: the JSON API under /v1 (its OpenAPI document at
    /v1/openapi.json), the dashboard at / and Prometheus metrics at /metrics.

    Every request needs a token (`skillstage token create`), sent as `Authorization: Bearer
    TOKEN`; its role decides what it may do, and its name is recorded as who did it.

    Agent hosts on other machines post their execution records to /v1/executions and ask
    /v1/resolve/NAME which version serves them, without sharing a disk with the store.
    """
    if insecure_no_auth and not is_loopback(host):
        raise UsageError(
            f"--insecure-no-auth listens on {host}, which other machines can reach: anyone "
            "there could promote and roll back",
            hint="use --host 127.0.0.1, or create tokens with `skillstage token create`",
        )
    project = obj.project()
    import uvicorn

    from skillstage.server import app as server_app

    # The worker processes build their app from the environment (`uvicorn --factory`).
    if project.source is not None:
        os.environ["SKILLSTAGE_CONFIG"] = str(project.source)
    os.environ[server_app.NO_AUTH_ENV] = "1" if insecure_no_auth else ""
    os.environ[server_app.ROOT_ENV] = str(project.root)
    server_app.create_app(project, auth=not insecure_no_auth)  # a bad setting fails here, once
    if insecure_no_auth:
        click.echo(
            "warning: --insecure-no-auth: every request acts as you, with every permission",
            err=True,
        )
    click.echo(f"skillstage serving {project.root} on http://{_shown(host)}:{port}", err=True)
    uvicorn.run(
        f"{server_app.__name__}:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        limit_max_requests=max_requests,
        # Long polls still open at Ctrl-C are cut after this, not waited out.
        timeout_graceful_shutdown=3,
        proxy_headers=False,
        server_header=False,
    )
    return 0


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host and host[0] != "[" else host or socket.gethostname()

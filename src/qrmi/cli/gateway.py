"""``qrmi gateway``: serve QRMI over HTTP for jobs (credentials stay on this host).

Only Typer is imported here, so that ``qrmi --help`` stays fast; the server's modules (FastAPI,
uvicorn) are imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qrmi.cli._common import cli_errors

__all__ = ["gateway"]

_DEFAULT_STORE = "/var/lib/qrmi-gateway/gateway.db"


def gateway(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="qrmi_config.json with the QPUs and their credentials.",
            dir_okay=False,
        ),
    ],
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to listen on (0.0.0.0:PORT for the cluster network).")
    ] = "127.0.0.1:8765",
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM); enables HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    store: Annotated[
        str,
        typer.Option(
            help="Store of jobs, token hashes, leases and tasks: a SQLite file, or a "
            "postgresql://user@host:port/dbname URL that gateway replicas share (password in "
            "~/.pgpass or PGPASSWORD, not on the command line).",
            envvar="QRMI_GATEWAY_STORE",
        ),
    ] = _DEFAULT_STORE,
    munge_socket: Annotated[
        str | None, typer.Option(help="munged socket (default: /run/munge/munge.socket.2).")
    ] = None,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help="File of admin token hashes (sha256:<hex> per line) for /v1/admin."),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 above).", min=1024)
    ] = 16 * 1024 * 1024,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a client may pause while sending a body (408).", min=0.1)
    ] = 30.0,
    header_timeout: Annotated[
        float,
        typer.Option(help="Seconds a connection may take to send a request's headers.", min=0.1),
    ] = 10.0,
    limit_concurrency: Annotated[
        int, typer.Option(help="Connections and requests at once before answering 503.", min=8)
    ] = 1024,
    token_grace: Annotated[
        float, typer.Option(help="Seconds a job token outlives the job's time limit.", min=0)
    ] = 300.0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    workers: Annotated[
        int,
        typer.Option(
            help="Gateway processes sharing the address and the store (use the cores).",
            min=1,
            max=64,
        ),
    ] = 1,
) -> None:
    """Serve QRMI over HTTP/JSON to jobs holding a job token (API at /docs, /openapi.json)."""
    from qrmi.gateway.server import GatewayOptions, parse_listen, serve

    with cli_errors():
        host, port = parse_listen(listen)
        serve(
            GatewayOptions(
                config=config,
                store=store,
                host=host,
                port=port,
                tls_cert=tls_cert,
                tls_key=tls_key,
                munge_socket=munge_socket,
                admin_token_file=admin_token_file,
                max_body_bytes=max_body_bytes,
                body_timeout=body_timeout,
                header_timeout=header_timeout,
                limit_concurrency=limit_concurrency,
                token_grace_seconds=token_grace,
                log_level=log_level,
                workers=workers,
            )
        )

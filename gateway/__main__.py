"""`gateway run | check | routes | schema`: the command line.

Configuration errors are printed one per line, no traceback."""

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from asgi_gateway.config.errors import ConfigError
from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.routes import MAX_WEBSOCKET_MESSAGE_BYTES, RouteFile
from asgi_gateway.config.schema import route_file_schema
from asgi_gateway.config.settings import ENV_PREFIX, PROMETHEUS_MULTIPROC_DIR, Settings, load_settings
from asgi_gateway.gateway.logs import log_config
from asgi_gateway.gateway.wsserver import GracefulWebSocketProtocol

EXIT_INVALID = 1  # `gateway check`: the files are wrong
EXIT_CONFIG = 2  # `gateway run`: cannot start with this configuration


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="An ASGI gateway in front of HTTP upstreams.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve the gateway (settings from GATEWAY_* variables and .env)")
    run.add_argument("--routes", type=Path, help="route file (GATEWAY_ROUTES_FILE)")
    run.add_argument("--host", help="listen address (GATEWAY_HOST)")
    run.add_argument("--port", type=int, help="listen port (GATEWAY_PORT)")
    run.add_argument("--workers", type=int, help="worker processes (GATEWAY_WORKERS)")
    run.add_argument("--server", choices=["uvicorn", "granian"], help="ASGI server (GATEWAY_SERVER)")
    run.add_argument("--log-level", help="critical, error, warning, info or debug (GATEWAY_LOG_LEVEL)")

    check = commands.add_parser("check", help="validate route files")
    check.add_argument("files", nargs="+", type=Path)

    show = commands.add_parser("routes", help="print the routes a file compiles to")
    show.add_argument("file", type=Path)

    commands.add_parser("schema", help="print the JSON Schema of route files")

    args = parser.parse_args(argv)
    if args.command == "schema":
        print(json.dumps(route_file_schema(), indent=2))  # noqa: T201
        return 0
    if args.command == "check":
        return check_files(args.files)
    if args.command == "routes":
        return show_routes(args.file)
    overrides = {"routes_file": args.routes, "host": args.host, "port": args.port, "workers": args.workers}
    overrides |= {"server": args.server, "log_level": args.log_level}
    return run_server(overrides)


def check_files(files: Sequence[Path]) -> int:
    failed = False
    for path in files:
        try:
            routes = load_route_file(path)
        except ConfigError as exc:
            failed = True
            for issue in exc.issues:
                print(issue, file=sys.stderr)  # noqa: T201
        else:
            print(f"{path}: ok, {len(routes.upstreams)} upstreams, {len(routes.routes)} routes")  # noqa: T201
    return EXIT_INVALID if failed else 0


def show_routes(path: Path) -> int:
    try:
        routes = load_route_file(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return EXIT_INVALID
    print(format_routes(routes))  # noqa: T201
    return 0


def format_routes(routes: RouteFile) -> str:
    rows = [("METHODS", "HOST", "PATH", "UPSTREAM", "REWRITE")]
    for route in routes.routes:
        upstream = route.upstream or ("fanout:" + ",".join(route.fanout.calls) if route.fanout else "-")
        rows.append((",".join(route.methods), route.host or "*", route.path, upstream, route.rewrite or "-"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def run_server(overrides: dict[str, object]) -> int:
    # Workers are separate processes that read the environment: command-line values travel through it.
    for field, value in overrides.items():
        if value is not None:
            os.environ[ENV_PREFIX + field.upper()] = str(value)
    try:
        settings = load_settings()
        load_route_file(settings.routes_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    with shared_metrics_directory(settings.workers):
        serve(settings)
    return 0


@contextmanager
def shared_metrics_directory(workers: int) -> Iterator[None]:
    """Several workers count into files of one directory, which every scrape adds up (prometheus-client's
    multiprocess mode). An operator's own PROMETHEUS_MULTIPROC_DIR is used as it is; ours is removed after."""
    if not os.environ.get(PROMETHEUS_MULTIPROC_DIR):
        os.environ.pop(PROMETHEUS_MULTIPROC_DIR, None)  # set but empty, prometheus-client would write to the cwd
    if workers == 1 or PROMETHEUS_MULTIPROC_DIR in os.environ:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as directory:
        os.environ[PROMETHEUS_MULTIPROC_DIR] = directory  # before any worker imports prometheus_client
        try:
            yield
        finally:
            del os.environ[PROMETHEUS_MULTIPROC_DIR]


def serve(settings: Settings) -> None:
    if settings.server == "granian":
        try:
            from granian import Granian
            from granian.constants import Interfaces
            from granian.log import LogLevels
        except ImportError:
            sys.exit("granian is not installed: pip install 'asgi-gateway[granian]'")
        Granian(
            "asgi_gateway.gateway.app:create_app",
            factory=True,
            interface=Interfaces.ASGI,
            address=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=LogLevels(settings.log_level),
            workers_kill_timeout=settings.shutdown_grace,
        ).serve()
        return
    uvicorn.run(
        "asgi_gateway.gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        ws=GracefulWebSocketProtocol,
        ws_max_size=MAX_WEBSOCKET_MESSAGE_BYTES,  # a route's max_message_bytes closes sessions below it
        lifespan="on",
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        access_log=False,  # the gateway writes its own, with route, upstream and trace ids
        proxy_headers=False,  # the app applies X-Forwarded-* itself, after checking the peer (gateway/app.py)
        server_header=False,
        date_header=False,  # the gateway keeps the upstream's Date and adds one only where it is missing
        timeout_graceful_shutdown=settings.shutdown_grace,
    )


if __name__ == "__main__":
    sys.exit(main())

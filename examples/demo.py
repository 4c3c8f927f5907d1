"""`make run`: the demo upstreams on their ports, and the gateway in front of them with examples/routes.yaml.

Ports come from USERS_PORT (9001), ORDERS_PORT (9002) and GATEWAY_PORT (8080). The upstreams' sockets are
bound here before anything starts, so the gateway never finds them missing.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def listening_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def serve_upstream(app: str, sock: socket.socket) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", f"upstreams:{app}", "--app-dir", str(HERE), "--fd", str(sock.fileno())]
    return subprocess.Popen([*command, "--log-level", "warning"], pass_fds=[sock.fileno()])


def main() -> int:
    env = {"GATEWAY_ROUTES_FILE": str(HERE / "routes.yaml"), **os.environ}
    env.setdefault("USERS_PORT", "9001")
    env.setdefault("ORDERS_PORT", "9002")
    sockets = {name: listening_socket(int(env[f"{name.upper()}_PORT"])) for name in ("users", "orders")}
    for name, sock in sockets.items():  # port 0 picks a free one; the route file gets the real one
        env[f"{name.upper()}_PORT"] = str(sock.getsockname()[1])
    upstreams = [serve_upstream(name, sock) for name, sock in sockets.items()]
    print(f"demo upstreams: users on :{env['USERS_PORT']}, orders on :{env['ORDERS_PORT']}", flush=True)
    gateway = subprocess.Popen([sys.executable, "-m", "asgi_gateway.gateway", "run"], env=env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the whole demo, not just this script
    try:
        return gateway.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for process in [gateway, *upstreams]:
            process.terminate()
        for process in [gateway, *upstreams]:
            process.wait()


if __name__ == "__main__":
    sys.exit(main())

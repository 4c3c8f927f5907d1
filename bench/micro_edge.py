"""CPU per request of the edge policies: `python bench/micro_edge.py [requests]` (Redis at BENCH_REDIS_URL).

The gateway runs in this process and is called as an ASGI app, one request at a time; the 1 KB origin (bench/
pure_asgi.py under uvicorn) and Redis run in processes of their own, so this process's CPU time is the
gateway's (and the small driver's, the same for every route). Three routes take the same document: a plain
proxied miss, a miss behind a verified JWT (ES256, key set from a JWKS the origin serves), and a miss behind a
rate limit kept in Redis. The routes take turns over several rounds; the median CPU per request of each is
printed with its ratio to the plain miss (target <= 1.15x), and for the rate-limited route the Redis script
calls per request (from the server's command counts, warm-up included; anyone else's scripts on the same Redis
add to them).
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from uuid import uuid4

import jwt
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from harness import cpu_per_request, free_port, get_scope
from jwt.algorithms import ECAlgorithm

from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.settings import Settings
from asgi_gateway.gateway.app import Gateway

BENCH = Path(__file__).resolve().parent

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ROUNDS = 5
WARM = 200
JWKS_APP = """
import json
from pure_asgi import app as documents
JWKS = json.dumps({"keys": [%s]}).encode()
async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/jwks.json":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": JWKS})
        return
    await documents(scope, receive, send)
"""


def routes_yaml(origin: str) -> str:
    jwt_auth = f'{{jwt: {{jwks_url: "{origin}/jwks.json", issuer: bench, audience: gateway, algorithms: [ES256]}}}}'
    return f"""
upstreams:
  origin: {{url: "{origin}"}}
routes:
  - {{path: /1k, methods: [GET], upstream: origin}}
  - {{path: /jwt/1k, methods: [GET], upstream: origin, rewrite: /1k, auth: {jwt_auth}}}
  - {{path: /limited/1k, methods: [GET], upstream: origin, rewrite: /1k,
      rate_limit: {{requests: 1000000000, per: 1, key: ip}}}}
"""


async def measure(origin: str, key: ec.EllipticCurvePrivateKey, count: int, prefix: str) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "routes.yaml"
        path.write_text(routes_yaml(origin))
        settings = Settings(
            routes_file=path,
            redis_url=REDIS_URL,
            access_log="off",
            watch_routes=False,
            rate_limit={"redis_prefix": prefix},
        )
        app = Gateway(settings, load_route_file(path))
        claims = {"iss": "bench", "aud": "gateway", "sub": "u-1", "exp": int(time.time()) + 3600}
        token = jwt.encode(claims, key, "ES256", headers={"kid": "bench"})
        routes = [
            ("proxied miss", "/1k", []),
            ("JWT-verified miss (ES256)", "/jwt/1k", [(b"authorization", f"Bearer {token}".encode())]),
            ("Redis rate-limited miss", "/limited/1k", []),
        ]
        results: dict[str, list[float]] = {name: [] for name, _, _ in routes}
        counter = redis.Redis.from_url(REDIS_URL)
        script_calls = 0
        async with app.running():
            for _ in range(ROUNDS):
                for name, route, headers in routes:
                    before = script_calls_so_far(counter)
                    results[name].append(
                        await cpu_per_request(
                            app, partial(get_scope, route, [(b"host", b"gw"), *headers]), count, warm=WARM
                        )
                    )
                    if route == "/limited/1k":
                        script_calls += script_calls_so_far(counter) - before
        counter.close()
    base = statistics.median(results["proxied miss"])
    for name, rounds in results.items():
        seconds = statistics.median(rounds)
        spread = f"{min(rounds) * 1e6:.0f}-{max(rounds) * 1e6:.0f}"
        print(f"{seconds * 1e6:8.1f} µs CPU/req  {seconds / base:5.2f}x  {name} (rounds {spread} µs)")
    print(f"{script_calls / (ROUNDS * (count + WARM)):8.4f} Redis script calls per rate-limited request")


def script_calls_so_far(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench", "alg": "ES256", "use": "sig"}
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "origin.py").write_text(JWKS_APP % json.dumps(jwk))
        env = {**os.environ, "PYTHONPATH": f"{workdir}:{BENCH}"}
        origin = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "origin:app", "--port", str(port), "--log-level", "warning"], env=env
        )
        prefix = f"bench:{uuid4().hex}:"
        try:
            time.sleep(1.5)  # uvicorn binds within a second; the warm-up requests would fail loudly otherwise
            asyncio.run(measure(f"http://127.0.0.1:{port}", key, count, prefix))
        finally:
            origin.terminate()
            origin.wait()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


if __name__ == "__main__":
    main()

"""The dashboard as a browser gets it: the gateway under uvicorn on loopback, Debian's Chromium headless.

The screenshot lands in tests/artifacts/ (git-ignored). `make test` installs Chromium when it is missing.
"""

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import GatewayFactory
from tests.gateway.test_dashboard import ROUTES, TOKEN, UPSTREAMS, Tables, rows_by_first_cell
from tests.servers import serve

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1000",
)


async def chromium(url: str, profile: Path, *options: str) -> str:
    """Chromium's stdout for one page: the DOM after load with --dump-dom."""
    binary = shutil.which("chromium")
    assert binary is not None, "chromium is missing: `make test` installs Debian's package"
    process = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *options,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(45):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    return out.decode()


async def test_a_browser_with_the_token_sees_the_tables(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    gateway = make_gateway(ROUTES, upstreams=UPSTREAMS, admin_token=TOKEN)
    async with serve(gateway, lifespan="on") as base:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(4):
                await client.get("/api/users/1", headers={"X-User-Id": "u-2"})
            await client.get("/broken")
            await client.get("/api/both/7")
            refused = await client.get("/_gateway/ui")
        page = base.replace("http://", f"http://admin:{TOKEN}@") + "/_gateway/ui"
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "dashboard.png"
        screenshot.unlink(missing_ok=True)
        await chromium(page, tmp_path / "profile", f"--screenshot={screenshot}")  # the first view: rates since start
        dom = await chromium(page, tmp_path / "profile", "--dump-dom")
        without_token = await chromium(base + "/_gateway/ui", tmp_path / "profile-2", "--dump-dom")

    assert (refused.status_code, refused.headers["www-authenticate"]) == (401, 'Basic realm="gateway", charset="UTF-8"')
    assert "<table" not in without_token  # Chromium headless shows nothing where it would ask for credentials

    assert "<title>Gateway</title>" in dom
    tables = Tables(dom).sections
    assert set(tables) == {"config", "routes", "upstreams", "flags"}
    routes = rows_by_first_cell(dom, "routes")
    assert list(routes) == ["Route", "user", "<b>broken</b>", "/api/both/{id}"]
    assert (routes["user"][4], routes["user"][7]) == ("4", "75% of 4")
    assert routes["<b>broken</b>"][6] == "100.0%"
    assert routes["/api/both/{id}"][4] == "1"
    upstreams = rows_by_first_cell(dom, "upstreams")
    assert upstreams["users"][1] == "unchecked http://users.internal"
    assert rows_by_first_cell(dom, "flags")["pricing"][4] == "b 4"
    assert rows_by_first_cell(dom, "config")["Last reload"][1] == "none since start"
    assert screenshot.read_bytes().startswith(b"\x89PNG")

"""The wheel as an app installs it: everything under one root package, so an app keeps its own `config` and
`middleware` modules and still uses the libraries."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

from tests.test_packaging import dockerfile_instructions

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("gateway", "middleware", "flags", "config")

# An app of its own, with modules named like the repository's folders.
APP = {
    "config.py": 'GREETING = "hello from the app"\n',
    "middleware/__init__.py": textwrap.dedent(
        '''
        """The app's own middleware: stamps every answer."""


        class Stamp:
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                async def stamped(message):
                    if message["type"] == "http.response.start":
                        message["headers"] = [*message.get("headers", []), (b"x-stamp", b"own middleware")]
                    await send(message)

                await self.app(scope, receive, stamped)
        '''
    ),
    "main.py": textwrap.dedent(
        """
        import asyncio
        import json

        import httpx
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        import asgi_gateway.middleware.conditional
        import config
        import middleware
        from asgi_gateway.flags import EvaluationContext, Registry, Resolver
        from asgi_gateway.middleware.conditional import ConditionalMiddleware

        registry = Registry()
        SHOUT = registry.bool("shout", default=True)
        resolver = Resolver(registry)


        async def greeting(request):
            shout = resolver.resolve(SHOUT, EvaluationContext("user-1"))
            return PlainTextResponse(config.GREETING.upper() if shout else config.GREETING)


        app = Starlette(
            routes=[Route("/", greeting)],
            middleware=[Middleware(middleware.Stamp), Middleware(ConditionalMiddleware, generate_etag=True)],
        )


        async def main():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                first = await client.get("/")
                again = await client.get("/", headers={"If-None-Match": first.headers["etag"]})
            print(json.dumps({
                "first": [first.status_code, first.text, first.headers["x-stamp"]],
                "again": [again.status_code, again.headers["x-stamp"]],
                "modules": [config.__file__, middleware.__file__, asgi_gateway.middleware.conditional.__file__],
            }))


        asyncio.run(main())
        """
    ),
}


def build_wheel(tmp_path: Path) -> Path:
    """From what the Dockerfile copies into its work directory, offline: this environment's setuptools."""
    source = tmp_path / "source"
    for instruction, arguments in dockerfile_instructions():
        *names, destination = arguments.split()
        if instruction != "COPY" or not destination.startswith("./"):
            continue
        for name in names:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, source / destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (source / destination).mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / name, source / destination)
    command = ["-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([sys.executable, *command, "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True)
    [wheel] = (tmp_path / "dist").glob("asgi_gateway-*.whl")
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; the dependencies are seen from this environment through a .pth file (whose
    own .pth files, the editable install among them, are not run)."""
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site_packages, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = ["-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)]
    subprocess.run([sys.executable, *install], check=True)
    return environment


def test_an_app_with_its_own_config_and_middleware_uses_the_installed_libraries(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {"asgi_gateway", "asgi_gateway-0.1.0.dist-info"}
    assert "asgi_gateway/__init__.py" not in names
    shipped = {name.removeprefix("asgi_gateway/") for name in names if name.startswith("asgi_gateway/")}
    tracked = subprocess.run(["git", "ls-files", *FOLDERS], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(tracked.stdout.split()) <= shipped  # every module, py.typed and config/routes.schema.json

    environment = fresh_venv(tmp_path, wheel)
    app = tmp_path / "app"
    for name, text in APP.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    environment_variables = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    result = subprocess.run(
        [str(environment / "bin" / "python"), "main.py"],
        cwd=app,
        env=environment_variables,
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(result.stdout)
    assert answer["first"] == [200, "HELLO FROM THE APP", "own middleware"]
    assert answer["again"] == [304, "own middleware"]
    own_config, own_middleware, library = (Path(name) for name in answer["modules"])
    assert (own_config, own_middleware) == (app / "config.py", app / "middleware" / "__init__.py")
    assert library.is_relative_to(environment)

    scripts = subprocess.run(
        [str(environment / "bin" / "gateway"), "--help"], env=environment_variables, capture_output=True, text=True
    )
    assert (scripts.returncode, scripts.stdout.split()[:2]) == (0, ["usage:", "gateway"])

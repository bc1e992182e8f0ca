"""The Helm chart renders what the issue asks for, and refuses values that would deploy something broken."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.chart import CHART, ROOT, find, render_error
from tests.deploy.conftest import Render

GPU_KEDA = "ci/gpu-keda-values.yaml"


def _workload_pods(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    pods = [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objs if o["kind"] == "Deployment"]
    pods += [
        (o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] == "CronJob"
    ]
    return pods


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ---------------------------------------------------------------- one source of truth


def test_prometheus_rule_is_exactly_the_source_rule_files(render: Render) -> None:
    sources = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
    assert sources, "deploy/prometheus has no rule files"
    expected: list[Any] = []
    for path in sources:
        expected.extend(yaml.safe_load(path.read_text())["groups"])
    rule = find(render(), "PrometheusRule")
    assert rule["spec"]["groups"] == expected


def test_dashboard_configmap_is_exactly_the_source_dashboards(render: Render) -> None:
    sources = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
    assert sources, "deploy/grafana has no dashboards"
    cm = find(render(), "ConfigMap", "-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(cm["data"]) == [p.name for p in sources]
    for path in sources:
        assert cm["data"][path.name] == path.read_text().rstrip("\n")
        json.loads(cm["data"][path.name])


def test_chart_files_are_links_to_the_sources_not_copies() -> None:
    for name in ("prometheus", "grafana"):
        link = CHART / "files" / name
        assert link.is_symlink(), f"{link} must be a symlink to deploy/{name}"
        assert link.resolve() == (ROOT / "deploy" / name).resolve()


# ---------------------------------------------------------------- config matches the daemon's schema


@pytest.mark.parametrize("values", [(), (GPU_KEDA,)], ids=["default", "gpu-keda"])
def test_configmap_config_loads_with_the_daemon_settings(
    render: Render, values: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Load the rendered config as a serving pod would: file + env from the pod spec, Secret files mounted."""
    from streamer.config import load_settings

    objs = render(*values)
    text = find(objs, "ConfigMap", "-config")["data"]["config.yaml"]
    container = find(objs, "Deployment", "sentiwire")["spec"]["template"]["spec"]["containers"][0]
    # Mounted Secrets become files under tmp_path; secretKeyRef env gets a placeholder value.
    for mount in container["volumeMounts"]:
        if mount["name"] == "kafka-tls":
            local = tmp_path / mount["mountPath"].lstrip("/")
            local.mkdir(parents=True)
            (local / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
            text = text.replace(mount["mountPath"], str(local))
    for name in [k for k in os.environ if k.startswith("SENTIWIRE_")]:
        monkeypatch.delenv(name)
    for name, value in _env(container).items():
        monkeypatch.setenv(name, value if isinstance(value, str) else "from-secret")
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(text)
    settings = load_settings(cfg_file)
    assert str(settings.model.path) == "/models/current"
    assert settings.http.port == container["ports"][0]["containerPort"]
    # The serving pods never run the spike detector themselves; the alerter does.
    assert settings.alerts.enabled is False
    assert yaml.safe_load(text)["alerts"]["enabled"] is True
    if values:
        assert settings.model.device == "cuda"
        assert settings.kafka.security_protocol == "SASL_SSL"
        assert settings.kafka.sasl_password is not None


def test_termination_grace_exceeds_daemon_shutdown_timeout(render: Render, helm_bin: str) -> None:
    objs = render()
    cfg = yaml.safe_load(find(objs, "ConfigMap", "-config")["data"]["config.yaml"])
    for name, pod in _workload_pods(objs):
        if "retrain" not in name:
            assert pod["terminationGracePeriodSeconds"] > cfg["shutdown_timeout_s"], name
    err = render_error(helm_bin, "terminationGracePeriodSeconds=30", "config.shutdown_timeout_s=30")
    assert "terminationGracePeriodSeconds (30) must be greater than config.shutdown_timeout_s (30)" in err


# ---------------------------------------------------------------- replicas never above partitions


def test_keda_max_replicas_above_partitions_fails_rendering(helm_bin: str) -> None:
    err = render_error(
        helm_bin, "autoscaling.keda.enabled=true", "autoscaling.keda.maxReplicas=13", "kafka.partitions=12"
    )
    assert "autoscaling.keda.maxReplicas (13) is above kafka.partitions (12)" in err


def test_hpa_and_fixed_replicas_above_partitions_fail_rendering(helm_bin: str) -> None:
    err = render_error(
        helm_bin, "autoscaling.hpa.enabled=true", "autoscaling.hpa.maxReplicas=7", "kafka.partitions=6"
    )
    assert "autoscaling.hpa.maxReplicas (7) is above kafka.partitions (6)" in err
    err = render_error(helm_bin, "replicaCount=4", "kafka.partitions=3")
    assert "replicaCount (4) is above kafka.partitions (3)" in err


def test_keda_scales_on_lag_of_the_daemon_group_up_to_partitions(render: Render) -> None:
    objs = render(GPU_KEDA)
    so = find(objs, "ScaledObject")
    deploy = find(objs, "Deployment", "sentiwire")
    values = yaml.safe_load((CHART / GPU_KEDA).read_text())
    assert so["spec"]["maxReplicaCount"] == values["kafka"]["partitions"]
    assert so["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert "replicas" not in deploy["spec"], "KEDA owns the replica count"
    trig = so["spec"]["triggers"][0]
    assert trig["type"] == "kafka"
    assert trig["metadata"]["consumerGroup"] == "sentiwire"
    assert trig["metadata"]["allowIdleConsumers"] == "false"
    assert trig["metadata"]["sasl"] == "scram_sha512"
    auth = find(objs, "TriggerAuthentication")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca"}
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]


def test_hpa_is_rendered_instead_of_keda(render: Render) -> None:
    objs = render(sets=["autoscaling.hpa.enabled=true", "autoscaling.hpa.maxReplicas=6"])
    hpa = find(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 6
    assert "replicas" not in find(objs, "Deployment", "sentiwire")["spec"]
    assert not [o for o in objs if o["kind"] == "ScaledObject"]


# ---------------------------------------------------------------- pods


def test_every_pod_is_non_root_with_read_only_root_fs(render: Render) -> None:
    for values in [(), (GPU_KEDA,)]:
        for name, pod in _workload_pods(render(*values)):
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] != 0, name
            for c in pod["containers"] + pod.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
                assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
                assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
                # A writable /tmp is the only scratch space.
                assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), (name, c["name"])


def test_serving_probes_and_ports(render: Render) -> None:
    objs = render()
    for suffix in ("sentiwire", "-alerter"):
        c = find(objs, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["ports"][0]["containerPort"] == 8080
    svc = find(objs, "Service", "sentiwire")
    assert svc["spec"]["ports"][0]["name"] == "metrics"
    sm = find(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0] == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "15s",
        "scrapeTimeout": "10s",
    }


def test_gpu_is_requested_only_when_enabled(render: Render) -> None:
    cpu = find(render(), "Deployment", "sentiwire")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"].get("limits", {})
    assert cpu["containers"][0]["image"].endswith("-cpu")
    assert "tolerations" not in cpu
    objs = render(GPU_KEDA)
    gpu = find(objs, "Deployment", "sentiwire")["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["containers"][0]["image"].endswith("-gpu")
    assert gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    cfg = yaml.safe_load(find(objs, "ConfigMap", "-config")["data"]["config.yaml"])
    assert cfg["model"]["device"] == "cuda"
    # The alerter never takes a GPU.
    alerter = find(objs, "Deployment", "-alerter")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in alerter["resources"].get("limits", {})


def test_kafka_secrets_come_from_secret_refs_never_the_configmap(render: Render) -> None:
    objs = render(GPU_KEDA)
    assert "password" not in find(objs, "ConfigMap", "-config")["data"]["config.yaml"]
    for name, pod in _workload_pods(objs):
        env = _env(pod["containers"][0])
        assert env["SENTIWIRE_KAFKA__SASL_PASSWORD"] == {
            "secretKeyRef": {"name": "kafka-sasl", "key": "password"}
        }, name
        assert {"name": "kafka-tls", "secret": {"secretName": "kafka-ca", "defaultMode": 0o440}} in pod[
            "volumes"
        ], name


def test_alerter_is_one_replica_and_serving_never_runs_the_detector(render: Render) -> None:
    objs = render()
    alerter = find(objs, "Deployment", "-alerter")
    assert alerter["spec"]["replicas"] == 1
    assert alerter["spec"]["strategy"] == {"type": "Recreate"}
    assert alerter["spec"]["template"]["spec"]["containers"][0]["args"][0] == "alert"
    serving = find(objs, "Deployment", "sentiwire")["spec"]["template"]["spec"]["containers"][0]
    assert serving["args"][0] == "serve"
    assert _env(serving)["SENTIWIRE_ALERTS__ENABLED"] == "false"
    off = render(sets=["config.alerts.enabled=false"])
    assert not [o for o in off if o["metadata"]["name"].endswith("-alerter")]


def test_model_volume_pvc_or_init_container(render: Render, helm_bin: str) -> None:
    objs = render()
    pvc = find(objs, "PersistentVolumeClaim")
    pod = find(objs, "Deployment", "sentiwire")["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "models")
    assert vol["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"], "readOnly": True}
    cron = find(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert (
        next(v for v in cron["volumes"] if v["name"] == "models")["persistentVolumeClaim"]["claimName"]
        == pvc["metadata"]["name"]
    )
    init = render(sets=["model.source=initContainer", "retrain.enabled=false"])
    pod = find(init, "Deployment", "sentiwire")["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["volumeMounts"][0]["name"] == "models"
    assert next(v for v in pod["volumes"] if v["name"] == "models") == {"name": "models", "emptyDir": {}}
    assert not [o for o in init if o["kind"] in ("PersistentVolumeClaim", "CronJob")]
    assert "retrain.enabled needs model.source=pvc" in render_error(helm_bin, "model.source=initContainer")


def test_retrain_cronjob_runs_sentiwire_retrain_on_the_served_path(render: Render) -> None:
    objs = render(GPU_KEDA)
    cron = find(objs, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    c = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"].startswith("ghcr.io/sentiwire/sentiwire-train:")
    args = c["args"]
    assert args[0] == "retrain"
    assert args[args.index("--served") + 1] == "/models/current"
    assert args[args.index("--data") + 1] == "sentiment=/data/new/sentiment.csv"
    assert args[args.index("--corrections-topic") + 1] == "label-corrections"
    assert args[args.index("--variant") + 1] == "fp32"  # scored as the daemons serve
    assert not next(m for m in c["volumeMounts"] if m["name"] == "models").get("readOnly", False)
    int8 = render(GPU_KEDA, sets=["config.model.variant=int8"])
    args8 = find(int8, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args8[args8.index("--variant") + 1] == "int8"


def test_pdb_covers_serving_pods(render: Render) -> None:
    objs = render()
    pdb = find(objs, "PodDisruptionBudget")
    labels = find(objs, "Deployment", "sentiwire")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# ---------------------------------------------------------------- the checker itself catches mistakes


def test_deploy_check_validates_both_value_sets(render: Render, deploy_check: ModuleType) -> None:
    for values in [(), (GPU_KEDA,)]:
        objs = render(*values)
        for obj in objs:
            deploy_check.validate_object(obj)
        deploy_check.check_references(objs, deploy_check.VALUE_SETS["gpu-keda"].existing)


def test_deploy_check_rejects_broken_objects(render: Render, deploy_check: ModuleType) -> None:
    objs = render()
    deploy = find(objs, "Deployment", "sentiwire")
    bad = json.loads(json.dumps(deploy))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["prot"] = 1
    with pytest.raises(deploy_check.CheckError, match="prot"):
        deploy_check.validate_object(bad)
    bad = json.loads(json.dumps(deploy))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(deploy_check.CheckError, match="replicas"):
        deploy_check.validate_object(bad)
    rule = json.loads(json.dumps(find(objs, "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    with pytest.raises(deploy_check.CheckError, match="PrometheusRule"):
        deploy_check.validate_object(rule)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(deploy_check.CheckError, match="Widget"):
        deploy_check.validate_object(unknown)
    svc = json.loads(json.dumps(find(objs, "Service", "sentiwire")))
    svc["spec"]["selector"]["app.kubernetes.io/component"] = "nothing"
    others = [o for o in objs if o is not find(objs, "Service", "sentiwire")]
    with pytest.raises(deploy_check.CheckError, match="matches no Deployment"):
        deploy_check.check_references([*others, svc])


@pytest.mark.prometheus
def test_promtool_rejects_a_broken_rendered_rule(render: Render, deploy_check: ModuleType) -> None:
    groups = deploy_check.rule_groups(render())
    deploy_check.promtool_check(groups, deploy_check.find_tool("promtool"))
    broken = json.loads(json.dumps(groups))
    broken[0]["rules"][0]["expr"] = "sum(rate(x[5m]"
    with pytest.raises(deploy_check.CheckError, match="promtool"):
        deploy_check.promtool_check(broken, deploy_check.find_tool("promtool"))


def test_container_args_parse_with_the_real_cli(render: Render) -> None:
    """Every command the chart runs (serve, alert, retrain) is accepted by `sentiwire` as built here."""
    import typer.main

    from sentiwire.cli import _register, app

    _register()
    root = typer.main.get_command(app)
    seen = set()
    for values in [(), (GPU_KEDA,)]:
        for name, pod in _workload_pods(render(*values)):
            args = pod["containers"][0]["args"]
            sub = root.get_command(root.make_context("sentiwire", list(args)), args[0])  # type: ignore[attr-defined]
            assert sub is not None, f"{name}: `sentiwire {args[0]}` does not exist"
            ctx = sub.make_context(args[0], list(args[1:]))
            seen.add(args[0])
            if args[0] == "retrain":
                assert str(ctx.params["served"]) == "/models/current"
                assert ctx.params["tolerance"] == 0.01
            else:
                assert str(ctx.params["config"]) == "/etc/sentiwire/config.yaml"
    assert seen == {"serve", "alert", "retrain"}


def test_notes_render_and_name_what_was_installed(helm_bin: str, tmp_path: Path) -> None:
    """helm renders NOTES.txt only on install; render it here through tpl in a copy of the chart."""
    import shutil
    import subprocess

    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)  # symlinked files are copied as files
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "notes-render.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    for values, expect in [
        ((), ["2 replicas", "device cpu", "Deployment/sw-sentiwire-alerter", "CronJob/sw-sentiwire-retrain"]),
        ((GPU_KEDA,), ["scaled by KEDA", "2..12 replicas", "1 x nvidia.com/gpu", "grafana_dashboard=1"]),
    ]:
        cmd = [helm_bin, "template", "sw", str(chart), "--kube-version", "1.37.0"]
        cmd += [a for v in values for a in ("-f", str(chart / v))]
        cmd += ["--show-only", "templates/notes-render.yaml"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        notes = yaml.safe_load(out)["notes"]
        for needle in expect:
            assert needle in notes, (needle, notes)


def test_values_schema_rejects_typos_and_wrong_types(helm_bin: str) -> None:
    err = render_error(helm_bin, "replicas=3")
    assert "additional properties 'replicas' not allowed" in err
    err = render_error(helm_bin, "kafka.partitions=six")
    assert "/kafka/partitions" in err
    err = render_error(helm_bin, "gpu.enabled=true", "gpu.device=rocm")
    assert "/gpu/device" in err
    err = render_error(helm_bin, "retrain.data[0]=new.csv")
    assert "/retrain/data/0" in err

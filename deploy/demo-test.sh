#!/usr/bin/env bash
# The docker-compose demo, run for real (CI runs it after the tests):
#   1. engine: Debian's docker.io, docker-compose and debootstrap where missing
#      (root); uses a running dockerd, or starts one and stops it at the end
#   2. base images, built locally (no registry needed): debian:bookworm-slim's
#      equivalent from debootstrap, and a Rust builder = that + gcc, libc6-dev,
#      ca-certificates, this machine's CA bundle and its own Rust toolchain
#   3. the image: the README's `docker build`, the base images passed through
#      the Dockerfile's RUST_IMAGE / RUNTIME_IMAGE build args
#   4. `docker-compose up -d`: waits for the client's exit code and checks its
#      top-1 label (not the times or the third decimal, which vary)
#   4b. the page (served on the host's loopback) and the parties' web
#      listeners: gRPC-web with web-token's token, CORS, a wrong token refused
#   5. networks: each listener answers only on the network it serves (the
#      client's networks do not reach party 1's peer port, ...), and the
#      client API published on the host classifies with the host's client
#   6. party 1 killed: party 0 turns unhealthy within seconds; party 1 started
#      again: both healthy, and a second client run classifies
#   7. `down -v`
#   8. the daemon it started is stopped
# Each step prints its time, and a summary at the end (also on failure).
#
# Usage: bash deploy/demo-test.sh          (from anywhere; as root, or as a
#        user who can use a running dockerd and has the tools installed)
# Environment:
#   MPCVIT_SKIP_DEMO=1          where no container engine can run here (no
#                               privileges), report that loudly and exit 0
#                               instead of failing. Nothing else skips.
#   MPCVIT_RUST_IMAGE, MPCVIT_RUNTIME_IMAGE
#                               base images to use instead of building them
#                               (e.g. rust:1.95-slim-bookworm and
#                               debian:bookworm-slim where a registry exists)
#   MPCVIT_DEBIAN_MIRROR=URL    debootstrap's mirror (default: apt's own)
#   MPCVIT_REBUILD_BASE=1       rebuild the local base images even where this
#                               engine has them already (from an earlier run)
# It runs compose project `deploy` (the README's default) and brings it down
# with -v first and last: a demo of that name running here is removed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORK="$ROOT/target/demo-test"
mkdir -p "$WORK" 2>/dev/null || WORK="$(mktemp -d)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-deploy}"
# The Dockerfile needs no BuildKit; the legacy builder needs no registry for
# a frontend image either.
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"
COMPOSE_YML=deploy/docker-compose.yml
IMAGE=mpcvit:latest
# The bundled model and sample the compose file classifies, and the label the
# deploy README's expected output shows first.
EXPECTED_TOP1="Ankle boot"
EXPECTED_CLASS=9
# Party 0 must report unhealthy this soon after losing party 1 (the compose
# health timing gives 3 s interval x 2 retries plus the probes' own time).
UNHEALTHY_WITHIN_S=30

# ---------------------------------------------------------------- reporting
T_START=$(date +%s.%N)
STEP="" STEP_T=""
TIMES=()
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
step() {
  end_step
  STEP="$1"
  STEP_T=$(date +%s.%N)
  printf '\n== %s   [%s]\n' "$STEP" "$(date +%H:%M:%S)"
}
end_step() {
  if [ -n "$STEP" ]; then
    local dt
    dt=$(elapsed "$STEP_T")
    TIMES+=("$(printf '%7s s  %s' "$dt" "$STEP")")
    printf -- '-- %s s: %s\n' "$dt" "$STEP"
    STEP=""
  fi
}
ok() { printf 'ok: %s\n' "$*"; }
die() {
  printf '\ndemo-test.sh: FAILED: %s\n' "$*" >&2
  exit 1
}
banner() {
  printf '\n%s\n' "########################################################################" >&2
  printf '# %s\n' "$@" >&2
  printf '%s\n\n' "########################################################################" >&2
}

# ---------------------------------------------------------------- clean-up
DOCKERD_PID=""
ROOTFS=""
COMPOSE=()
UP=0
SKIPPED=0
cleanup() {
  local rc=$?
  set +e
  [ -z "$ROOTFS" ] || rm -rf "$ROOTFS"
  if [ "$rc" != 0 ] && [ "$UP" = 1 ]; then
    echo "--- last logs of every service (the run failed):" >&2
    "${COMPOSE[@]}" logs --no-color --tail 40 >&2 2>&1
    "${COMPOSE[@]}" ps >&2
  fi
  if [ "$UP" = 1 ]; then
    step "7. docker-compose down -v"
    "${COMPOSE[@]}" down -v --remove-orphans
    end_step
  fi
  if [ -n "$DOCKERD_PID" ]; then
    step "8. stop the dockerd this script started (pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      echo "dockerd did not stop in 60 s: killing it" >&2
      kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
    wait "$DOCKERD_PID" 2>/dev/null
    end_step
  fi
  end_step
  printf '\n== time per step\n'
  printf '%s\n' "${TIMES[@]}"
  printf '%7s s  total\n' "$(elapsed "$T_START")"
  if [ "$SKIPPED" = 1 ]; then
    printf '\ndemo-test.sh: NOT RUN (MPCVIT_SKIP_DEMO=1)\n' >&2
  elif [ "$rc" = 0 ]; then
    printf '\ndemo-test.sh: the compose demo built, classified, survived the party 1 restart and came down\n'
  else
    printf '\ndemo-test.sh: FAILED (exit %s)\n' "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# No engine can run here: fail, unless the caller opted out explicitly.
no_engine() {
  banner "THE COMPOSE DEMO DID NOT RUN: $1" \
         "" \
         "It needs root (or a running dockerd) on a machine that can run containers." \
         "Set MPCVIT_SKIP_DEMO=1 to accept not running it; without that this is a failure."
  if [ "${MPCVIT_SKIP_DEMO:-0}" = 1 ]; then
    echo "demo-test.sh: MPCVIT_SKIP_DEMO=1: NOT RUN, exiting 0 as asked" >&2
    SKIPPED=1
    exit 0
  fi
  exit 1
}

# ---------------------------------------------------------------- 1. engine
step "1. container engine"
missing=()
command -v docker >/dev/null || missing+=(docker.io)
command -v dockerd >/dev/null || docker info >/dev/null 2>&1 || missing+=(docker.io)
if command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose -f "$COMPOSE_YML")
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose -f "$COMPOSE_YML")
else
  missing+=(docker-compose)
  COMPOSE=(docker-compose -f "$COMPOSE_YML")
fi
if [ -z "${MPCVIT_RUNTIME_IMAGE:-}" ] || [ -z "${MPCVIT_RUST_IMAGE:-}" ]; then
  command -v debootstrap >/dev/null || missing+=(debootstrap)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    no_engine "missing ${missing[*]}, and not root on a Debian machine to install them"
  fi
  echo "installing from Debian: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if docker info >/dev/null 2>&1; then
  ok "using the running dockerd"
else
  [ "$(id -u)" = 0 ] || no_engine "no dockerd this user can reach (none running, or no access to its socket), and only root can start one"
  echo "starting dockerd (log: $WORK/dockerd.log)"
  dockerd >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    tail -n 25 "$WORK/dockerd.log" >&2 || true
    kill -0 "$DOCKERD_PID" 2>/dev/null && kill -TERM "$DOCKERD_PID"
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=""
    no_engine "dockerd did not start (last lines of its log above)"
  fi
  ok "dockerd started, pid $DOCKERD_PID"
fi
echo "   $(docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}')," \
  "$("${COMPOSE[@]}" version --short 2>/dev/null | sed 's/^/compose /')," \
  "$(docker info --format 'storage {{.Driver}}')"

# ---------------------------------------------------------------- 2. base images
# debian:bookworm-slim and rust:*-slim-bookworm equivalents, made here, unless
# the caller names base images.
step "2. base images"
RUNTIME_BASE="${MPCVIT_RUNTIME_IMAGE:-mpcvit-base/debian:bookworm-slim}"
BUILD_RUNTIME=0
[ -n "${MPCVIT_RUNTIME_IMAGE:-}" ] || BUILD_RUNTIME=1
if [ -n "${MPCVIT_RUST_IMAGE:-}" ]; then
  RUST_BASE="$MPCVIT_RUST_IMAGE"
  BUILD_RUST=0
else
  SYSROOT="$(rustc --print sysroot)"
  RUST_VERSION="$(rustc --version | awk '{ print $2 }')"
  RUST_BASE="mpcvit-base/rust:$RUST_VERSION-slim-bookworm"
  BUILD_RUST=1
fi
if [ "${MPCVIT_REBUILD_BASE:-0}" != 1 ] && [ "$BUILD_RUNTIME$BUILD_RUST" = 11 ] \
  && docker image inspect "$RUNTIME_BASE" "$RUST_BASE" >/dev/null 2>&1; then
  # An earlier run made both on this engine (the Rust version is in the tag);
  # the same base images keep the image build's layer cache valid.
  ok "reusing $RUNTIME_BASE and $RUST_BASE from an earlier run (MPCVIT_REBUILD_BASE=1 rebuilds them)"
  BUILD_RUNTIME=0 BUILD_RUST=0
fi
if [ "$BUILD_RUNTIME$BUILD_RUST" != 00 ]; then
  MIRROR="${MPCVIT_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(IDENTIFIER) $(RELEASE) $(REPO_URI)' 2>/dev/null \
    | awk '$1 == "Packages" && $2 !~ /-(security|updates|backports)$/ { print $3; exit }')}"
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
  ROOTFS="$(mktemp -d /var/tmp/mpcvit-rootfs.XXXXXX)"
  echo "   debootstrap --variant=minbase bookworm from $MIRROR (log: $WORK/debootstrap.log)"
  if ! debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 20 "$WORK/debootstrap.log" >&2
    die "debootstrap"
  fi
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb
  BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  if [ "$BUILD_RUNTIME" = 1 ]; then
    tar -C "$ROOTFS" -c . | docker import --change "ENV PATH=$BASE_PATH" --change 'CMD ["bash"]' - "$RUNTIME_BASE" >/dev/null
    ok "$RUNTIME_BASE: $(docker image inspect -f '{{.Size}}' "$RUNTIME_BASE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
  fi
  if [ "$BUILD_RUST" = 1 ]; then
    # The builder: the same tree plus a C toolchain for linking, CA
    # certificates (this machine's bundle: cargo may reach crates.io through
    # a TLS-inspecting proxy), this machine's Rust toolchain (its 800 MB of
    # docs left out) and cargo configuration.
    echo "   + gcc libc6-dev ca-certificates (chroot apt-get, log: $WORK/builder-apt.log)"
    [ -s "$ROOTFS/etc/resolv.conf" ] || cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
    if ! { chroot "$ROOTFS" apt-get -o Acquire::Check-Valid-Until=false update \
      && DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get install -y --no-install-recommends \
           gcc libc6-dev ca-certificates; } >"$WORK/builder-apt.log" 2>&1; then
      tail -n 20 "$WORK/builder-apt.log" >&2
      die "installing gcc libc6-dev ca-certificates into the builder"
    fi
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$ROOTFS/usr/local/rust" "$ROOTFS/usr/local/cargo"
    cp -a "$SYSROOT/bin" "$SYSROOT/lib" "$ROOTFS/usr/local/rust/"
    if [ ! -x "$ROOTFS/usr/local/rust/bin/cargo" ]; then
      # Not a rustup toolchain directory: the cargo binary itself.
      cp "$(rustup which cargo 2>/dev/null || command -v cargo)" "$ROOTFS/usr/local/rust/bin/cargo"
    fi
    for f in config.toml config; do
      if [ -f "${CARGO_HOME:-$HOME/.cargo}/$f" ]; then
        cp "${CARGO_HOME:-$HOME/.cargo}/$f" "$ROOTFS/usr/local/cargo/$f"
        echo "   + cargo configuration ${CARGO_HOME:-$HOME/.cargo}/$f"
      fi
    done
    echo "   + Rust $RUST_VERSION from $SYSROOT"
    tar -C "$ROOTFS" -c . | docker import \
      --change "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$BASE_PATH" \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      --change 'CMD ["bash"]' - "$RUST_BASE" >/dev/null
    docker run --rm "$RUST_BASE" sh -c 'cargo --version && rustc --version && cc --version | head -n 1' | sed 's/^/   /'
    ok "$RUST_BASE: $(docker image inspect -f '{{.Size}}' "$RUST_BASE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
  fi
  rm -rf "$ROOTFS"
  ROOTFS=""
fi
[ "$BUILD_RUNTIME" = 1 ] || docker image inspect "$RUNTIME_BASE" >/dev/null 2>&1 || echo "   $RUNTIME_BASE: not here, docker build pulls it"
[ "$BUILD_RUST" = 1 ] || docker image inspect "$RUST_BASE" >/dev/null 2>&1 || echo "   $RUST_BASE: not here, docker build pulls it"

# ---------------------------------------------------------------- 3. the image
step "3. docker build -f deploy/Dockerfile -t mpcvit . (RUST_IMAGE=$RUST_BASE, RUNTIME_IMAGE=$RUNTIME_BASE)"
build_args=(--build-arg "RUST_IMAGE=$RUST_BASE" --build-arg "RUNTIME_IMAGE=$RUNTIME_BASE")
for v in http_proxy https_proxy no_proxy all_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY ALL_PROXY; do
  if [ -n "${!v:-}" ]; then build_args+=(--build-arg "$v=${!v}"); fi
done
echo "   full log: $WORK/build.log (shown: Docker's steps, cargo's last lines)"
set +e
docker build -f deploy/Dockerfile -t mpcvit "${build_args[@]}" . 2>&1 | tee "$WORK/build.log" \
  | sed -u 's/\x1b\[[0-9;]*m//g' | grep --line-buffered -E '^Step [0-9]+/|^Successfully|^ *(Finished|error|warning)'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
  tail -n 30 "$WORK/build.log" >&2
  die "docker build (exit $rc)"
fi
ok "$IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

# ---------------------------------------------------------------- 4. up
# The client's output must name the expected class first; times and decimals vary.
check_client() { # $1 = output, $2 = exit code, $3 = which run
  printf '%s\n' "$1" | sed 's/^/   | /'
  [ "$2" = 0 ] || die "$3: the client exited $2"
  printf '%s\n' "$1" | grep -Eq "^[[:space:]]*1\.[[:space:]]+$EXPECTED_TOP1[[:space:]]+0\.[0-9]+[[:space:]]+\(class $EXPECTED_CLASS," \
    || die "$3: top-1 is not \"$EXPECTED_TOP1\" (class $EXPECTED_CLASS)"
  ok "$3: exit 0, top-1 \"$EXPECTED_TOP1\" (class $EXPECTED_CLASS)"
}

step "4. docker-compose up -d, the client's exit code and top-1 label"
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
UP=1
timeout 600 "${COMPOSE[@]}" up -d || die "docker-compose up -d"
client_id="$("${COMPOSE[@]}" ps -q client)"
[ -n "$client_id" ] || die "no client container"
client_rc="$(timeout 300 docker wait "$client_id")" || die "the client did not finish in 300 s"
check_client "$(docker logs "$client_id" 2>&1)" "$client_rc" "first client run"
echo "   up to the client's result: $(elapsed "$STEP_T") s"

# ---------------------------------------------------------------- 4b. the web page
step "4b. the web page and the parties' web listeners, from the host"
page_link="$("${COMPOSE[@]}" logs --no-color web-token 2>&1 | grep -Eo 'http://localhost:15480/#token=mpcvit_[0-9a-f]{64}' | tail -n 1)"
[ -n "$page_link" ] || die "web-token printed no page link"
token="${page_link##*#token=}"
curl -sf http://127.0.0.1:15480/ | grep -q '<script src="app.js"' || die "the page is not served on 127.0.0.1:15480"
curl -sf http://127.0.0.1:15480/config.json | grep -q 'https://localhost:15451' || die "the page's config.json names no party 0"
# gRPC-web ListModels (an empty message), as the page sends it; -k: the
# demo's CA is not the host's.
grpc_web() { # port token -> the response body's trailer text
  printf '\0\0\0\0\0' | curl -sk --http1.1 -X POST "https://127.0.0.1:$1/mpcvit.v1.Inference/ListModels" \
    -H 'content-type: application/grpc-web+proto' -H 'x-grpc-web: 1' \
    -H 'origin: http://localhost:15480' -H "authorization: Bearer $2" --data-binary @- -D - | tr -d '\0' | tr -c '[:print:]\n' ' '
}
for port in 15451 15452; do
  out="$(grpc_web "$port" "$token")"
  printf '%s\n' "$out" | grep -qi '^access-control-allow-origin: http://localhost:15480' \
    || die "web listener $port: no CORS answer for the page's origin"
  printf '%s\n' "$out" | grep -q 'grpc-status:0' || die "web listener $port: ListModels with the token failed: $out"
  printf '%s\n' "$out" | grep -q 'fashion-mnist' || die "web listener $port: no model listed"
  grpc_web "$port" "mpcvit_$(printf '0%.0s' $(seq 64))" | grep -qi 'grpc-status: *16' \
    || die "web listener $port: a wrong token was not UNAUTHENTICATED"
  ok "web listener 127.0.0.1:$port: ListModels with the token, CORS for the page, a wrong token UNAUTHENTICATED"
done
ok "the page on http://127.0.0.1:15480/ and web-token's link"

# ---------------------------------------------------------------- 5. networks
step "5. networks: each listener on the network it serves; the published client API"
# 0 when a TCP connection to host:port opens from a throwaway container on
# the project's network $1. Positive controls guard the negative checks.
tcp_opens() {
  docker run --rm --network "${COMPOSE_PROJECT_NAME}_$1" --user 10001:10001 --read-only \
    --cap-drop ALL "$IMAGE" timeout 5 bash -c "exec 3<>/dev/tcp/$2/$3" >/dev/null 2>&1
}
expect() { # open|closed network host port why
  local want="$1" net="$2" host="$3" port="$4" got
  shift 4
  if tcp_opens "$net" "$host" "$port"; then got=open; else got=closed; fi
  [ "$got" = "$want" ] || die "from network $net, $host:$port is $got, expected $want ($*)"
  printf 'ok: %-14s -> %-12s %-6s (%s)\n' "$net" "$host:$port" "$got" "$*"
}
expect open   client-party1 party1 50052 "the client API of party 1"
expect closed client-party1 party1 50061 "party 1's peer port: not on the client's network"
expect open   client-party0 party0 50051 "the client API of party 0"
expect open   party0-party1 party1 50061 "party 1's peer port, for party 0"
expect closed party0-party1 party1 50052 "party 1's client API: not on the parties' link"
expect closed party0-party1 party0 50051 "party 0's client API: not on the parties' link"
expect closed dealer-party1 party1 50061 "party 1's peer port: not on the dealer's link"
expect closed client-party1 dealer 50070 "the dealer: not on the client's network"
if [ -n "$DOCKERD_PID" ]; then
  # dockerd 20.10 logs, per container started with `no-new-privileges:true`:
  # "Security options with `:` as a separator are deprecated ... use `=` instead."
  n="$(grep -c 'as a separator are deprecated' "$WORK/dockerd.log" || true)"
  [ "$n" = 0 ] || { grep 'as a separator are deprecated' "$WORK/dockerd.log" | head -n 2 >&2; die "dockerd warned $n times about a deprecated security option separator"; }
  ok "dockerd's log has no deprecated security option separator warning"
  # Control: the old form makes this dockerd warn, so the check can see it.
  docker run --rm --security-opt no-new-privileges:true "$IMAGE" true >/dev/null 2>&1 || true
  sleep 0.5
  if grep -q 'as a separator are deprecated' "$WORK/dockerd.log"; then
    ok "control: a container with no-new-privileges:true makes this dockerd warn"
  else
    echo "   note: this dockerd does not warn about no-new-privileges:true either"
  fi
fi
# The published client APIs, with the host's own client where CI built it
# (deploy/check.sh builds target/release/mpcvit-client before this runs).
ports="$("${COMPOSE[@]}" port party0 50051) $("${COMPOSE[@]}" port party1 50052)"
echo "   published: party 0 -> ${ports% *}, party 1 -> ${ports#* }"
HOST_CLIENT="${CARGO_TARGET_DIR:-target}/release/mpcvit-client"
if [ -x "$HOST_CLIENT" ]; then
  rm -rf "$WORK/client-certs" && mkdir -p "$WORK/client-certs"
  docker run --rm -v "${COMPOSE_PROJECT_NAME}_certs-client:/certs/client:ro" "$IMAGE" \
    tar -C /certs/client -cf - . | tar -xf - -C "$WORK/client-certs"
  set +e
  out="$(timeout 120 "$HOST_CLIENT" infer client/samples/fashion-mnist-test-0-ankle-boot.png \
    --party0 "${ports% *}" --party1 "${ports#* }" --certs "$WORK/client-certs" 2>&1)"
  rc=$?
  set -e
  rm -rf "$WORK/client-certs"
  check_client "$out" "$rc" "host client through the published ports"
else
  echo "   (no $HOST_CLIENT: the host-side client run is left out; deploy/check.sh builds it)"
fi

# ---------------------------------------------------------------- 6. party 1 restart
step "6. kill party 1, party 0 turns unhealthy; start party 1, a second client run"
party0_id="$("${COMPOSE[@]}" ps -q party0)"
party1_id="$("${COMPOSE[@]}" ps -q party1)"
health() { docker inspect -f '{{.State.Health.Status}}' "$1"; }
[ "$(health "$party0_id")" = healthy ] || die "party 0 is not healthy before the restart"
"${COMPOSE[@]}" kill party1
t_kill=$(date +%s.%N)
while [ "$(health "$party0_id")" != unhealthy ]; do
  if awk -v a="$t_kill" -v b="$(date +%s.%N)" -v l="$UNHEALTHY_WITHIN_S" 'BEGIN { exit !(b - a > l) }'; then
    die "party 0 still $(health "$party0_id") ${UNHEALTHY_WITHIN_S} s after party 1 died"
  fi
  sleep 0.5
done
ok "party 0 unhealthy $(elapsed "$t_kill") s after party 1 was killed (limit ${UNHEALTHY_WITHIN_S} s)"
docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$party0_id" | tr -s '\n' | tail -n 2 | sed 's/^/   /'
"${COMPOSE[@]}" start party1
t_start=$(date +%s.%N)
for _ in $(seq 240); do
  [ "$(health "$party0_id")" = healthy ] && [ "$(health "$party1_id")" = healthy ] && break
  sleep 0.5
done
[ "$(health "$party0_id")" = healthy ] && [ "$(health "$party1_id")" = healthy ] \
  || die "party 0 $(health "$party0_id"), party 1 $(health "$party1_id") 120 s after party 1 started again"
ok "both parties healthy again $(elapsed "$t_start") s after party 1 started"
set +e
out="$(timeout 300 "${COMPOSE[@]}" run --rm -T client 2>"$WORK/run.err")"
rc=$?
set -e
[ "$rc" = 0 ] || cat "$WORK/run.err" >&2
check_client "$out" "$rc" "second client run (docker-compose run --rm client)"

# ---------------------------------------------------------------- 7. down
# (the EXIT trap: down -v, stop the daemon this script started, the times)

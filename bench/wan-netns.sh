#!/usr/bin/env bash
# The WAN benchmark with the kernel shaping the bandwidth: party 1 runs in a
# network namespace of its own, joined to this one by a veth pair, and
# `tc tbf` limits each end of the pair to MBIT. The kernel here has no
# sch_netem, so the one-way delay still comes from the relay
# (mpcvit_bench::relay, `--link DELAY_MS,0`: delay only, no bandwidth limit
# of its own) on party 0's side of the peer link. Party 1's links to the
# dealer and the client cross the shaped veth pair too (no delay).
#
# Needs root (ip netns, ip link, tc). Nothing touches the loopback device:
# the only qdiscs are on the veth pair this script makes, and the namespace
# (which takes the pair with it) is deleted at exit, however the script
# ends.
#
# Usage: sudo bash bench/wan-netns.sh [e2e flags…]   e.g. --preset vit_7_4_32_mu05 --gelu erf
# Env:   DELAY_MS=20 MBIT=400 NET=10.77.0 (a /30 inside the namespaces this script makes)
set -euo pipefail
cd "$(dirname "$0")/.."
delay="${DELAY_MS:-20}"
mbit="${MBIT:-400}"
net="${NET:-10.77.0}"
if [ "$(id -u)" != 0 ]; then
  echo "wan-netns: needs root (network namespaces and tc); the relay alone needs none:" >&2
  echo "  cargo run --release -p mpcvit-server --example e2e -- --link wan" >&2
  exit 1
fi
for tool in ip tc; do
  command -v "$tool" >/dev/null || { echo "wan-netns: $tool not found (apt-get install iproute2)" >&2; exit 1; }
done
ns="mpcvit-wan-$$"
veth0="mpv0-$$"
veth1="mpv1-$$"
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$veth0" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release -q -p mpcvit-server --examples

ip netns add "$ns"
ip link add "$veth0" type veth peer name "$veth1"
ip link set "$veth1" netns "$ns"
ip addr add "$net.1/30" dev "$veth0"
ip link set "$veth0" up
ip -n "$ns" addr add "$net.2/30" dev "$veth1"
ip -n "$ns" link set "$veth1" up
ip -n "$ns" link set lo up
# A token bucket per direction: MBIT, a burst of 128 KiB (GSO packets on a
# veth reach 64 KiB), at most 400 ms of queue.
tc qdisc add dev "$veth0" root tbf rate "${mbit}mbit" burst 128kb latency 400ms
ip netns exec "$ns" tc qdisc add dev "$veth1" root tbf rate "${mbit}mbit" burst 128kb latency 400ms
echo "wan-netns: party 1 in namespace $ns at $net.2, tbf ${mbit} Mbit/s each way on $veth0/$veth1, relay delay ${delay} ms each way" >&2

target/release/examples/e2e --link "${delay},0" --shaped-mbit "$mbit" \
  --p1-netns "$ns" --p1-ip "$net.2" --host-ip "$net.1" "$@"
tc -s qdisc show dev "$veth0" | sed 's/^/wan-netns: root side: /' >&2
ip netns exec "$ns" tc -s qdisc show dev "$veth1" | sed 's/^/wan-netns: party 1 side: /' >&2

#!/usr/bin/env bash
# The seed demo, on real kernel networking in network namespaces:
#   node     runs the plugin (bridges cni0/cni1/cni2 live here), strict rp_filter
#   pod      gets eth0 (management), net1 and net2 through cnitool, like Multus would
#   outside  an outside host (198.51.100.2) that routes 10.240.0.0/16 via the node
#   wan      an address out in the world (203.0.113.10) with no route back to pods
# Prints the seed's outputs, proves the traffic, then deletes everything.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# Overridable so the test suite can run this very script against a fresh build.
export CNI_PATH=${MULTI_BRIDGE_CNI_PATH:-$root/bin/cni}
export NETCONFPATH=$root/examples/cni
cnitool=${CNITOOL:-$root/bin/cnitool}
# State lives in a temporary directory so the demo leaves nothing on the machine.
work=$(mktemp -d /tmp/multi-bridge-demo.XXXXXX)
sfx=$$
node=mbdemo-node-$sfx pod=mbdemo-pod-$sfx outside=mbdemo-outside-$sfx wan=mbdemo-wan-$sfx
attachments=("mgmt eth0" "net1 net1" "net2 net2")

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
# run_in <netns>: prints the command the way the seed did, runs it, labels the host by its role.
run_in() { local ns=$1; shift; local role=${ns#mbdemo-}; printf '➜ %s$ %s\n' "${role%-*}" "$*"; ip netns exec "$ns" "$@"; }

cleanup() {
  set +e
  if ip netns list | grep -q "^$pod"; then
    for ((i=${#attachments[@]}-1; i>=0; i--)); do
      read -r net ifname <<<"${attachments[i]}"
      CNI_IFNAME=$ifname ip netns exec "$node" "$cnitool" del "$net" "/run/netns/$pod" >/dev/null 2>&1
    done
  fi
  for ns in "$pod" "$outside" "$wan" "$node"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo make demo" >&2; exit 1; }

# The example configs keep their state under the plugin's defaults; point
# them at this run's directory instead (same JSON otherwise).
confdir=$work/net.d
mkdir -p "$confdir"
for f in "$NETCONFPATH"/*.conf; do
  sed -e "s|\"type\": \"multi-bridge\",|\"type\": \"multi-bridge\", \"dataDir\": \"$work/state\", \"runtimeDir\": \"$work/run\",|" \
      -e "s|\"type\": \"host-local\",|\"type\": \"host-local\", \"dataDir\": \"$work/ipam\",|" "$f" >"$confdir/$(basename "$f")"
done
export NETCONFPATH=$confdir
# The default node policy keeps the plugin's files under /var/lib/cni,
# /var/log and /run; this run's policy allows its own directory instead.
printf '{"allowedDirectories": ["%s"]}\n' "$work" >"$work/policy.json"
export MULTI_BRIDGE_POLICY_FILE=$work/policy.json

say "Topology: node, pod, outside host, WAN host"
for ns in "$node" "$pod" "$outside" "$wan"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add uplink netns "$node" type veth peer name eth0 netns "$outside"
ip -n "$node" addr add 198.51.100.1/24 dev uplink && ip -n "$node" link set uplink up
ip -n "$outside" addr add 198.51.100.2/24 dev eth0 && ip -n "$outside" link set eth0 up
ip -n "$outside" route add 10.240.0.0/16 via 198.51.100.1
ip link add wan0 netns "$node" type veth peer name eth0 netns "$wan"
ip -n "$node" addr add 203.0.113.1/24 dev wan0 && ip -n "$node" link set wan0 up
ip -n "$wan" addr add 203.0.113.10/24 dev eth0 && ip -n "$wan" link set eth0 up
ip netns exec "$node" sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1
echo "node: uplink 198.51.100.1 <-> outside 198.51.100.2; wan0 203.0.113.1 <-> wan 203.0.113.10; rp_filter=1"

say "ADD: eth0 (mgmt, table 0), net1 (table 1, pref 101), net2 (table 2, pref 102)"
for a in "${attachments[@]}"; do
  read -r net ifname <<<"$a"
  CNI_IFNAME=$ifname \
  CNI_ARGS="IgnoreUnknown=true;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=netshoot1" \
    ip netns exec "$node" "$cnitool" add "$net" "/run/netns/$pod" >"$work/$net.json"
  echo "$net -> $ifname: $(grep -o '"address": "[^"]*"' "$work/$net.json" | cut -d'"' -f4)"
done

say "The seed's outputs"
run_in "$pod" ip route
echo; run_in "$pod" ip route show table 1
echo; run_in "$pod" ip route show table 2
echo; run_in "$pod" ip rule

say "Every address answers the outside host (strict rp_filter on the node)"
for addr in 10.240.0.2 10.240.10.2 10.240.20.2; do
  run_in "$outside" ping -c 1 -W 2 "$addr" | sed -n '1,2p;/packets transmitted/p'
done

say "Pods reach the outside world (203.0.113.10 has no route to pods: masquerade)"
run_in "$pod" ping -c 1 -W 2 203.0.113.10 | sed -n '1,2p;/packets transmitted/p'
run_in "$pod" ping -c 1 -W 2 -I 10.240.10.2 203.0.113.10 | sed -n '1,2p;/packets transmitted/p'

say "Node firewall: one masquerade rule per network, none per pod"
ip netns exec "$node" nft list ruleset | grep masquerade
firewall_before=$(ip netns exec "$node" nft list ruleset)

say "DEL all three"
for ((i=${#attachments[@]}-1; i>=0; i--)); do
  read -r net ifname <<<"${attachments[i]}"
  CNI_IFNAME=$ifname ip netns exec "$node" "$cnitool" del "$net" "/run/netns/$pod"
  echo "DEL $net ($ifname): ok"
done
run_in "$pod" ip -br link
run_in "$pod" ip rule
echo "host veths left on the node: $(ip -n "$node" -o link show type veth | grep -vc -e uplink -e wan0 || true)"
echo "IPAM reservations left: $(find "$work/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)"
if [[ "$(ip netns exec "$node" nft list ruleset)" == "$firewall_before" ]]; then
  echo "firewall: unchanged by DEL (per-network rules only, nothing per pod)"
else
  echo "firewall: changed by DEL"; exit 1
fi
attachments=()
say "Demo done; namespaces removed."

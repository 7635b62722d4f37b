#!/usr/bin/env bash
# Gives KWOK's fake pod IPs (10.244.0.0/16, and 10.245.0.0/16 of the second control plane
# `make dev` registers as the cluster "edge") real listeners: `up` creates the network
# namespace guildnet-pods, joined to the host by a veth pair with link-local addresses, routes
# the pod CIDR from the host into it and makes every address of the CIDR local there, so a
# server bound to 0.0.0.0 in the namespace answers on each pod IP without per-pod setup.
# Nothing else is routed either way: the namespace has no default route and only knows the
# host's end of the veth. Shared by every stack on the machine; `up` is idempotent and safe
# to run concurrently. `down` removes it all. Needs root (CAP_NET_ADMIN).
#   scripts/upstream-netns.sh up|down
#   ip netns exec guildnet-pods target/debug/test-upstream --listen 0.0.0.0:8080
set -euo pipefail

ns=guildnet-pods
host_if=guildnet-pods # the host's end of the veth pair; its peer in the namespace is eth0
host_ip=169.254.244.1
ns_ip=169.254.244.2
pod_cidrs="10.244.0.0/16 10.245.0.0/16"
lock=/run/lock/guildnet-pods.lock

has_ns() { ip netns list | awk '{print $1}' | grep -qx "$ns"; }

up() {
  has_ns || ip netns add "$ns"
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    # A host end left over from a namespace deleted by hand has its peer elsewhere.
    if ip link show "$host_if" >/dev/null 2>&1; then ip link del "$host_if"; fi
    ip link add "$host_if" type veth peer name eth0 netns "$ns"
  fi
  if [ -d /proc/sys/net/ipv6 ]; then
    # IPv4 only: no link-local IPv6 chatter on the pair.
    sysctl -qw "net.ipv6.conf.$host_if.disable_ipv6=1"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  fi
  ip addr replace "$host_ip/30" dev "$host_if"
  ip link set "$host_if" up
  ip -n "$ns" addr replace "$ns_ip/30" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  # AnyIP: the whole pod CIDR is local in the namespace. Replies go back to $host_ip, on the
  # /30's connected route; there is no other route out.
  for pod_cidr in $pod_cidrs; do
    ip -n "$ns" route replace local "$pod_cidr" dev lo
    # From the host, the pod CIDR goes to the namespace, with our link-local source address.
    ip route replace "$pod_cidr" via "$ns_ip" dev "$host_if" src "$host_ip"
  done
}

down() {
  # Deleting the host's end deletes its peer and the pod CIDR route with it.
  if ip link show "$host_if" >/dev/null 2>&1; then ip link del "$host_if"; fi
  if has_ns; then
    pids=$(ip netns pids "$ns" | tr '\n' ' ')
    [ -z "$pids" ] || echo "note: processes still in namespace $ns (now unreachable): $pids" >&2
    ip netns del "$ns"
  fi
}

case "${1:-}" in
  up | down)
    mkdir -p "$(dirname "$lock")"
    exec 9>"$lock"
    flock 9
    "$1"
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac

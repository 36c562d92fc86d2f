#!/usr/bin/env bash
# Starts or stops one node of the local cluster (make cluster-up): a network
# namespace nm-NAME on the underlay bridge, a cgroup subtree nodemesh-NAME in
# every hierarchy, and inside them containerd and a kubelet (node-init.sh).
#
#   node.sh up NAME IP STATE_DIR KUBE_DIR CONTAINERD_DIR CNI_DIR KUBELET SANDBOX_IMAGE
#   node.sh down NAME STATE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bridge=nm-underlay
gateway=172.30.0.1

hierarchies() { ls /sys/fs/cgroup; }

# cgroup_procs NAME: every process in the node's cgroup subtree (what the
# node started: containerd, kubelet, shims, containers).
cgroup_procs() {
  local d=/sys/fs/cgroup/pids/nodemesh-$1
  [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true
}

up() {
  local name=$1 ip=$2 state=$3 kube=$4 ctrd=$5 cni=$6 kubelet=$7 sandbox=$8
  local ns=nm-$name veth=nmu-$name
  mkdir -p "$state"
  echo "$sandbox" > "$state/sandbox-image"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" route add default via "$gateway"
  for h in $(hierarchies); do
    mkdir -p "/sys/fs/cgroup/$h/nodemesh-$name"
  done
  # cpuset v1: a cgroup takes no task until it has CPUs and memory nodes.
  cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/nodemesh-$name/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/nodemesh-$name/cpuset.mems"
  # The launcher moves itself into the node's cgroups, then becomes the
  # node: network namespace (ip netns exec also remounts /sys), then new
  # mount and cgroup namespaces rooted there.
  setsid bash -c '
    for h in $(ls /sys/fs/cgroup); do echo $$ > /sys/fs/cgroup/$h/nodemesh-'"$name"'/cgroup.procs; done
    exec ip netns exec '"$ns"' unshare --mount --cgroup --propagation private "$@"
  ' node "$here/node-init.sh" "$name" "$ip" "$state" "$kube" "$ctrd" "$cni" "$kubelet" \
    >"$state/node.log" 2>&1 < /dev/null &
  echo $! > "$state/pid"
}

down() {
  local name=$1 state=$2
  # Everything the node started is in its cgroup subtree: end it there (by
  # cgroup membership, never by name), several rounds since shims respawn
  # nothing but exit as their containers die.
  for round in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(cgroup_procs "$name")
    [ -z "$pids" ] && break
    kill -9 $pids 2>/dev/null || true
    sleep 0.3
  done
  ip netns del "nm-$name" 2>/dev/null || true
  ip link del "nmu-$name" 2>/dev/null || true
  for h in $(hierarchies); do
    d=/sys/fs/cgroup/$h/nodemesh-$name
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # Mounts were private to the node's mount namespace, gone with its
  # processes; what remains is state on disk (overlay snapshots included).
  rm -rf "$state"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  *) echo "usage: node.sh up NAME IP STATE_DIR KUBE_DIR CONTAINERD_DIR CNI_DIR KUBELET SANDBOX_IMAGE | down NAME STATE_DIR" >&2; exit 2 ;;
esac

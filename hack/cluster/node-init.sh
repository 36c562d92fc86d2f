#!/usr/bin/env bash
# The inside of one node of the local cluster (hack/cluster/node.sh starts it):
# runs in the node's own network, mount and cgroup namespaces, like a kind
# node container. Mounts the node's own cgroup views, bpffs and per-node
# directories over the paths the kubelet, containerd, the CNI plugins and the
# nodemesh agent use, then runs containerd and the kubelet until killed.
#
#   node-init.sh NAME IP STATE_DIR KUBE_DIR CONTAINERD_DIR CNI_DIR KUBELET
set -euo pipefail
name=$1 ip=$2 state=$3 kube=$4 ctrd=$5 cni=$6 kubelet=$7

# cgroups: ip netns exec mounted a fresh sysfs without them. In this cgroup
# namespace, whose root is the node's cgroup, every hierarchy shows the
# node's subtree as "/" (the kubelet's kubepods land under it).
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
  mkdir -p /sys/fs/cgroup/$c
  mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
done
mkdir -p /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
# The node's own bpffs instance: the agent's pins are the node's.
mount -t bpf bpf /sys/fs/bpf

# Per-node state over the paths everything expects (containerd's NRI socket
# included: two containerds cannot share /var/run/nri/nri.sock).
for d in etc/cni/net.d opt/cni/bin var/lib/kubelet var/lib/containerd run/containerd \
         var/lib/nodemesh var/run/nodemesh var/run/netns var/run/nri var/log/pods var/log/containers; do
  mkdir -p "$state/root/$d" "/$d"
  mount --bind "$state/root/$d" "/$d"
done
cp "$cni"/* /opt/cni/bin/
# New mounts (pod network namespaces, volumes) must reach the containers
# that mount these paths with HostToContainer propagation: the node's mounts
# are one shared peer group, private to this node.
mount --make-rshared /

ip link set lo up
sysctl -qw net.ipv4.ip_forward=1

cat > "$state/containerd.toml" <<TOML
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "$(cat "$state/sandbox-image")"
[plugins.'io.containerd.cri.v1.runtime']
  # This machine's sandbox has no CAP_SYS_RESOURCE: an OOM score below the
  # current one (the kubelet asks -998 for sandboxes) cannot be set, and runc
  # fails. containerd then clamps to its own score, as in rootless setups.
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/opt/cni/bin"]
  conf_dir = "/etc/cni/net.d"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "${RUNC:-$ctrd/runc}"
TOML
PATH="$ctrd:$PATH" "$ctrd/containerd" --config "$state/containerd.toml" >"$state/containerd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 100); do
  [ -S /run/containerd/containerd.sock ] && break
  sleep 0.1
done
for img in "$state"/images/*.tar; do
  [ -e "$img" ] || continue
  "$ctrd/ctr" -a /run/containerd/containerd.sock -n k8s.io images import --no-unpack=false "$img" >>"$state/images.log" 2>&1
done

cat > "$state/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $kube/pki/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
failSwapOn: false
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
rotateCertificates: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
resolvConf: $state/resolv.conf
YAML
: > "$state/resolv.conf"
"$kubelet" --config "$state/kubelet.yaml" --kubeconfig "$kube/kubeconfig-$name" \
  --hostname-override "$name" --node-ip "$ip" --root-dir /var/lib/kubelet --v=1 >"$state/kubelet.log" 2>&1 &
kubelet_pid=$!
echo "$ctrd_pid $kubelet_pid" > "$state/inner-pids"
wait -n
echo "node-init: a node process ended (see $state/containerd.log, $state/kubelet.log)" >&2

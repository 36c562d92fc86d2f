#!/usr/bin/env bash
# A local two-node Kubernetes cluster on this machine, like kind for
# nodemesh, built only from the Go module proxy and Debian's packages
# (make cluster-up / make cluster-down):
#
#   - the control plane in the root network namespace, listening on the
#     underlay bridge nm-underlay (172.30.0.1): etcd, kube-apiserver,
#     kube-controller-manager (allocates each node a pod /24), kube-scheduler;
#     no kube-proxy (nodemesh's socket load balancing replaces it);
#   - NODES nodes (default node-a, node-b), each a network namespace nm-NODE on
#     the bridge (172.30.0.2, .3, …) with its own mount and cgroup namespaces,
#     bpffs, containerd 2 + runc, and a real kubelet (hack/cluster/node.sh);
#   - the images of make images imported into every node's containerd.
#
# State under _output/cluster (CLUSTER_DIR); the admin kubeconfig is
# _output/cluster/kubeconfig. Needs root.
#
#   cluster.sh up | down | status
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${CLUSTER_DIR:-$root/_output/cluster}
nodes=${NODES:-node-a node-b}
bridge=nm-underlay
gateway=172.30.0.1

log() { echo "cluster: $*" >&2; }

kubectl() { "$kube_bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

up() {
  if [ "$(id -u)" != 0 ]; then
    log "needs root (network namespaces, mounts, cgroups)"; exit 1
  fi
  if [ -e "$dir/kube/pids" ]; then
    log "already up (state in $dir); make cluster-down first"; exit 1
  fi
  kube_bin=$("$root/hack/kube-build.sh" | tail -n 1)
  { read -r dns; read -r ctrd; read -r cni; } < <("$root/hack/node-build.sh" | tail -n 3)
  images=${IMAGES:-$root/_output/images}
  if ! ls "$images"/*.tar >/dev/null 2>&1; then
    log "no images in $images (run make images)"; exit 1
  fi
  # The images' tag: make cluster-up passes the VERSION make images used.
  sandbox=ghcr.io/nodemesh/pause:${VERSION:?VERSION (the images tag) is required}
  mkdir -p "$dir/images"
  dns_image=localhost/nodemesh-cluster/coredns:v$("$dns/coredns" -version | sed -n 's/^CoreDNS-//p')
  (cd "$root" && go run ./hack/images --binary "$dns_image=$dns/coredns" --out "$dir/images") >&2
  # The proxyless gRPC workload of test/cluster (test only, not shipped).
  (cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$dir/bin/grpcprobe" ./hack/grpcprobe &&
    go run ./hack/images --binary "localhost/nodemesh-cluster/grpcprobe:dev=$dir/bin/grpcprobe" --out "$dir/images") >&2
  log "underlay bridge $bridge $gateway/24"
  ip link add "$bridge" type bridge
  ip addr add "$gateway/24" dev "$bridge"
  ip link set "$bridge" up
  log "control plane"
  (cd "$root" && go run ./hack/kubeenv --dir "$dir/kube" --address "$gateway" --nodes "$(echo $nodes | tr ' ' ,)" up) >&2
  cp "$dir/kube/kubeconfig" "$dir/kubeconfig"
  i=2
  for n in $nodes; do
    log "node $n (172.30.0.$i)"
    mkdir -p "$dir/$n/images"
    cp "$images"/*.tar "$dir/images/coredns.tar" "$dir/images/grpcprobe.tar" "$dir/$n/images/"
    "$root/hack/cluster/node.sh" up "$n" "172.30.0.$i" "$dir/$n" "$dir/kube" "$ctrd" "$cni" "$kube_bin/kubelet" "$sandbox"
    i=$((i + 1))
  done
  log "waiting for the nodes to register and get their pod CIDRs"
  for n in $nodes; do
    for _ in $(seq 120); do
      cidr=$(kubectl get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null || true)
      [ -n "$cidr" ] && break
      sleep 1
    done
    if [ -z "$cidr" ]; then
      log "node $n did not register (see $dir/$n/kubelet.log); its last words:"
      tail -n 20 "$dir/$n/node.log" "$dir/$n/containerd.log" "$dir/$n/kubelet.log" >&2 2>/dev/null || true
      exit 1
    fi
    ip=$(kubectl get node "$n" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
    # The control plane's host reaches the pods (and their replies to the
    # API server find their way back) through each node.
    ip route replace "$cidr" via "$ip" dev "$bridge"
    log "node $n: $ip, pods $cidr"
  done
  log "CoreDNS $dns_image as kube-dns (10.96.0.10; running once the CNI is installed)"
  sed "s#IMAGE#$dns_image#" "$root/hack/cluster/coredns.yaml" | kubectl apply -f - >&2
  # What nodemesh install needs on this cluster: no kube-proxy (the agent
  # reaches the API server directly), no Envoy image (the node proxy is
  # replaced by the L4 stand-in), the hybrid cgroup layout's v2 hierarchy.
  cat > "$dir/values.yaml" <<YAML
# Written by make cluster-up for: nodemesh install -f $dir/values.yaml
k8sServiceHost: "$gateway"
k8sServicePort: 6443
agent:
  cgroupRoot: /sys/fs/cgroup/unified
envoy:
  # No Envoy image can be pulled here: nodemesh's L4 stand-in carries the
  # opted-in namespaces' traffic (and keeps a record of it); no L7 routing.
  standIn:
    enabled: true
YAML
  log "up: export KUBECONFIG=$dir/kubeconfig; bin/nodemesh install -f $dir/values.yaml --wait (nodes are NotReady until then: no CNI)"
}

down() {
  kube_bin=$("$root/hack/kube-build.sh" 2>/dev/null | tail -n 1)
  for n in $nodes; do
    "$root/hack/cluster/node.sh" down "$n" "$dir/$n"
  done
  if [ -d "$dir/kube" ]; then
    (cd "$root" && go run ./hack/kubeenv --dir "$dir/kube" down) >&2
  fi
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$dir"
  log "down"
}

status() {
  kube_bin=$("$root/hack/kube-build.sh" 2>/dev/null | tail -n 1)
  kubectl get nodes -o wide
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: cluster.sh up|down|status" >&2; exit 2 ;;
esac

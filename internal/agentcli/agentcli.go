//go:build linux

// Package agentcli is the nodemesh-agent command line. It is separate from
// internal/cli so that the agent binary does not link the translator, the
// xDS server or go-control-plane.
package agentcli

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/internal/clibase"
)

// IO are the command's streams.
type IO = clibase.IO

// NewAgentCommand builds the nodemesh-agent command tree. An error a
// command returns is a failure (exit 1), not a usage error (2), unless it
// says otherwise: the agent's errors are about the node, rarely its flags.
func NewAgentCommand(streams IO) *cobra.Command {
	root := clibase.NewRoot(streams, "nodemesh-agent", "Run nodemesh's per-node datapath: CNI, eBPF policy and redirection",
		`nodemesh-agent runs on every node (a host-network DaemonSet with the capabilities
NET_ADMIN and SYS_ADMIN). It serves the nodemesh-cni plugin, gives pods their
addresses and veths, and keeps the eBPF programs' maps in line with the cluster:
identities, NetworkPolicies, Services, and namespaces opted in with
istio.io/dataplane-mode=nodemesh.`)
	root.AddCommand(newAgentRunCommand(streams), newCleanupCommand(streams))
	clibase.FailuresExit(root)
	return root
}

// Execute runs the nodemesh-agent command line and returns the exit code.
func Execute(args []string, streams IO) int {
	return clibase.Execute(NewAgentCommand(streams), args, streams)
}

type agentOptions struct {
	kube             clibase.KubeFlags
	nodeName         string
	namespace        string
	podName          string
	sysctlNetDir     string
	podCIDR          string
	bpffs            string
	cgroupRoot       string
	stateDir         string
	cniConfDir       string
	cniBinDir        string
	cniPlugin        string
	cniSocket        string
	proxyAddress     string
	nodeIPs          []string
	metricsAddress   string
	allowHostIngress bool
	rootNamespace    string
	trustDomain      string
	tdAliases        []string
	mtu              int
	routingMode      string
	cniMode          string
	vxlanPort        int
	vxlanVNI         int
	attachQuiet      time.Duration
	attachMaxDelay   time.Duration
	identityGCPeriod time.Duration
	identityGCGrace  time.Duration
	noIdentityGC     bool
	noProxyReturn    bool
	noInboundCapture bool
	istioMTLS        bool
	clusterDomain    string
	socketLB         bool
	masquerade       bool
	nonMasqCIDRs     []string
	masqPorts        string
	uplinks          []string
	nodeNetns        string
	log              clibase.LogFlags
}

func newAgentRunCommand(streams IO) *cobra.Command {
	o := &agentOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent until SIGINT or SIGTERM",
		Long: `Run loads the eBPF programs (or takes over the ones a previous agent pinned), serves
the CNI plugin on --cni-socket, writes the CNI configuration once it is synced with
the API server, and reconciles the maps on every change.

Restarting the agent is safe: programs, maps and links are pinned under
--bpffs/nodemesh and the agent's records are in --state-dir, so established
connections and policy survive, and the new agent reconciles instead of flushing.

Monitoring (--metrics-address):
  /metrics   Prometheus metrics: verdicts and drops by reason, redirects, map fill
             levels, CNI calls
  /healthz   the process is up
  /readyz    synced with the API server and reconciled

Uninstall: SIGTERM alone (a rolling update, a drain, a deleted pod) removes nothing.
The agent watches the DaemonSet that owns its pod (--pod-name in --namespace); stopped
while that DaemonSet is being deleted (an uninstall), it removes nodemesh from the node
(as 'nodemesh-agent cleanup' does) and records the Event ` + api.NodeCleanedReason + ` on the
DaemonSet. Nothing else removes enforcement from a node.

IPv4 only: IPv6 is not policed, so the agent turns it off on the pods' veths and the
eBPF programs drop it (metric reason ipv6-unpoliced). A node with an IPv6 pod CIDR
(dual-stack) gets the same: its pods have no IPv6 through nodemesh yet.

Examples:
  # In a DaemonSet (NODE_NAME from the downward API, pod CIDR from the Node):
  nodemesh-agent run

  # By hand, with an explicit kubeconfig and pod CIDR:
  nodemesh-agent run --kubeconfig ~/.kube/config --node-name node-1 --pod-cidr 10.244.1.0/24`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runAgent(ctx, o, streams)
		},
	}
	o.kube.Add(cmd)
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default: $NODE_NAME)")
	f.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the agent's pod's namespace (default: $POD_NAMESPACE)")
	f.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "the agent's pod: the deletion of the DaemonSet owning it (an uninstall) removes nodemesh from the node when the agent stops; empty: never (default: $POD_NAME)")
	f.StringVar(&o.sysctlNetDir, "proc-sys-net", agent.DefaultSysctlNetDir, "a view of /proc/sys/net the agent can write (in a container: a hostPath mount of the host's, /proc/sys being read-only)")
	f.StringVar(&o.podCIDR, "pod-cidr", "", "this node's IPv4 pod CIDR (default: the Node's spec.podCIDRs)")
	f.StringVar(&o.bpffs, "bpffs", "/sys/fs/bpf", "a mounted bpffs; programs, maps and links are pinned under <bpffs>/nodemesh")
	f.StringVar(&o.cgroupRoot, "cgroup-root", "", "the cgroup v2 directory the redirection programs attach to (default: the cgroup v2 root, /sys/fs/cgroup or /sys/fs/cgroup/unified)")
	f.StringVar(&o.stateDir, "state-dir", "/var/lib/nodemesh", "where address leases and endpoint records are kept (must survive agent restarts)")
	f.StringVar(&o.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "where the CNI configuration ("+agent.CNIConfFile+") is written; empty: do not write it")
	f.StringVar(&o.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "where the "+cni.PluginType+" plugin is installed; empty: do not install it")
	f.StringVar(&o.cniPlugin, "cni-plugin", "", "the plugin binary to install (default: "+cni.PluginType+" next to this executable)")
	f.StringVar(&o.cniSocket, "cni-socket", "/var/run/nodemesh/cni.sock", "the unix socket the plugin talks to")
	f.StringVar(&o.proxyAddress, "proxy-address", "", "where opted-in pods' connections to Services are redirected (default: the pod CIDR's gateway address, port 15001)")
	f.StringSliceVar(&o.nodeIPs, "node-ip", nil, "addresses of this node that policy treats as the host (repeatable; the pod gateway always is)")
	f.StringVar(&o.metricsAddress, "metrics-address", fmt.Sprintf(":%d", api.AgentMetricsPort), "address of the metrics and health HTTP server; empty: none")
	f.BoolVar(&o.allowHostIngress, "allow-host-ingress", true, "let the node (kubelet probes) reach pods that NetworkPolicies isolate for ingress")
	f.StringVar(&o.rootNamespace, "root-namespace", "istio-system", "Istio's root namespace: its AuthorizationPolicies apply to every namespace")
	f.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "the mesh's trust domain: AuthorizationPolicy principals of another trust domain (not an alias) match no pod")
	f.StringSliceVar(&o.tdAliases, "trust-domain-alias", nil, "trust domains the mesh also answers to (Istio's meshConfig trustDomainAliases; repeatable)")
	f.IntVar(&o.mtu, "mtu", 0, "MTU of pod interfaces (default: the uplinks' smallest MTU, less "+strconv.Itoa(agent.VXLANOverhead)+" bytes in vxlan mode)")
	f.StringVar(&o.routingMode, "routing-mode", agent.RoutingNative, "how pods reach other nodes' pods: native (a route to each node's pod CIDR via its InternalIP; the nodes share a link), vxlan (encapsulated between the nodes' addresses), none (something else routes pod CIDRs)")
	f.StringVar(&o.cniMode, "cni-mode", agent.CNIStandalone, "standalone: nodemesh is the node's CNI (writes "+agent.CNIConfFile+", which sorts first); chained: nodemesh-cni is appended to the first conflist of --cni-conf-dir and polices the pods the primary CNI sets up (use --routing-mode none: the primary CNI routes)")
	f.IntVar(&o.vxlanPort, "vxlan-port", agent.DefaultVXLANPort, "UDP port of the VXLAN overlay (every node must use the same)")
	f.IntVar(&o.vxlanVNI, "vxlan-vni", agent.DefaultVXLANVNI, "VXLAN network identifier of the pod network (every node must use the same)")
	f.DurationVar(&o.attachQuiet, "tcx-quiet-period", 200*time.Millisecond, "CNI ADD attaches the policy programs as cls_bpf filters (fast); they move to tcx links once CNI calls have been quiet this long")
	f.DurationVar(&o.identityGCPeriod, "identity-gc-period", 5*time.Minute, "how often the agent holding the Lease "+agent.IdentityGCLease+" (in --namespace) looks for identities no pod uses")
	f.DurationVar(&o.identityGCGrace, "identity-gc-grace", 15*time.Minute, "how long an identity must have been unused before it is deleted (keep it above the resync period)")
	f.BoolVar(&o.noProxyReturn, "no-proxy-return", false, "do not hand replies to the node proxy's transparent (original_src) connections back to it: for a node proxy that connects from the node's own address")
	f.BoolVar(&o.istioMTLS, "istio-mtls", false, "the node Envoy terminates Istio mTLS for sidecar clients (the controller's --istio-mtls, the chart's mtls.enabled): also capture the pod ports a DestinationRule ISTIO_MUTUAL may make them send mTLS to; watches DestinationRules")
	f.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "the Kubernetes DNS domain of Services' hosts, which DestinationRules name (with --istio-mtls)")
	f.BoolVar(&o.noInboundCapture, "no-inbound-capture", false, "do not capture connections to pod ports under an AuthorizationPolicy or RequestAuthentication with HTTP facts into the node Envoy's inbound listener (:15006); their HTTP rules are then enforced by their L4 projection, which denies more")
	f.StringSliceVar(&o.uplinks, "uplink", nil, "the node's interfaces to other nodes (repeatable; default: the interfaces of the IPv4 default routes)")
	f.BoolVar(&o.masquerade, "masquerade", false, "SNAT this node's pods' IPv4 traffic leaving through an uplink to a destination outside the cluster (not a pod CIDR, a Node's address, link-local or --non-masquerade-cidr) to the uplink's address, in eBPF")
	f.StringSliceVar(&o.nonMasqCIDRs, "non-masquerade-cidr", nil, "destinations (IPv4 CIDRs) pods reach with their own address even with --masquerade (repeatable or comma-separated)")
	f.StringVar(&o.masqPorts, "masquerade-port-range", "", "NAT source ports (min-max) for --masquerade, outside the node's net.ipv4.ip_local_port_range (default: the ports above it)")
	f.BoolVar(&o.noIdentityGC, "no-identity-gc", false, "never collect unused identities on this agent")
	f.BoolVar(&o.socketLB, "socket-lb", true, "load balance connections to Services at the socket (kube-proxy replacement: ClusterIP and NodePort, TCP and UDP, to ready endpoints); false: leave Services to kube-proxy")
	f.DurationVar(&o.attachMaxDelay, "tcx-max-delay", 2*time.Second, "move a pod's programs to tcx at the latest this long after its ADD, quiet or not")
	o.log.Add(cmd, "info", "json")
	f.StringVar(&o.nodeNetns, "node-netns", "", "network namespace of the node (tests; default: the agent's own)")
	_ = f.MarkHidden("node-netns")
	return cmd
}

func defaultCgroupRoot() (string, error) {
	dir, err := bpf.CgroupV2Root()
	if err != nil {
		return "", fmt.Errorf("%w (set --cgroup-root)", err)
	}
	return dir, nil
}

func runAgent(ctx context.Context, o *agentOptions, streams IO) error {
	log, err := o.log.Logger(streams.ErrOut)
	if err != nil {
		return err
	}
	if o.nodeName == "" {
		return clibase.UsageError("--node-name is required (or set NODE_NAME)")
	}
	cfg, err := o.kube.RestConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ac := agent.Config{
		NodeName: o.nodeName, Namespace: o.namespace, PodName: o.podName, SysctlNetDir: o.sysctlNetDir, Kube: kube, Dynamic: dyn, BPFFS: o.bpffs, CgroupRoot: o.cgroupRoot,
		StateDir: o.stateDir, CNIConfDir: o.cniConfDir, CNIBinDir: o.cniBinDir, CNIPlugin: o.cniPlugin,
		CNISocket: o.cniSocket, NodeNetns: o.nodeNetns, MTU: o.mtu, AllowHostIngress: o.allowHostIngress, Logger: log,
		RootNamespace: o.rootNamespace, TrustDomain: o.trustDomain, TrustDomainAliases: o.tdAliases,
		AttachQuietPeriod: o.attachQuiet, AttachMaxDelay: o.attachMaxDelay,
		IdentityGCPeriod: o.identityGCPeriod, IdentityGCGrace: o.identityGCGrace, DisableIdentityGC: o.noIdentityGC,
		DisableProxyReturn: o.noProxyReturn, DisableInboundCapture: o.noInboundCapture, IstioMTLS: o.istioMTLS, ClusterDomain: o.clusterDomain, Uplinks: o.uplinks, DisableSocketLB: !o.socketLB,
		RoutingMode: o.routingMode, VXLANPort: o.vxlanPort, VXLANVNI: o.vxlanVNI, CNIMode: o.cniMode,
	}
	for _, c := range o.nonMasqCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil || !p.Addr().Is4() {
			return clibase.UsageError("--non-masquerade-cidr %q: want an IPv4 CIDR such as 10.0.0.0/8", c)
		}
		ac.NonMasqueradeCIDRs = append(ac.NonMasqueradeCIDRs, p)
	}
	ac.Masquerade, ac.MasqueradePortRange = o.masquerade, o.masqPorts
	if !slices.Contains(agent.CNIModes, o.cniMode) {
		return clibase.UsageError("--cni-mode %q: want one of %s", o.cniMode, strings.Join(agent.CNIModes, ", "))
	}
	if !slices.Contains(agent.RoutingModes, o.routingMode) {
		return clibase.UsageError("--routing-mode %q: want one of %s", o.routingMode, strings.Join(agent.RoutingModes, ", "))
	}
	if o.vxlanPort < 1 || o.vxlanPort > 65535 {
		return clibase.UsageError("--vxlan-port %d: want 1 to 65535", o.vxlanPort)
	}
	if o.vxlanVNI < 1 || o.vxlanVNI > 1<<24-1 {
		return clibase.UsageError("--vxlan-vni %d: want 1 to 16777215", o.vxlanVNI)
	}
	if ac.CgroupRoot == "" {
		if ac.CgroupRoot, err = defaultCgroupRoot(); err != nil {
			return err
		}
	}
	if ac.CNIPlugin == "" && ac.CNIBinDir != "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), cni.PluginType); fileExists(p) {
				ac.CNIPlugin = p
			}
		}
	}
	if o.podCIDR == "" {
		node, err := kube.CoreV1().Nodes().Get(ctx, o.nodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read node %s for its pod CIDR (or set --pod-cidr): %w", o.nodeName, err)
		}
		for _, c := range append([]string{node.Spec.PodCIDR}, node.Spec.PodCIDRs...) {
			p, err := netip.ParsePrefix(c)
			switch {
			case err != nil:
			case p.Addr().Is4() && o.podCIDR == "":
				o.podCIDR = c
			case p.Addr().Is6():
				log.Warn("the node has an IPv6 pod CIDR (dual-stack): nodemesh is IPv4-only, its pods get no IPv6 (turned off on their interfaces, dropped by the policy programs)", "cidr", c)
			}
		}
		if o.podCIDR == "" {
			return fmt.Errorf("node %s has no IPv4 pod CIDR; set --pod-cidr", o.nodeName)
		}
	}
	if ac.PodCIDR, err = netip.ParsePrefix(o.podCIDR); err != nil || !ac.PodCIDR.Addr().Is4() {
		return clibase.UsageError("--pod-cidr %q: want an IPv4 prefix such as 10.244.1.0/24", o.podCIDR)
	}
	if o.proxyAddress != "" {
		if ac.ProxyAddress, err = netip.ParseAddrPort(o.proxyAddress); err != nil {
			return clibase.UsageError("--proxy-address %q: want ip:port", o.proxyAddress)
		}
	}
	for _, s := range o.nodeIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is4() {
			return clibase.UsageError("--node-ip %q: want an IPv4 address", s)
		}
		ac.NodeIPs = append(ac.NodeIPs, ip)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := agent.New(ac, reg)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx, o.metricsAddress)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

type cleanupOptions struct {
	bpffs, cniConfDir, cniBinDir, stateDir string
	sysctlNetDir                           string
	log                                    clibase.LogFlags
}

func newCleanupCommand(streams IO) *cobra.Command {
	o := &cleanupOptions{}
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove nodemesh from this node (for nodes whose agent did not answer an uninstall)",
		Long: `Cleanup removes what the agent put on this node: the CNI configuration
(` + agent.CNIConfFile + `) and the ` + cni.PluginType + ` plugin, the eBPF programs attached
to pods' veths and to the cgroup (by unpinning their links under --bpffs/nodemesh),
and the maps' pins. Pods still running keep their veths and routes (without policy
or redirection) until they are deleted; their records and address leases in
--state-dir stay with them, and are removed once no such pod is left.

'nodemesh uninstall' deletes the agent DaemonSet, whose agents do this as they stop,
and lists the nodes that did not answer; run it there, as root, with the values the
agent ran with. Stop the agent first (delete its DaemonSet): a running agent holds
its programs attached and writes its configuration again. Running it twice is safe.

Example:
  nodemesh-agent cleanup --bpffs /sys/fs/bpf --cni-conf-dir /etc/cni/net.d --cni-bin-dir /opt/cni/bin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := o.log.Logger(streams.ErrOut)
			if err != nil {
				return err
			}
			res, err := agent.Cleanup(agent.CleanupConfig{BPFFS: o.bpffs, CNIConfDir: o.cniConfDir, CNIBinDir: o.cniBinDir,
				StateDir: o.stateDir, SysctlNetDir: o.sysctlNetDir, Logger: log})
			if res != nil {
				fmt.Fprintf(streams.Out, "detached %d links, deleted %d cls_bpf filters, removed %d map pins\n", res.Links, res.Filters, res.Pins)
				for _, f := range res.Files {
					fmt.Fprintf(streams.Out, "removed %s\n", f)
				}
				if len(res.LivePods) > 0 {
					fmt.Fprintf(streams.Out, "left %d pods' veths (%s) and their records in %s: they go when the pods are deleted\n",
						len(res.LivePods), strings.Join(res.LivePods, ", "), o.stateDir)
				} else if res.StateRemoved {
					fmt.Fprintf(streams.Out, "removed the endpoint records and address leases in %s\n", o.stateDir)
				}
			}
			if err != nil {
				return fmt.Errorf("cleanup incomplete: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.bpffs, "bpffs", "/sys/fs/bpf", "the bpffs the agent pinned under (<bpffs>/nodemesh)")
	f.StringVar(&o.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "where the agent wrote "+agent.CNIConfFile+"; empty: leave it")
	f.StringVar(&o.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "where the agent installed "+cni.PluginType+"; empty: leave it")
	f.StringVar(&o.stateDir, "state-dir", "/var/lib/nodemesh", "the agent's address leases and endpoint records")
	f.StringVar(&o.sysctlNetDir, "proc-sys-net", agent.DefaultSysctlNetDir, "a writable view of /proc/sys/net")
	o.log.Add(cmd, "warn", "text")
	return cmd
}

//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// cluster is two nodes, each a network namespace with its own agent
// process, bpffs, cgroup and state directory, joined by an "underlay" veth
// (ul0 at both ends, 192.168.<n>.1 and .2/24), with Node objects in the
// one API server carrying their pod CIDRs and InternalIPs.
type cluster struct {
	t      testing.TB
	env    *kubetest.Env
	mode   string
	nodes  [2]*node
	nodeIP [2]string
}

// underlayMTU is the underlay's MTU; the pods' is derived from it.
const underlayMTU = 1500

func newCluster(t testing.TB, env *kubetest.Env, cgroupV2, mode string, subnet int) *cluster {
	t.Helper()
	ctx := context.Background()
	c := &cluster{t: t, env: env, mode: mode}
	for i := range c.nodes {
		n := newNode(t, cgroupV2, env.Kubeconfig)
		n.podCIDR = fmt.Sprintf("10.%d.%d.0/24", subnet, i+1)
		c.nodeIP[i] = fmt.Sprintf("192.168.%d.%d", subnet, i+1)
		n.agentArgs = []string{"--routing-mode", mode, "--uplink", "ul0"}
		c.nodes[i] = n
	}
	c.nodes[1].bin = c.nodes[0].bin
	buildBinaries(t, c.nodes[0].bin)
	n0, n1 := c.nodes[0].netnsName("node"), c.nodes[1].netnsName("node")
	run(t, "ip", "-n", n0, "link", "add", "ul0", "mtu", strconv.Itoa(underlayMTU), "type", "veth", "peer", "name", "ul0", "mtu", strconv.Itoa(underlayMTU), "netns", n1)
	for i, ns := range []string{n0, n1} {
		run(t, "ip", "-n", ns, "addr", "add", c.nodeIP[i]+"/24", "dev", "ul0")
		run(t, "ip", "-n", ns, "link", "set", "ul0", "up")
	}
	for i, n := range c.nodes {
		node, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.name},
			Spec:       corev1.NodeSpec{PodCIDR: n.podCIDR, PodCIDRs: []string{n.podCIDR}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.CoreV1().Nodes().Delete(context.Background(), n.name, metav1.DeleteOptions{}) })
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: c.nodeIP[i]}, {Type: corev1.NodeHostName, Address: n.name}}
		if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.nodes {
		n.startAgent()
	}
	return c
}

// pod creates the Pod object on node i, calls CNI ADD there and reports
// the address in the Pod's status, as the kubelet does.
func (c *cluster) pod(i int, ns, name string, labels map[string]string) *pod {
	t := c.t
	t.Helper()
	ctx := context.Background()
	n := c.nodes[i]
	_, err := c.env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := n.addPod(ns, name)
	kp, err := c.env.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kp.Status.Phase = corev1.PodRunning
	kp.Status.PodIP, kp.Status.PodIPs = p.ip, []corev1.PodIP{{IP: p.ip}}
	if _, err := c.env.Client.CoreV1().Pods(ns).UpdateStatus(ctx, kp, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// ipOut runs ip (or bridge) in node i's namespace and returns its output.
func (c *cluster) ipOut(i int, cmd string, args ...string) string {
	c.t.Helper()
	out, err := exec.Command(cmd, append([]string{"-n", c.nodes[i].netnsName("node")}, args...)...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", cmd, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCrossNode: pods on two nodes reach each other over real TCP, both
// ways, in native routing and in VXLAN mode; a NetworkPolicy on one node
// allows a pod of the other by its identity and denies another; cutting the
// underlay cuts them off and restoring it heals them; the pods' MTU leaves
// room for encapsulation (a full-size transfer goes through); a Node deleted
// takes its routes (and FDB and neighbour entries) away; the node cleanup
// removes the rest once no pod is left.
func TestCrossNode(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	if err := env.InstallCRDs(context.Background(), crds.All()); err != nil {
		t.Fatal(err)
	}
	for i, mode := range []string{agent.RoutingNative, agent.RoutingVXLAN} {
		t.Run(mode, func(t *testing.T) { crossNode(t, env, cgroupV2, mode, 80+i) })
	}
}

func crossNode(t *testing.T, env *kubetest.Env, cgroupV2, mode string, subnet int) {
	ctx := context.Background()
	c := newCluster(t, env, cgroupV2, mode, subnet)
	nsA := env.Namespace(t, "xnode-a", nil)
	nsB := env.Namespace(t, "xnode-b", nil)
	server0 := c.pod(0, nsA, "server0", map[string]string{"app": "server"})
	client0 := c.pod(0, nsA, "client0", map[string]string{"app": "client"})
	other0 := c.pod(0, nsB, "other0", map[string]string{"app": "other"})
	server1 := c.pod(1, nsA, "server1", map[string]string{"app": "server"})
	client1 := c.pod(1, nsA, "client1", map[string]string{"app": "client"})
	n0, n1 := c.nodes[0], c.nodes[1]
	n0.daemon(server0.netns, server0.cgroup, "serve", "server0")
	n1.daemon(server1.netns, server1.cgroup, "serve", "server1")
	t.Logf("%s: node0 %s pods %s, node1 %s pods %s", mode, n0.podCIDR, server0.ip, n1.podCIDR, server1.ip)

	reach := func(what string, n *node, p *pod, target string, want bool) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() error {
			out, err := n.exec(p, "get", target, "700ms")
			switch {
			case want && err != nil:
				return fmt.Errorf("want allowed, got %v: %s", err, out)
			case !want && err == nil:
				return fmt.Errorf("want denied, got through: %s", out)
			}
			return nil
		})
	}
	url := func(p *pod) string { return "http://" + p.ip + ":8080/" }

	t.Run("pod to pod across nodes, both ways", func(t *testing.T) {
		reach("client0 (node0) → server1 (node1)", n0, client0, url(server1), allowed)
		reach("client1 (node1) → server0 (node0)", n1, client1, url(server0), allowed)
		out, err := n0.exec(client0, "get", url(server1), "2s")
		if err != nil || !strings.Contains(out, "from server1 to "+client0.ip+":") {
			t.Errorf("server1 must see client0's own address (no masquerading between nodes): %v %q", err, out)
		}
	})

	t.Run("the routes are the agent's, in the mode's shape", func(t *testing.T) {
		got := c.ipOut(0, "ip", "route", "show", "proto", strconv.Itoa(int(agent.RouteProtocol)))
		want := n1.podCIDR + " via " + c.nodeIP[1]
		if mode == agent.RoutingVXLAN {
			want = n1.podCIDR + " via " + strings.TrimSuffix(n1.podCIDR, "/24") + " dev " + agent.VXLANDevice
		}
		if !strings.Contains(got, want) {
			t.Errorf("node0's routes %q lack %q", got, want)
		}
	})

	t.Run("another's route to a Node's pod CIDR is not replaced", func(t *testing.T) {
		taken, free := fmt.Sprintf("10.%d.9.0/24", subnet), fmt.Sprintf("10.%d.8.0/24", subnet)
		run(t, "ip", "-n", n0.netnsName("node"), "route", "add", taken, "via", c.nodeIP[1], "proto", "static")
		for i, cidr := range []string{taken, free} {
			name := fmt.Sprintf("%s-extra%d", n0.name, i)
			node, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.168.%d.%d", subnet, 20+i)}}
			if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			defer env.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
		}
		eventually(t, 20*time.Second, "the free CIDR routed", func() error {
			if out := c.ipOut(0, "ip", "route", "show", "proto", strconv.Itoa(int(agent.RouteProtocol))); !strings.Contains(out, free) {
				return fmt.Errorf("no route to %s: %s", free, out)
			}
			return nil
		})
		if out := c.ipOut(0, "ip", "route", "show", taken); !strings.Contains(out, "via "+c.nodeIP[1]) || !strings.Contains(out, "proto static") {
			t.Errorf("the static route to %s was replaced: %s", taken, out)
		}
		run(t, "ip", "-n", n0.netnsName("node"), "route", "del", taken)
	})

	t.Run("MTU", func(t *testing.T) {
		wantMTU := underlayMTU
		if mode == agent.RoutingVXLAN {
			wantMTU -= agent.VXLANOverhead
		}
		for _, p := range []*pod{server0, client1} {
			out, err := exec.Command("ip", "-n", p.netns, "-o", "link", "show", "eth0").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "mtu "+strconv.Itoa(wantMTU)+" ") {
				t.Errorf("pod %s eth0: want mtu %d: %v %s", p.name, wantMTU, err, out)
			}
		}
		// Full-size segments both ways through the underlay, with DF (TCP
		// sets it): a pod MTU that left no room for the encapsulation
		// would lose them or fragment the outer packets.
		sink1 := c.pod(1, nsA, "sink1", map[string]string{"app": "sink"})
		n1.daemon(sink1.netns, sink1.cgroup, "perfserve")
		out, err := n0.exec(client0, "bulk", fmt.Sprintf("%s:%d", sink1.ip, perfSinkPort), strconv.Itoa(64<<20))
		if err != nil {
			t.Fatalf("64 MiB node0 → node1: %v %s", err, out)
		}
		t.Logf("64 MiB client0 → sink1: %s", out)
	})

	t.Run("NetworkPolicy across nodes: the remote client's identity allowed, another pod denied", func(t *testing.T) {
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "server-from-client"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
				}},
			},
		}
		if _, err := env.Client.NetworkingV1().NetworkPolicies(nsA).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("other0 (node0, another namespace) → server1 (node1) denied", n0, other0, url(server1), denied)
		reach("client0 (node0) → server1 (node1) allowed by its identity", n0, client0, url(server1), allowed)
		reach("client1 (node1) → server0 (node0) allowed by its identity", n1, client1, url(server0), allowed)
		if err := env.Client.NetworkingV1().NetworkPolicies(nsA).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("other0 → server1 once the policy is gone", n0, other0, url(server1), allowed)
	})

	t.Run("an agent restart keeps the routes and the vxlan device in place", func(t *testing.T) {
		routes := c.ipOut(0, "ip", "route", "show", "proto", strconv.Itoa(int(agent.RouteProtocol)))
		links := c.ipOut(0, "ip", "-o", "link", "show")
		n0.stopAgent(syscall.SIGKILL)
		n0.startAgent()
		if got := c.ipOut(0, "ip", "route", "show", "proto", strconv.Itoa(int(agent.RouteProtocol))); got != routes {
			t.Errorf("routes changed across the restart:\n%s\nwant\n%s", got, routes)
		}
		if mode == agent.RoutingVXLAN {
			// Same ifindex: the device was kept, not re-created.
			before, after := linkLine(links, agent.VXLANDevice), linkLine(c.ipOut(0, "ip", "-o", "link", "show"), agent.VXLANDevice)
			if before == "" || strings.Fields(before)[0] != strings.Fields(after + " x")[0] {
				t.Errorf("%s re-created by the restart: %q, then %q", agent.VXLANDevice, before, after)
			}
		}
		reach("client0 → server1 after the restart", n0, client0, url(server1), allowed)
	})

	if mode == agent.RoutingVXLAN {
		t.Run("another VNI: the device is re-created, its pinned uplink program attached afresh", func(t *testing.T) {
			for _, n := range c.nodes {
				n.stopAgent(syscall.SIGTERM)
				n.agentArgs = append(n.agentArgs, "--vxlan-vni", "7")
				n.startAgent()
			}
			if out := c.ipOut(0, "ip", "-d", "-o", "link", "show", agent.VXLANDevice); !strings.Contains(out, "vxlan id 7 ") {
				t.Errorf("%s: want vxlan id 7: %s", agent.VXLANDevice, out)
			}
			reach("client0 → server1 on VNI 7", n0, client0, url(server1), allowed)
			reach("client1 → server0 on VNI 7", n1, client1, url(server0), allowed)
		})
	}

	t.Run("cutting the underlay breaks cross-node traffic, restoring it heals it", func(t *testing.T) {
		run(t, "ip", "-n", n0.netnsName("node"), "link", "set", "ul0", "down")
		reach("client0 → server1 with the underlay down", n0, client0, url(server1), denied)
		reach("client0 → server0 on its own node still", n0, client0, url(server0), allowed)
		run(t, "ip", "-n", n0.netnsName("node"), "link", "set", "ul0", "up")
		reach("client0 → server1 once the underlay is back", n0, client0, url(server1), allowed)
		reach("client1 → server0 once the underlay is back", n1, client1, url(server0), allowed)
	})

	t.Run("a Node deleted takes its routes away", func(t *testing.T) {
		if err := env.Client.CoreV1().Nodes().Delete(ctx, n1.name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "node1's routes gone from node0", func() error {
			if out := c.ipOut(0, "ip", "route", "show", "proto", strconv.Itoa(int(agent.RouteProtocol))); strings.TrimSpace(out) != "" {
				return fmt.Errorf("routes left: %s", out)
			}
			if mode == agent.RoutingVXLAN {
				if out := c.ipOut(0, "bridge", "fdb", "show", "dev", agent.VXLANDevice); strings.Contains(out, c.nodeIP[1]) {
					return fmt.Errorf("FDB entries left: %s", out)
				}
				if out := c.ipOut(0, "ip", "neigh", "show", "dev", agent.VXLANDevice); strings.TrimSpace(out) != "" {
					return fmt.Errorf("neighbours left: %s", out)
				}
			}
			return nil
		})
		reach("client0 → server1 without a route", n0, client0, url(server1), denied)
	})

	t.Run("the node cleanup removes the routing once no pod is left", func(t *testing.T) {
		n0.stopAgent(syscall.SIGTERM)
		n0.mu.Lock()
		procs := append([]*proc(nil), n0.procs...)
		n0.mu.Unlock()
		for _, p := range procs { // the pods' processes hold their namespaces
			p.Kill()
			p.Wait()
		}
		for _, p := range []*pod{server0, client0, other0} {
			run(t, "ip", "netns", "del", p.netns) // the pods go (their veths with them)
		}
		// The kernel dismantles a namespace after the last reference goes.
		eventually(t, 20*time.Second, "pods' veths gone", func() error {
			for _, line := range strings.Split(c.ipOut(0, "ip", "-o", "link", "show"), "\n") {
				if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "nm") {
					return fmt.Errorf("left: %s", f[1])
				}
			}
			return nil
		})
		out, err := exec.Command("ip", "netns", "exec", n0.netnsName("node"), n0.bin+"/nodemesh-agent", "cleanup",
			"--bpffs", n0.bpffs, "--cni-conf-dir", n0.cniConf, "--cni-bin-dir", n0.cniBin, "--state-dir", n0.stateDir).CombinedOutput()
		if err != nil {
			t.Fatalf("cleanup: %v\n%s", err, out)
		}
		if out := c.ipOut(0, "ip", "route", "show", "proto", strconv.Itoa(int(agent.RouteProtocol))); strings.TrimSpace(out) != "" {
			t.Errorf("routes left after cleanup: %s", out)
		}
		if out := c.ipOut(0, "ip", "-o", "link", "show"); strings.Contains(out, agent.VXLANDevice) {
			t.Errorf("%s left after cleanup: %s", agent.VXLANDevice, out)
		}
	})
}

// linkLine is the line of `ip -o link show` output for name.
func linkLine(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.TrimSuffix(f[1], ":") == name {
			return line
		}
	}
	return ""
}

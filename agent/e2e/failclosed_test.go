//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// TestFailClosed: what the policy programs do not police does not get
// past them. A pod isolated by a default-deny NetworkPolicy was reachable,
// and could reach the node, over IPv6 (the fe80:: addresses of its veth);
// and a pod could get around its anti-spoofing check (and so pass for any
// other pod) by tagging its frames twice with VLAN 0, which the program
// took for not-IPv4 and the kernel delivers as IPv4 once it has stripped
// both tags. Pods are made by the CNI plugin binary, as in TestDatapath.
func TestFailClosed(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	buildBinaries(t, n.bin)
	ns := env.Namespace(t, "e2e-failclosed", nil)
	for _, name := range []string{"iso", "mallory", "open"} {
		_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	// iso: default deny, both ways.
	_, err := env.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "iso-deny-all"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "iso"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	iso := n.addPod(ns, "iso")
	mallory := n.addPod(ns, "mallory")
	open := n.addPod(ns, "open")
	node := n.netnsName("node")
	hostVeth := agent.HostVethName(iso.containerID, "eth0")

	t.Run("CNI ADD refuses a pod the API server schedules to another node, or to none", func(t *testing.T) {
		leases, _ := filepath.Glob(filepath.Join(n.stateDir, "ipam", "leases", "*"))
		for name, nodeName := range map[string]string{"elsewhere": "another-node", "unscheduled": ""} {
			_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "open"}},
				Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p, out, err := n.tryAddPod(ns, name)
			want := "is not scheduled to any node, not to this node (" + n.name + ")"
			if nodeName != "" {
				want = "is scheduled to node " + nodeName + ", not to this node (" + n.name + ")"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("ADD %s: %v (output %s), want an error saying %q", name, err, out, want)
			}
			if out, _ := execOut("ip", "-n", node, "-o", "link"); strings.Contains(out, agent.HostVethName(p.containerID, "eth0")) {
				t.Errorf("ADD %s left a host veth: %s", name, out)
			}
			if out, _ := execOut("ip", "-n", p.netns, "-o", "link"); strings.Contains(out, "eth0") {
				t.Errorf("ADD %s left eth0 in the pod: %s", name, out)
			}
		}
		if after, _ := filepath.Glob(filepath.Join(n.stateDir, "ipam", "leases", "*")); len(after) != len(leases) {
			t.Errorf("leases %v → %v", leases, after)
		}
	})

	t.Run("IPv6 is off on both ends of the pods' veths", func(t *testing.T) {
		for _, p := range []*pod{iso, mallory, open} {
			veth := agent.HostVethName(p.containerID, "eth0")
			for _, end := range []struct{ netns, ifName string }{{node, veth}, {p.netns, "eth0"}} {
				if got := n.sysctl(t, end.netns, "net/ipv6/conf/"+end.ifName+"/disable_ipv6"); got != "1" {
					t.Errorf("%s: disable_ipv6 of %s in %s is %s, want 1", p.name, end.ifName, end.netns, got)
				}
				if out, _ := execOut("ip", "-n", end.netns, "-6", "-o", "addr", "show", "dev", end.ifName); strings.TrimSpace(out) != "" {
					t.Errorf("%s: %s has IPv6 addresses: %s", p.name, end.ifName, out)
				}
			}
		}
	})

	// Servers on IPv6 only: on the node, and in the isolated pod.
	n.daemon(node, filepath.Join(n.cgroupRoot, "node6"), "serve6", "9100")
	n.daemon(iso.netns, iso.cgroup, "serve6", "9101")
	hostLL := linkLocal(t, iso.result.Interfaces[0].Mac)
	podLL := linkLocal(t, iso.result.Interfaces[1].Mac)
	// unreachable checks that no IPv6 connection gets through, pod to node
	// and node to pod, to the addresses given.
	unreachable := func(t *testing.T, toNode, toPod string) {
		t.Helper()
		if out, err := n.exec(iso, "connect6", "["+toNode+"]:9100", "1s"); err == nil {
			t.Errorf("isolated pod → node [%s]:9100 got through: %s", toNode, out)
		}
		if out, err := n.execIn(node, filepath.Join(n.cgroupRoot, "node6"), "connect6", "["+toPod+"]:9101", "1s"); err == nil {
			t.Errorf("node → isolated pod [%s]:9101 got through: %s", toPod, out)
		}
	}

	t.Run("the fe80:: repro: IPv6 link-local does not reach or leave an isolated pod", func(t *testing.T) {
		// Where IPv6 is on (the code before this fix), the link-local
		// addresses are usable once their duplicate address detection
		// is over; wait for that, so that the check below is not
		// passed by a tentative address.
		n.ipv6Settled(t, node, hostVeth)
		n.ipv6Settled(t, iso.netns, "eth0")
		unreachable(t, hostLL+"%eth0", podLL+"%"+hostVeth)
	})

	t.Run("IPv6 forced on: the programs drop it, link-local and global, both ways", func(t *testing.T) {
		// What the agent turned off, turned on again (a pod with
		// NET_ADMIN can do it on its side; the node side stands for a
		// veth the agent did not make, or a kernel it could not tell):
		// the policy programs alone must stop IPv6.
		before := n.metricValues(t)
		for _, end := range []struct{ netns, ifName, global, peer string }{
			{node, hostVeth, "fd00:77::1", "fd00:77::2"},
			{iso.netns, "eth0", "fd00:77::2", "fd00:77::1"},
		} {
			run(t, "ip", "netns", "exec", end.netns, "sysctl", "-q", "-w", "net.ipv6.conf."+end.ifName+".accept_dad=0", "net.ipv6.conf."+end.ifName+".disable_ipv6=0")
			run(t, "ip", "-n", end.netns, "-6", "addr", "add", end.global+"/128", "dev", end.ifName, "nodad")
			run(t, "ip", "-n", end.netns, "-6", "route", "add", end.peer+"/128", "dev", end.ifName)
		}
		n.ipv6Settled(t, node, hostVeth)
		n.ipv6Settled(t, iso.netns, "eth0")
		unreachable(t, hostLL+"%eth0", podLL+"%"+hostVeth)
		unreachable(t, "fd00:77::1", "fd00:77::2")
		after := n.metricValues(t)
		for _, dir := range []string{"ingress", "egress"} {
			series := `nodemesh_datapath_packets_total{action="drop",direction="` + dir + `",reason="ipv6-unpoliced"}`
			if after[series] <= before[series] {
				t.Errorf("%s: %v → %v, want more", series, before[series], after[series])
			}
		}
	})

	t.Run("a VLAN tag does not get around anti-spoofing", func(t *testing.T) {
		// mallory sends UDP to a server on the node: first with open's
		// address as its source, tagged twice (802.1ad and 802.1Q,
		// both VLAN 0), then once tagged (VLAN 0), then untagged, then
		// with its own address tagged (pods have no VLANs), then
		// untagged. Sent in this order from one CPU, they reach the
		// server in this order: only the last may arrive.
		for _, sysctl := range []string{"net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2"} {
			// Loose reverse-path filtering, a common default
			// (systemd's): open's address is routable, so only
			// the program stands between mallory and the spoof.
			run(t, "ip", "netns", "exec", node, "sysctl", "-q", "-w", sysctl)
		}
		proc, lines := n.daemon(node, filepath.Join(n.cgroupRoot, "udp"), "udprecv", "9102")
		defer proc.Kill()
		gw := iso.result.IPs[0].Gateway.String()
		before := n.metricValues(t)
		out, err := n.exec(mallory, "rawudp", "eth0", mallory.result.Interfaces[0].Mac,
			"88a8,8100/"+open.ip+"/"+gw+"/9102/double-tagged-spoof",
			"8100,8100/"+open.ip+"/"+gw+"/9102/double-tagged-spoof",
			"8100/"+open.ip+"/"+gw+"/9102/tagged-spoof",
			"-/"+open.ip+"/"+gw+"/9102/untagged-spoof",
			"8100/"+mallory.ip+"/"+gw+"/9102/tagged-own",
			"-/"+mallory.ip+"/"+gw+"/9102/marker")
		if err != nil {
			t.Fatalf("rawudp: %v: %s", err, out)
		}
		for lines.Scan() {
			line := lines.Text()
			if line == mallory.ip+" marker" {
				break
			}
			t.Errorf("the node received %q before mallory's own datagram", line)
		}
		if err := lines.Err(); err != nil {
			t.Fatal(err)
		}
		series := `nodemesh_datapath_packets_total{action="drop",direction="egress",reason="drop-ethertype"}`
		if got := n.metricValues(t)[series] - before[series]; got != 4 {
			t.Errorf("%s moved by %v, want 4 (the tagged frames)", series, got)
		}
	})
}

// linkLocal is the EUI-64 link-local address of mac, the one the kernel
// gives an interface with IPv6 on.
func linkLocal(t *testing.T, mac string) string {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		t.Fatalf("MAC %q: %v", mac, err)
	}
	a := [16]byte{0xfe, 0x80, 8: hw[0] ^ 2, hw[1], hw[2], 0xff, 0xfe, hw[3], hw[4], hw[5]}
	return netip.AddrFrom16(a).String()
}

// sysctl reads a sysctl (path under /proc/sys) in a network namespace.
func (n *node) sysctl(t *testing.T, netns, name string) string {
	t.Helper()
	out, err := execOut("ip", "netns", "exec", netns, "cat", "/proc/sys/"+name)
	if err != nil {
		t.Fatalf("%s in %s: %v %s", name, netns, err, out)
	}
	return strings.TrimSpace(out)
}

// ipv6Settled waits until ifName in netns has no tentative IPv6 address
// (none at all when IPv6 is off).
func (n *node) ipv6Settled(t *testing.T, netns, ifName string) {
	t.Helper()
	eventually(t, 10*time.Second, "IPv6 addresses of "+ifName+" settled", func() error {
		out, err := execOut("ip", "-n", netns, "-6", "-o", "addr", "show", "dev", ifName)
		if err == nil && strings.Contains(out, "tentative") {
			err = fmt.Errorf("tentative: %s", out)
		}
		return err
	})
}

// metricValues scrapes the agent's /metrics into series → value.
func (n *node) metricValues(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(httpGet(t, "http://"+n.metrics+"/metrics"), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

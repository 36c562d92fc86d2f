//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// standIn is a running inbound stand-in (helper mode "inbound") and what
// it has printed so far.
type standIn struct {
	p     *proc
	mu    sync.Mutex
	lines []string
}

// startInbound starts the stand-in with mark on its listener and upMark on
// its upstream connections to the pod.
func (n *node) startInbound(mark, upMark uint32) *standIn {
	n.t.Helper()
	p, sc := n.daemon(n.netnsName("node"), filepath.Join(n.cgroupRoot, "proxy"), "inbound", fmt.Sprint(mark), fmt.Sprint(upMark))
	s := &standIn{p: p}
	go func() {
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			s.mu.Unlock()
		}
	}()
	return s
}

// stop ends the stand-in and waits, so that its port is free.
func (s *standIn) stop() {
	s.p.Kill()
	s.p.Wait()
}

// events are the lines of kind ("accepted", "upstream", ...), their
// fields after the kind.
func (s *standIn) events(kind string) [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]string
	for _, l := range s.lines {
		if f := strings.Fields(l); len(f) > 0 && f[0] == kind {
			out = append(out, f[1:])
		}
	}
	return out
}

// saw reports whether the stand-in accepted a connection from client (an
// address) to pod (address:port).
func (s *standIn) saw(client, pod string) bool {
	return s.sawVia(client, pod, "")
}

// sawVia is saw for connections whose pod address came from how: "origdst"
// (SO_ORIGINAL_DST answered: the node proxy's upstream sent by
// cgroup/connect4), "local" (the local address: captured at tc), "" either.
func (s *standIn) sawVia(client, pod, how string) bool {
	return s.countVia(client, pod, how) > 0
}

// countVia counts the connections sawVia looks for.
func (s *standIn) countVia(client, pod, how string) int {
	n := 0
	for _, e := range s.events("accepted") {
		if len(e) == 3 && strings.HasPrefix(e[0], client+":") && e[1] == pod && (how == "" || e[2] == how) {
			n++
		}
	}
	return n
}

// TestInboundCapture: TCP to a {pod, port} in nm_inbound (a pod under L7
// AuthorizationPolicy) goes to the node proxy's inbound listener — here a
// Go stand-in for the node Envoy (helper mode "inbound": transparent
// listener on 15006 with the proxy's socket mark, original_src towards the
// pod with the inbound cluster's mark 0x539, a 403 for anything but a GET
// standing for RBAC) — from a pod of the node, from another node and from
// the node proxy's own outbound upstream connections (helper mode
// "upstream": transparent, bound to the client pod's address, as Envoy's
// outbound original_src), and nowhere else: not around the proxy when it is
// down, not to a listener that is not the proxy's. The agent does not write
// nm_inbound yet: the test writes the pinned maps the agent shares.
func TestInboundCapture(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	buildBinaries(t, n.bin)
	ns := env.Namespace(t, "e2e-capture", nil)
	// locked is a client the server allows, isolated for egress with no
	// egress allowed.
	for _, p := range []struct {
		name   string
		labels map[string]string
	}{
		{"server", map[string]string{"app": "server"}}, {"client", map[string]string{"app": "client"}},
		{"other", map[string]string{"app": "other"}}, {"locked", map[string]string{"app": "client", "egress": "none"}},
	} {
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: p.labels},
			Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The other node: a netns routed from the node's over a veth, the
	// agent's uplink (from_uplink), holding the address of its client pod.
	const remoteIP, remoteGW = "10.244.78.5", "10.244.78.1"
	rns, link := n.netnsName("remote"), n.id+"-rn"
	run(t, "ip", "netns", "add", rns) // n.cleanup deletes it, and with it both ends of the link
	node := n.netnsName("node")
	run(t, "ip", "-n", node, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", rns)
	run(t, "ip", "-n", node, "addr", "add", remoteGW+"/32", "dev", link)
	run(t, "ip", "-n", node, "link", "set", link, "up")
	run(t, "ip", "-n", node, "route", "add", remoteIP+"/32", "dev", link)
	run(t, "ip", "-n", rns, "link", "set", "lo", "up")
	run(t, "ip", "-n", rns, "addr", "add", remoteIP+"/32", "dev", "eth0")
	run(t, "ip", "-n", rns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", rns, "route", "add", remoteGW+"/32", "dev", "eth0", "scope", "link")
	run(t, "ip", "-n", rns, "route", "add", "default", "via", remoteGW)
	remote := &pod{namespace: ns, name: "remote", netns: rns, cgroup: filepath.Join(n.cgroupRoot, "remote")}

	// The datapath alone: the test writes the capture entries itself
	// (TestInboundCaptureByPolicy has the agent decide them).
	n.agentArgs = []string{"--uplink", link, "--no-inbound-capture"}
	n.startAgent()
	server, client, other, locked := n.addPod(ns, "server"), n.addPod(ns, "client"), n.addPod(ns, "other"), n.addPod(ns, "locked")
	n.daemon(server.netns, server.cgroup, "serve", "server")

	// The policies go with the test: its namespace stays Terminating
	// without kube-controller-manager, and the ipBlock of the remote address
	// would give it a CIDR identity in the agents of the tests that follow
	// (TestDatapath uses the same address for a pod it expects unknown).
	for _, name := range []string{"server-ingress", "locked-egress"} {
		t.Cleanup(func() {
			env.Client.NetworkingV1().NetworkPolicies(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
	// The server's L4 ingress policy: client pods and the remote address
	// on 8080 and 9000; other is not allowed.
	tcp := corev1.ProtocolTCP
	ports := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr(intstr.FromInt32(8080))}, {Protocol: &tcp, Port: ptr(intstr.FromInt32(9000))}}
	if _, err := env.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}, Ports: ports},
				{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: remoteIP + "/32"}}}, Ports: ports},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if _, err := env.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "locked-egress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"egress": "none"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	pol, err := bpf.LoadPolicy(bpf.LoadOptions{PinPath: filepath.Join(n.bpffs, "nodemesh", "maps")})
	if err != nil {
		t.Fatal(err)
	}
	defer pol.Close()
	if err := pol.SetInboundProxy(bpf.InboundProxy{Port: bpf.ProxyInboundPort, Mark: agent.ProxyReturnMark, SocketMark: bpf.ProxyInboundSocketMark}); err != nil {
		t.Fatal(err)
	}
	counter := func(r bpf.Reason) uint64 {
		t.Helper()
		c, err := pol.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c[bpf.Ingress][r].Packets
	}
	// The redirection programs' counters (the agent's pinned map).
	red, err := bpf.LoadRedirect(bpf.LoadOptions{PinPath: filepath.Join(n.bpffs, "nodemesh", "maps")})
	if err != nil {
		t.Fatal(err)
	}
	defer red.Close()
	redirCount := func(r bpf.RedirectReason) uint64 {
		t.Helper()
		c, err := red.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c[r]
	}
	// upstream runs what stands for an upstream connection of the node
	// Envoy's outbound listener: in the node's netns, in the proxy's
	// cgroup, bound (IP_TRANSPARENT) to bind ("-": not bound).
	upstream := func(method, target, bind string) (string, error) {
		return n.execIn(node, filepath.Join(n.cgroupRoot, "proxy"), "upstream", method, target, bind, "0", "2s")
	}

	serverIP := netip.MustParseAddr(server.ip)
	httpURL := "http://" + server.ip + ":8080/"
	serverHTTP, serverEcho := server.ip+":8080", server.ip+":9000"
	// get GETs (or POSTs) httpURL from p until the outcome is want: a 200
	// answered by the server to p's own address, or a failure.
	get := func(t *testing.T, what string, p *pod, from string, want bool) {
		t.Helper()
		eventually(t, 15*time.Second, what, func() error {
			out, err := n.exec(p, "get", httpURL, "1s")
			switch {
			case want && err != nil:
				return fmt.Errorf("want a 200, got %v: %s", err, out)
			case want && !strings.HasPrefix(out, "200 hello from server to "+from+":"):
				return fmt.Errorf("want a 200 the server answered to %s, got %q", from, out)
			case !want && err == nil:
				return fmt.Errorf("want a failure, got through: %s", out)
			}
			return nil
		})
	}

	proxy := n.startInbound(bpf.ProxyInboundSocketMark, bpf.ProxyInboundUpstreamMark)
	defer func() { proxy.stop() }()

	t.Run("a port not in the map is not captured", func(t *testing.T) {
		get(t, "client→server:8080 direct", client, client.ip, allowed)
		if out, err := n.exec(client, "echo", serverEcho, "2s"); err != nil || out != "hello" {
			t.Errorf("echo: %v: %q", err, out)
		}
		if ev := proxy.events("accepted"); len(ev) != 0 {
			t.Errorf("the stand-in accepted %v", ev)
		}
	})

	t.Run("a captured port goes through the proxy stand-in", func(t *testing.T) {
		captured := counter(bpf.ReasonCaptured)
		if err := pol.PutInboundCapture(serverIP, 8080); err != nil {
			t.Fatal(err)
		}
		get(t, "client→server:8080 through the stand-in", client, client.ip, allowed)
		if !proxy.saw(client.ip, serverHTTP) {
			t.Fatalf("the stand-in did not see the client's connection: %v", proxy.events("accepted"))
		}
		if counter(bpf.ReasonCaptured) == captured {
			t.Error("no packet counted as captured")
		}
		// Standing for RBAC: the stand-in refuses what is not a GET.
		out, err := n.exec(client, "post", httpURL, "2s")
		if err != nil || !strings.HasPrefix(out, "403 ") {
			t.Errorf("POST through the stand-in: %v: %q, want a 403", err, out)
		}
		// Another port of the same pod is not in the map.
		accepted := len(proxy.events("accepted"))
		if out, err := n.exec(client, "echo", serverEcho, "2s"); err != nil || out != "hello" {
			t.Errorf("echo on 9000: %v: %q", err, out)
		}
		if got := len(proxy.events("accepted")); got != accepted {
			t.Errorf("the stand-in accepted a connection to 9000: %v", proxy.events("accepted"))
		}
		if got, err := pol.InboundCaptures(); err != nil || len(got) != 1 || got[0] != netip.AddrPortFrom(serverIP, 8080) {
			t.Errorf("InboundCaptures() = %v, %v", got, err)
		}
	})

	t.Run("the node proxy's upstream to a captured port of its own node goes through the inbound listener", func(t *testing.T) {
		// The same-node gap: the node Envoy's outbound upstream leaves from
		// the node's netns and reaches the pod at to_pod only, where nothing
		// can be captured. cgroup/connect4 sends it to the inbound listener.
		captured, skipped, answered := redirCount(bpf.RedirectInboundCaptured), redirCount(bpf.RedirectInboundSkipMark), redirCount(bpf.RedirectOrigDstAnswered)
		eventually(t, 15*time.Second, "the proxy's upstream for client→server:8080 through the stand-in", func() error {
			out, err := upstream("GET", httpURL, client.ip)
			if err != nil || !strings.HasPrefix(out, "200 hello from server to "+client.ip+":") {
				return fmt.Errorf("want a 200 the server answered to %s, got %v: %q", client.ip, err, out)
			}
			return nil
		})
		// Seen with the client's address as its peer and the pod's address
		// as its original destination (SO_ORIGINAL_DST), as Envoy's
		// original_dst listener filter restores it.
		if !proxy.sawVia(client.ip, serverHTTP, "origdst") {
			t.Fatalf("the stand-in did not see the proxy's upstream by its original destination: %v", proxy.events("accepted"))
		}
		out, err := upstream("POST", httpURL, client.ip)
		if err != nil || !strings.HasPrefix(out, "403 ") {
			t.Errorf("POST by the proxy's upstream: %v: %q, want a 403", err, out)
		}
		if got := redirCount(bpf.RedirectInboundCaptured); got < captured+2 {
			t.Errorf("inbound-captured went from %d to %d for two connections", captured, got)
		}
		if redirCount(bpf.RedirectOrigDstAnswered) == answered {
			t.Error("no SO_ORIGINAL_DST answered")
		}
		// The stand-in's own upstream to the pod carries the inbound
		// cluster's mark and goes to the pod.
		if redirCount(bpf.RedirectInboundSkipMark) == skipped {
			t.Error("the stand-in's marked upstream was not counted as skipped")
		}
	})

	t.Run("the client's egress policy still decides the node proxy's upstream", func(t *testing.T) {
		// locked may not connect anywhere: the proxy's upstream on its
		// behalf fails at connect() (EPERM, Envoy's 503) before it could be
		// sent to the inbound listener — which, were it, would let it reach
		// the server, whose ingress policy allows app=client.
		captured := redirCount(bpf.RedirectInboundCaptured)
		eventually(t, 15*time.Second, "the proxy's upstream for locked refused", func() error {
			denied := redirCount(bpf.RedirectProxyEgressDenied)
			out, err := upstream("GET", httpURL, locked.ip)
			if err == nil || !strings.Contains(out, "operation not permitted") {
				return fmt.Errorf("want EPERM, got %v: %q", err, out)
			}
			if redirCount(bpf.RedirectProxyEgressDenied) == denied {
				return fmt.Errorf("proxy-egress-denied not counted")
			}
			return nil
		})
		if proxy.saw(locked.ip, serverHTTP) {
			t.Errorf("the stand-in accepted locked's connection: %v", proxy.events("accepted"))
		}
		if got := redirCount(bpf.RedirectInboundCaptured); got != captured {
			t.Errorf("inbound-captured went from %d to %d for a denied connection", captured, got)
		}
	})

	t.Run("the node proxy's upstream to a port not captured goes to the pod", func(t *testing.T) {
		captured, accepted := redirCount(bpf.RedirectInboundCaptured), len(proxy.events("accepted"))
		if out, err := upstream("ECHO", serverEcho, client.ip); err != nil || out != "hello" {
			t.Errorf("echo on 9000 by the proxy's upstream: %v: %q", err, out)
		}
		if got := len(proxy.events("accepted")); got != accepted {
			t.Errorf("the stand-in accepted %v", proxy.events("accepted")[accepted:])
		}
		if redirCount(bpf.RedirectInboundCaptured) != captured {
			t.Error("inbound-captured counted a connection to a port not captured")
		}
	})

	t.Run("sockets that are not the node proxy's upstream are not sent to the inbound listener", func(t *testing.T) {
		captured := redirCount(bpf.RedirectInboundCaptured)
		accepted := len(proxy.events("accepted"))
		// A process of the node with the node's address: L4 policy only
		// (the node is trusted, --allow-host-ingress), as before.
		out, err := upstream("GET", httpURL, "-")
		if err != nil || !strings.HasPrefix(out, "200 hello from server to ") || strings.Contains(out, " to "+client.ip+":") {
			t.Errorf("GET from the node's address: %v: %q", err, out)
		}
		if got := len(proxy.events("accepted")); got != accepted {
			t.Errorf("the stand-in accepted a connection from the node's address: %v", proxy.events("accepted")[accepted:])
		}
		// A pod's own connection is captured at tc (its local address is
		// the pod's), never by connect4.
		local := proxy.countVia(client.ip, serverHTTP, "local")
		get(t, "client→server:8080 captured at tc", client, client.ip, allowed)
		if proxy.countVia(client.ip, serverHTTP, "local") == local {
			t.Errorf("the client pod's connection was not captured at tc: %v", proxy.events("accepted"))
		}
		if got := redirCount(bpf.RedirectInboundCaptured); got != captured {
			t.Errorf("inbound-captured went from %d to %d without a node proxy upstream", captured, got)
		}
		// A pod that binds another pod's address (IP_TRANSPARENT in its own
		// netns) looks like a proxy upstream to connect4, but no listener
		// of the proxy's is in the pod's netns: refused (and were it sent
		// on, its packets would leave through its own veth, where they are
		// dropped as spoofed). It gets nowhere as the other pod.
		refused := redirCount(bpf.RedirectInboundRefused)
		if out, err := n.execIn(client.netns, client.cgroup, "upstream", "GET", httpURL, other.ip, "0", "2s"); err == nil {
			t.Errorf("a pod bound to another pod's address got through: %q", out)
		} else if !strings.Contains(out, "operation not permitted") {
			t.Errorf("a pod bound to another pod's address: %v: %q, want EPERM", err, out)
		}
		if proxy.sawVia(other.ip, serverHTTP, "origdst") {
			t.Errorf("the stand-in accepted a connection as other by its original destination: %v", proxy.events("accepted"))
		}
		if redirCount(bpf.RedirectInboundRefused) == refused {
			t.Error("the pod's connection as other was not counted as refused")
		}
	})

	t.Run("the stand-in's own upstream connection is not captured (no loop)", func(t *testing.T) {
		// The upstream connection leaves from the node's netns with the
		// client's address: were it captured, the stand-in would accept it
		// and connect again from the same address, for ever.
		ups := proxy.events("upstream")
		if len(ups) == 0 {
			t.Fatal("no upstream connection yet")
		}
		for _, u := range ups {
			for _, a := range proxy.events("accepted") {
				if a[0] == u[0] {
					t.Errorf("the stand-in accepted its own upstream connection %s", u[0])
				}
			}
		}
		// One accepted connection per request: nothing came back around.
		if acc, up := len(proxy.events("accepted")), len(ups)+len(proxy.events("refused"))+len(proxy.events("upstream-error")); acc != up {
			t.Errorf("%d connections accepted for %d handled", acc, up)
		}
		if ev := proxy.events("overload"); len(ev) != 0 {
			t.Errorf("the stand-in was looped into: %v", ev)
		}
	})

	t.Run("the server's L4 ingress policy applies to the captured connection", func(t *testing.T) {
		deniedBefore := counter(bpf.ReasonDeniedDefault)
		get(t, "other→server:8080 refused through the stand-in", other, other.ip, denied)
		if !proxy.saw(other.ip, serverHTTP) {
			t.Errorf("other's connection did not reach the stand-in: %v", proxy.events("accepted"))
		}
		// The stand-in gives up on its upstream connection (dropped at
		// the server's veth) after its own timeout.
		eventually(t, 15*time.Second, "the stand-in's upstream connection for other refused", func() error {
			for _, e := range proxy.events("upstream-error") {
				if strings.HasPrefix(e[0], other.ip+":") {
					return nil
				}
			}
			return fmt.Errorf("no upstream error for other: %v", proxy.events("upstream-error"))
		})
		if counter(bpf.ReasonDeniedDefault) == deniedBefore {
			t.Error("to_pod counted no denied-default")
		}
	})

	t.Run("a client on another node is captured", func(t *testing.T) {
		get(t, "remote→server:8080 through the stand-in", remote, remoteIP, allowed)
		if !proxy.saw(remoteIP, serverHTTP) {
			t.Errorf("the stand-in did not see the remote client: %v", proxy.events("accepted"))
		}
		out, err := n.exec(remote, "post", httpURL, "2s")
		if err != nil || !strings.HasPrefix(out, "403 ") {
			t.Errorf("POST from the other node: %v: %q, want a 403", err, out)
		}
	})

	t.Run("a transparent listener without the proxy's mark gets nothing", func(t *testing.T) {
		proxy.stop()
		drops := counter(bpf.ReasonDropNoListener)
		impostor := n.startInbound(0, bpf.ProxyInboundUpstreamMark)
		defer impostor.stop()
		refused := redirCount(bpf.RedirectInboundRefused)
		get(t, "client→server:8080 with an impostor on 15006", client, client.ip, denied)
		get(t, "remote→server:8080 with an impostor on 15006", remote, remoteIP, denied)
		if out, err := upstream("GET", httpURL, client.ip); err == nil {
			t.Errorf("the proxy's upstream got through with an impostor on 15006: %q", out)
		}
		if redirCount(bpf.RedirectInboundRefused) == refused {
			t.Error("the proxy's upstream was not counted as refused")
		}
		if ev := impostor.events("accepted"); len(ev) != 0 {
			t.Errorf("the impostor accepted %v", ev)
		}
		if counter(bpf.ReasonDropNoListener) == drops {
			t.Error("no drop-no-listener counted")
		}
	})

	t.Run("no listener: the connection fails and the drop is counted", func(t *testing.T) {
		drops := counter(bpf.ReasonDropNoListener)
		get(t, "client→server:8080 with no proxy", client, client.ip, denied)
		get(t, "remote→server:8080 with no proxy", remote, remoteIP, denied)
		refused := redirCount(bpf.RedirectInboundRefused)
		if out, err := upstream("GET", httpURL, client.ip); err == nil {
			t.Errorf("the proxy's upstream got through with no proxy: %q", out)
		}
		if redirCount(bpf.RedirectInboundRefused) == refused {
			t.Error("the proxy's upstream was not counted as refused")
		}
		if counter(bpf.ReasonDropNoListener) == drops {
			t.Error("no drop-no-listener counted")
		}
		body := httpGet(t, "http://"+n.metrics+"/metrics")
		if !strings.Contains(body, `reason="drop-no-listener"`) || !strings.Contains(body, `reason="captured"`) {
			t.Error("the agent's metrics lack the capture reasons")
		}
	})

	t.Run("no proxy configured: dropped, never around the proxy", func(t *testing.T) {
		proxy = n.startInbound(bpf.ProxyInboundSocketMark, bpf.ProxyInboundUpstreamMark)
		if err := pol.SetInboundProxy(bpf.InboundProxy{}); err != nil {
			t.Fatal(err)
		}
		get(t, "client→server:8080 with no proxy configured", client, client.ip, denied)
		if out, err := upstream("GET", httpURL, client.ip); err == nil {
			t.Errorf("the proxy's upstream got through with no proxy configured: %q", out)
		}
		if ev := proxy.events("accepted"); len(ev) != 0 {
			t.Errorf("the stand-in accepted %v while unconfigured", ev)
		}
		if err := pol.SetInboundProxy(bpf.InboundProxy{Port: bpf.ProxyInboundPort, Mark: agent.ProxyReturnMark, SocketMark: bpf.ProxyInboundSocketMark}); err != nil {
			t.Fatal(err)
		}
		get(t, "client→server:8080 through the stand-in again", client, client.ip, allowed)
	})

	t.Run("removing the entry stops capture for new connections", func(t *testing.T) {
		if err := pol.DeleteInboundCapture(serverIP, 8080); err != nil {
			t.Fatal(err)
		}
		accepted := len(proxy.events("accepted"))
		get(t, "client→server:8080 direct again", client, client.ip, allowed)
		get(t, "remote→server:8080 direct again", remote, remoteIP, allowed)
		if out, err := upstream("GET", httpURL, client.ip); err != nil || !strings.HasPrefix(out, "200 hello from server to "+client.ip+":") {
			t.Errorf("the proxy's upstream, direct again: %v: %q", err, out)
		}
		if got := len(proxy.events("accepted")); got != accepted {
			t.Errorf("the stand-in still accepted connections: %v", proxy.events("accepted")[accepted:])
		}
		get(t, "other→server:8080 still refused by the L4 policy", other, other.ip, denied)
		if got, err := pol.InboundCaptures(); err != nil || len(got) != 0 {
			t.Errorf("InboundCaptures() = %v, %v", got, err)
		}
	})
}

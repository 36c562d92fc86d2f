//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/agent/identity"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/api/v1alpha1"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	kubetest.Main(m)
}

const (
	allowed = true
	denied  = false
)

// TestDatapath is the agent's end-to-end test: three pods through the CNI
// binary, NetworkPolicies from the API server flipping real traffic,
// redirection of an opted-in pod's Service connection to a listener on
// 15001, an agent crash during a TCP stream, and DEL leaving nothing behind.
func TestDatapath(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	buildBinaries(t, n.bin)

	nsA := env.Namespace(t, "e2e-mesh", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	nsB := env.Namespace(t, "e2e-plain", nil)
	kpod := func(ns, name, app string, ports ...corev1.ContainerPort) {
		t.Helper()
		_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
			Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app", Ports: ports}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	kpod(nsA, "server", "server", corev1.ContainerPort{Name: "http", ContainerPort: 8080}, corev1.ContainerPort{Name: "echo", ContainerPort: 9000})
	kpod(nsA, "client", "client")
	kpod(nsB, "other", "other")
	kpod(nsB, "late", "late")
	svc, err := env.Client.CoreV1().Services(nsA).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "server"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "server"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vip := svc.Spec.ClusterIP + ":80"

	n.startAgent()
	server := n.addPod(nsA, "server")
	client := n.addPod(nsA, "client")
	other := n.addPod(nsB, "other")
	t.Logf("pods: server %s, client %s, other %s; service %s", server.ip, client.ip, other.ip, vip)
	if server.ip == client.ip || client.ip == other.ip || server.ip == other.ip {
		t.Fatalf("duplicate addresses: %s %s %s", server.ip, client.ip, other.ip)
	}
	n.daemon(server.netns, server.cgroup, "serve", "server")
	// attachedBy waits until p's programs are attached the way wanted.
	attachedBy := func(p *pod, wantPins, wantFilters int) {
		t.Helper()
		eventually(t, 15*time.Second, p.name+" attachment", func() error {
			pins, filters, err := n.attachment(p)
			if err == nil && (pins != wantPins || filters != wantFilters) {
				err = fmt.Errorf("%d pinned tcx links and %d cls_bpf filters, want %d and %d", pins, filters, wantPins, wantFilters)
			}
			return err
		})
	}

	t.Run("programs move from cls_bpf filters to pinned tcx links", func(t *testing.T) {
		// ADD attached cls_bpf filters (fast); once CNI calls are quiet the
		// agent moves each pod to tcx and deletes the filters.
		for _, p := range []*pod{server, client, other} {
			attachedBy(p, 2, 0)
		}
	})

	httpURL := "http://" + server.ip + ":8080/"
	echoAddr := server.ip + ":9000"
	// reach checks a connection from p, retrying until it has the wanted
	// outcome (policy changes reach the maps within a reconcile).
	reach := func(what string, p *pod, mode, target string, want bool) {
		t.Helper()
		eventually(t, 15*time.Second, what, func() error {
			out, err := n.exec(p, mode, target, "700ms")
			switch {
			case want && err != nil:
				return fmt.Errorf("want allowed, got %v: %s", err, out)
			case !want && err == nil:
				return fmt.Errorf("want denied, got through: %s", out)
			}
			return nil
		})
	}

	// remoteNode stands for another node: a netns routed from the node's
	// over a veth (the node's "uplink"), holding remoteIP, the address one
	// of its pods has. It goes when the (sub)test ends.
	const remoteIP, remoteGW = "10.244.78.5", "10.244.78.1"
	remoteNode := func(t *testing.T) (netns, uplink string) {
		t.Helper()
		rns, node, link := n.netnsName("remote"), n.netnsName("node"), n.id+"-rn"
		run(t, "ip", "netns", "add", rns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", rns).Run() }) // and with it both ends of the link
		run(t, "ip", "-n", node, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", rns)
		run(t, "ip", "-n", node, "addr", "add", remoteGW+"/32", "dev", link)
		run(t, "ip", "-n", node, "link", "set", link, "up")
		run(t, "ip", "-n", node, "route", "add", remoteIP+"/32", "dev", link)
		run(t, "ip", "-n", rns, "link", "set", "lo", "up")
		run(t, "ip", "-n", rns, "addr", "add", remoteIP+"/32", "dev", "eth0")
		run(t, "ip", "-n", rns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", rns, "route", "add", remoteGW+"/32", "dev", "eth0", "scope", "link")
		run(t, "ip", "-n", rns, "route", "add", "default", "via", remoteGW)
		return rns, link
	}

	t.Run("no policy: everything reachable", func(t *testing.T) {
		reach("client→server http", client, "get", httpURL, allowed)
		reach("other→server http", other, "get", httpURL, allowed)
		reach("other→client http port", other, "get", "http://"+client.ip+":8080/", denied) // nothing listens there
	})

	policies := env.Client.NetworkingV1().NetworkPolicies(nsA)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "server-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
			}},
		},
	}
	t.Run("NetworkPolicy allows client on the named port only", func(t *testing.T) {
		if _, err := policies.Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("other→server http denied", other, "get", httpURL, denied)
		reach("client→server http allowed", client, "get", httpURL, allowed)
		reach("client→server echo denied (port not named in the policy)", client, "echo", echoAddr, denied)
	})
	// TrafficPolicies of nsA, created and deleted through the API.
	tps := dynamic.NewForConfigOrDie(env.Config).Resource(v1alpha1.TrafficPolicyResource).Namespace(nsA)
	createTP := func(t *testing.T, name string, spec map[string]any) {
		t.Helper()
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": v1alpha1.GroupVersion.String(), "kind": "TrafficPolicy",
			"metadata": map[string]any{"name": name, "namespace": nsA}, "spec": spec}}
		if _, err := tps.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("TrafficPolicy: Deny wins over the NetworkPolicy allow, Allow isolates", func(t *testing.T) {
		createTP(t, "no-client-http", map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "server"}}, "action": "Deny",
			"ingress": []any{map[string]any{
				"peers": []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"app": "client"}}}},
				"ports": []any{map[string]any{"port": int64(8080)}},
			}},
		})
		reach("client→server http denied by the TrafficPolicy", client, "get", httpURL, denied)
		if err := tps.Delete(ctx, "no-client-http", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("client→server http allowed again", client, "get", httpURL, allowed)

		// Allow with an empty egress list: the client is isolated for
		// egress and this policy allows nothing.
		createTP(t, "client-egress", map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "client"}}, "action": "Allow", "egress": []any{},
		})
		reach("client→server http denied (client isolated for egress)", client, "get", httpURL, denied)
		if err := tps.Delete(ctx, "client-egress", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("client→server http allowed once the policy is gone", client, "get", httpURL, allowed)
	})

	t.Run("a pod on another node is policed by its identity", func(t *testing.T) {
		// The other node: a netns routed from the node's, holding the
		// address its pod has. Its agent would allocate the pod's identity;
		// this node only looks it up.
		rns, _ := remoteNode(t)
		remote := &pod{namespace: nsA, name: "remote-client", netns: rns, cgroup: filepath.Join(n.cgroupRoot, "remote")}

		labels := map[string]string{"app": "client", "zone": "b"} // a key no local pod has
		_, err := env.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: remote.name, Labels: labels},
			Spec:       corev1.PodSpec{NodeName: n.id + "-remote", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: remoteIP, PodIPs: []corev1.PodIP{{IP: remoteIP}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		pods := env.Client.CoreV1().Pods(nsA)
		now := metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))} // no kubelet confirms a graceful one
		defer pods.Delete(ctx, remote.name, now)
		ipcache := func(want bpf.Identity) {
			t.Helper()
			eventually(t, 15*time.Second, "identity of "+remoteIP, func() error {
				if got := n.snapshot(t).Identities[remoteIP+"/32"]; got != want {
					return fmt.Errorf("nm_ipcache has %d, want %d", got, want)
				}
				return nil
			})
		}

		// No identity object for its key yet: WORLD, which the policy
		// (client pods only) does not allow.
		reach("remote client→server denied while its identity is unknown", remote, "get", httpURL, denied)
		ipcache(0)

		alloc := &identity.Allocator{Client: dynamic.NewForConfigOrDie(env.Config)}
		id, err := alloc.Allocate(ctx, identity.KeyOf(nsA, "", labels))
		if err != nil {
			t.Fatal(err)
		}
		ipcache(id)
		reach("remote client→server allowed by its identity", remote, "get", httpURL, allowed)
		reach("remote client→server echo denied (port)", remote, "echo", echoAddr, denied)

		// Relabelled: a new identity, which the policy does not select.
		remotePod, err := pods.Get(ctx, remote.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		remotePod.Labels = map[string]string{"app": "stranger", "zone": "b"}
		if _, err := pods.Update(ctx, remotePod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		stranger, err := alloc.Allocate(ctx, identity.KeyOf(nsA, "", remotePod.Labels))
		if err != nil {
			t.Fatal(err)
		}
		ipcache(stranger)
		reach("relabelled remote pod denied", remote, "get", httpURL, denied)

		// Gone: its address leaves the identity map.
		if err := pods.Delete(ctx, remote.name, now); err != nil {
			t.Fatal(err)
		}
		ipcache(0)
		body := httpGet(t, "http://"+n.metrics+"/metrics")
		if !strings.Contains(body, `nodemesh_agent_remote_endpoints{state="resolved"} 0`) {
			t.Errorf("metrics: remote endpoints not 0 after the pod was deleted")
		}
	})

	t.Run("namespaceSelector peer flips other to allowed", func(t *testing.T) {
		cur, err := policies.Get(ctx, np.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Ingress[0].From = append(cur.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": nsB}}})
		if _, err := policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("other→server http allowed", other, "get", httpURL, allowed)
		cur, _ = policies.Get(ctx, np.Name, metav1.GetOptions{})
		cur.Spec.Ingress[0].From = cur.Spec.Ingress[0].From[:1]
		if _, err := policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("other→server http denied again", other, "get", httpURL, denied)
	})
	t.Run("egress default deny", func(t *testing.T) {
		egress := env.Client.NetworkingV1().NetworkPolicies(nsA)
		deny := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "client-egress"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			},
		}
		if _, err := egress.Create(ctx, deny, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("client→server denied by client's egress", client, "get", httpURL, denied)
		if err := egress.Delete(ctx, deny.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("client→server allowed again", client, "get", httpURL, allowed)
	})

	t.Run("redirection of an opted-in pod to 15001", func(t *testing.T) {
		px, _ := n.daemon(n.netnsName("node"), filepath.Join(n.cgroupRoot, "proxy"), "proxy")
		defer func() { px.Kill(); px.Wait() }() // frees 15001
		var out string
		eventually(t, 15*time.Second, "client→service redirected", func() error {
			var err error
			out, err = n.exec(client, "connect", vip, "2s")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		if want := "origdst=" + vip + " peer=" + client.ip + ":"; !strings.HasPrefix(out, want) {
			t.Errorf("proxy saw %q, want prefix %q", out, want)
		}
		if want := "getpeername=" + vip; !strings.HasSuffix(out, want) {
			t.Errorf("client saw %q, want suffix %q (getpeername4)", out, want)
		}
		// A pod of a namespace without the label is not redirected: the
		// Service address is not routed on the node, so it fails.
		if out, err := n.exec(other, "connect", vip, "2s"); err == nil || strings.Contains(out, "origdst") {
			t.Errorf("pod of a namespace without the label reached the proxy: %s", out)
		}
		// Opt-in is live: label nsB, then remove the label again.
		setLabel := func(v *string) {
			t.Helper()
			ns, err := env.Client.CoreV1().Namespaces().Get(ctx, nsB, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if v == nil {
				delete(ns.Labels, api.DataplaneModeLabel)
			} else {
				ns.Labels[api.DataplaneModeLabel] = *v
			}
			if _, err := env.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		on := api.DataplaneModeNodemesh
		setLabel(&on)
		eventually(t, 15*time.Second, "other redirected after its namespace opted in", func() error {
			out, err := n.exec(other, "connect", vip, "1s")
			if err != nil || !strings.Contains(out, "origdst="+vip) {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
		setLabel(nil)
		eventually(t, 15*time.Second, "other not redirected after opting out", func() error {
			out, err := n.exec(other, "connect", vip, "1s")
			if err == nil {
				return fmt.Errorf("still reaches something: %s", out)
			}
			return nil
		})
	})

	t.Run("the node proxy's connections carry the client's identity", func(t *testing.T) {
		// The proxy connects from the client pod's address (original_src),
		// so the server's policy (client pods on http only) sees who calls:
		// the client passes; a pod the policy does not allow is denied,
		// where it would pass as HOST (--allow-host-ingress) from the
		// node's own address. Replies reach the proxy's socket, not the
		// client pod.
		px, _ := n.daemon(n.netnsName("node"), filepath.Join(n.cgroupRoot, "proxy"), "tproxy", server.ip+":8080")
		svcURL := "http://" + vip + "/"
		eventually(t, 15*time.Second, "client→service through the proxy", func() error {
			out, err := n.exec(client, "get", svcURL, "2s")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "hello from server to "+client.ip+":") {
				return fmt.Errorf("the server did not see the client's address: %s", out)
			}
			return nil
		})
		ns, err := env.Client.CoreV1().Namespaces().Get(ctx, nsB, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Labels[api.DataplaneModeLabel] = api.DataplaneModeNodemesh
		if _, err := env.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			ns, _ := env.Client.CoreV1().Namespaces().Get(ctx, nsB, metav1.GetOptions{})
			delete(ns.Labels, api.DataplaneModeLabel)
			env.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
		}()
		// other's namespace allowed: through the proxy as itself.
		setPeers := func(nsBToo bool) {
			t.Helper()
			cur, err := policies.Get(ctx, np.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Spec.Ingress[0].From = cur.Spec.Ingress[0].From[:1]
			if nsBToo {
				cur.Spec.Ingress[0].From = append(cur.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": nsB}}})
			}
			if _, err := policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		setPeers(true)
		eventually(t, 15*time.Second, "other→service through the proxy, allowed", func() error {
			out, err := n.exec(other, "get", svcURL, "2s")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "hello from server to "+other.ip+":") {
				return fmt.Errorf("the server did not see other's address: %s", out)
			}
			return nil
		})
		// Not allowed any more: denied, although it comes through the node.
		setPeers(false)
		reach("other→service through the proxy, denied by the server's policy", other, "get", svcURL, denied)
		reach("client→service through the proxy still allowed", client, "get", svcURL, allowed)

		// The client's egress policy applies to the proxy's connection for
		// it (cgroup/connect4 sees the socket bound to the client's
		// address): isolated for egress with nothing allowed, it gets no
		// further than the proxy.
		createTP(t, "client-no-egress", map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "client"}}, "action": "Allow", "egress": []any{},
		})
		reach("client→service through the proxy, denied by the client's egress policy", client, "get", svcURL, denied)
		if err := tps.Delete(ctx, "client-no-egress", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("client→service through the proxy allowed again", client, "get", svcURL, allowed)
		if body := httpGet(t, "http://"+n.metrics+"/metrics"); !strings.Contains(body, `nodemesh_datapath_redirect_events_total{reason="proxy-egress-denied"}`) {
			t.Errorf("metrics lack the proxy-egress-denied count")
		}
		px.Kill()
		px.Wait()

		// A backend on the node itself (a host-network endpoint): the node
		// answers the client's address, which is routed to the pod; to_pod
		// sends the reply back in through lo to the proxy.
		gateway := "10.244.77.1" // the pod CIDR's first address, on every host veth
		hs, _ := n.daemon(n.netnsName("node"), filepath.Join(n.cgroupRoot, "hostsvc"), "serve", "node")
		defer func() { hs.Kill(); hs.Wait() }()
		px, _ = n.daemon(n.netnsName("node"), filepath.Join(n.cgroupRoot, "proxy"), "tproxy", gateway+":8080")
		eventually(t, 15*time.Second, "client→service through the proxy to a host-network endpoint", func() error {
			out, err := n.exec(client, "get", svcURL, "2s")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "hello from node to "+client.ip+":") {
				return fmt.Errorf("the node's server did not see the client's address: %s", out)
			}
			return nil
		})
		px.Kill()
		px.Wait()

		// A backend on another node: its replies come in over the uplink,
		// where from_uplink hands them to the proxy.
		rns, uplink := remoteNode(t)
		rs, _ := n.daemon(rns, filepath.Join(n.cgroupRoot, "remote"), "serve", "remote")
		defer func() { rs.Kill(); rs.Wait() }() // before the netns goes: a process keeps it (and the link) alive
		n.stopAgent(syscall.SIGTERM)
		n.agentArgs = []string{"--uplink", uplink}
		n.startAgent()
		defer func() {
			n.stopAgent(syscall.SIGTERM)
			n.agentArgs = nil
			n.startAgent()
		}()
		px, _ = n.daemon(n.netnsName("node"), filepath.Join(n.cgroupRoot, "proxy"), "tproxy", remoteIP+":8080")
		defer func() { px.Kill(); px.Wait() }()
		eventually(t, 15*time.Second, "client→service through the proxy to another node", func() error {
			out, err := n.exec(client, "get", svcURL, "2s")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "hello from remote to "+client.ip+":") {
				return fmt.Errorf("the remote server did not see the client's address: %s", out)
			}
			return nil
		})
	})

	t.Run("agent crash during a TCP stream", func(t *testing.T) {
		// The server-ingress policy allows client on http only: open the
		// echo port to client for the stream; other stays denied.
		cur, err := policies.Get(ctx, np.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Ingress[0].Ports = append(cur.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(9000))})
		if _, err := policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("client→server echo allowed", client, "echo", echoAddr, allowed)
		// Isolate the client for ingress: the stream's replies then pass
		// through conntrack (as replies of a flow the client opened), and
		// server→client stays a denied flow across the crash.
		isolate := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "client-ingress"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			},
		}
		if _, err := policies.Create(ctx, isolate, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer policies.Delete(ctx, isolate.Name, metav1.DeleteOptions{})
		n.daemon(client.netns, client.cgroup, "serve", "client")
		reach("server→client denied", server, "echo", client.ip+":9000", denied)
		stream, sc := n.daemon(client.netns, client.cgroup, "stream", echoAddr, "12s")
		time.Sleep(time.Second)
		before := n.snapshot(t)
		n.stopAgent(syscall.SIGKILL)
		// No agent: established flows go on, denied flows stay denied.
		if out, err := n.exec(other, "get", httpURL, "700ms"); err == nil {
			t.Errorf("other reached the server while the agent was down: %s", out)
		}
		if out, err := n.exec(server, "echo", client.ip+":9000", "700ms"); err == nil {
			t.Errorf("server reached the client while the agent was down: %s", out)
		}
		time.Sleep(time.Second)
		n.startAgent()
		// The new agent took over instead of flushing: with no change in the
		// cluster, every map it owns is as the crashed agent left it
		// (including the endpoints' policy revisions, so no established flow
		// is decided again).
		// (Services other tests create meanwhile in a shared API server
		// change the Services map; this test's own must not.)
		own := func(s mapState) mapState {
			s.Services = slices.DeleteFunc(slices.Clone(s.Services), func(a string) bool { return !strings.HasPrefix(a, svc.Spec.ClusterIP+":") })
			return s
		}
		if diff := cmp.Diff(own(before), own(n.snapshot(t))); diff != "" {
			t.Errorf("maps changed across the restart (-before +after):\n%s", diff)
		}
		if out, err := n.exec(other, "get", httpURL, "700ms"); err == nil {
			t.Errorf("other reached the server after the agent restarted: %s", out)
		}
		if out, err := n.exec(server, "echo", client.ip+":9000", "700ms"); err == nil {
			t.Errorf("server reached the client after the agent restarted: %s", out)
		}
		if out, err := n.exec(client, "get", httpURL, "2s"); err != nil {
			t.Errorf("client lost access after the restart: %v %s", err, out)
		}
		var last string
		for sc.Scan() {
			last = sc.Text()
		}
		if err := stream.Wait(); err != nil || !strings.HasPrefix(last, "ok ") {
			t.Fatalf("stream across the agent restart: %v, last output %q", err, last)
		}
		t.Logf("stream across the agent crash and restart: %s round trips", strings.TrimPrefix(last, "ok "))
	})

	t.Run("changes made while the agent is down apply on start", func(t *testing.T) {
		n.stopAgent(syscall.SIGTERM)
		cur, err := policies.Get(ctx, np.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Ingress[0].From = append(cur.Spec.Ingress[0].From, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": nsB}}})
		if _, err := policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if out, err := n.exec(other, "get", httpURL, "700ms"); err == nil {
			t.Errorf("other allowed while no agent runs: %s", out)
		}
		n.startAgent()
		reach("other→server allowed once the agent reconciled", other, "get", httpURL, allowed)
		reach("client→server still allowed", client, "get", httpURL, allowed)
	})

	t.Run("a pod still on cls_bpf filters: CHECK, crash, take-over", func(t *testing.T) {
		n.stopAgent(syscall.SIGTERM)
		n.agentArgs = []string{"--tcx-quiet-period", "1h", "--tcx-max-delay", "1h"}
		n.startAgent()
		late := n.addPod(nsB, "late")
		attachedBy(late, 0, 2)
		if _, err := n.cni("CHECK", late); err != nil {
			t.Errorf("CHECK of a pod on cls_bpf filters: %v", err)
		}
		reach("late→server http through the filters", late, "get", httpURL, allowed)
		n.stopAgent(syscall.SIGKILL)
		n.agentArgs = nil
		n.startAgent()
		// The new agent takes the pod over with tcx and drops the filters.
		attachedBy(late, 2, 0)
		if _, err := n.cni("CHECK", late); err != nil {
			t.Errorf("CHECK after the take-over: %v", err)
		}
		reach("late→server http through tcx", late, "get", httpURL, allowed)
		if _, err := n.cni("DEL", late); err != nil {
			t.Fatalf("DEL late: %v", err)
		}
	})

	t.Run("revoking an allow cuts established flows", func(t *testing.T) {
		// other is allowed (namespaceSelector peer) on the echo port now.
		// cut streams from other to the server's echo port, removes other's
		// peer from the policy and expects the stream to fail, then puts
		// the peer back.
		cut := func(t *testing.T) {
			t.Helper()
			reach("other→server echo allowed", other, "echo", echoAddr, allowed)
			stream, sc := n.daemon(other.netns, other.cgroup, "stream", echoAddr, "30s")
			time.Sleep(500 * time.Millisecond)
			cur, err := policies.Get(ctx, np.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			peers := cur.Spec.Ingress[0].From
			cur.Spec.Ingress[0].From = peers[:1]
			if _, err := policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			done := make(chan string, 1)
			go func() {
				var last string
				for sc.Scan() {
					last = sc.Text()
				}
				stream.Wait()
				done <- last
			}()
			select {
			case last := <-done:
				if !strings.HasPrefix(last, "error:") {
					t.Errorf("stream ended with %q, want an error (its flow revoked)", last)
				}
			case <-time.After(10 * time.Second):
				t.Error("the established stream still flows 10s after its allow was removed")
				stream.Kill()
			}
			reach("other→server echo denied", other, "echo", echoAddr, denied)
			reach("client→server still allowed", client, "get", httpURL, allowed)

			// Put other's peer back for what follows.
			cur, err = policies.Get(ctx, np.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Spec.Ingress[0].From = peers
			if _, err := policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			reach("other→server echo allowed again", other, "echo", echoAddr, allowed)
		}

		// The server isolated for ingress only: its ACKs and echoes are
		// allowed egress packets, yet they must not carry other's revoked
		// flow on (the datapath's conntrack keeps the flow's origin and a
		// revoked tombstone; see docs/design/datapath.md).
		t.Run("server isolated for ingress only", cut)

		t.Run("server isolated both ways", func(t *testing.T) {
			isolate := &networkingv1.NetworkPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "server-egress"},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				},
			}
			if _, err := policies.Create(ctx, isolate, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			defer policies.Delete(ctx, isolate.Name, metav1.DeleteOptions{})
			reach("server→client denied by the server's egress", server, "echo", client.ip+":9000", denied)
			cut(t)
		})
	})

	t.Run("a policy the agent cannot express is reported", func(t *testing.T) {
		v6 := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "v6-peer"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/8"}}}}},
			},
		}
		if _, err := policies.Create(ctx, v6, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "Event on the policy", func() error {
			evs, err := env.Client.CoreV1().Events(nsA).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=v6-peer"})
			if err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == agent.EventReasonNotEnforceable && strings.Contains(e.Message, "IPv6") {
					return nil
				}
			}
			return fmt.Errorf("%d events, none about IPv6", len(evs.Items))
		})
		// The rest of the policies still apply.
		reach("client→server still allowed", client, "get", httpURL, allowed)
	})

	t.Run("metrics", func(t *testing.T) {
		body := httpGet(t, "http://"+n.metrics+"/metrics")
		for _, want := range []string{
			`nodemesh_datapath_packets_total{action="drop",direction="ingress",reason="denied-default"}`,
			`nodemesh_datapath_redirect_events_total{reason="redirected"}`,
			`nodemesh_datapath_map_entries{map="nm_endpoints"} 3`,
			`nodemesh_agent_endpoints 3`,
			`nodemesh_agent_tcx_pending 0`,
			`nodemesh_agent_policy_entries `,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("DEL leaves nothing behind", func(t *testing.T) {
		for _, p := range []*pod{server, client, other} {
			if _, err := n.cni("CHECK", p); err != nil {
				t.Errorf("CHECK %s: %v", p.name, err)
			}
			if _, err := n.cni("DEL", p); err != nil {
				t.Fatalf("DEL %s: %v", p.name, err)
			}
			if _, err := n.cni("DEL", p); err != nil {
				t.Errorf("second DEL %s: %v", p.name, err)
			}
		}
		n.checkEmpty(t, []*pod{server, client, other})
	})
}

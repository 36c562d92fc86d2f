//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// The reference plugins whose ptp and host-local the chained test runs,
// built from the module proxy.
const (
	referencePlugins        = "github.com/containernetworking/plugins"
	referencePluginsVersion = "v1.6.2"
)

// TestChained: nodemesh chained after the reference ptp plugin (with
// host-local IPAM), the way a runtime runs a conflist (libcni): the agent
// appends nodemesh-cni to the primary conflist (and puts it back when the
// primary writes its file again), ADD takes the address and host veth
// from prevResult and polices the pod — a NetworkPolicy allows one client
// and denies another —, DEL removes the endpoint before ptp deletes the
// veth, and the cleanup takes nodemesh-cni out of the primary conflist.
func TestChained(t *testing.T) {
	cgroupV2 := requireDatapath(t)
	env := kubetest.Get(t)
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cgroupV2, env.Kubeconfig)
	n.podCIDR = "10.79.1.0/24"
	buildBinaries(t, n.bin)
	build := exec.Command("go", "install", referencePlugins+"/plugins/main/ptp@"+referencePluginsVersion,
		referencePlugins+"/plugins/ipam/host-local@"+referencePluginsVersion)
	build.Env = append(os.Environ(), "GOBIN="+n.cniBin, "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the reference plugins (%s %s) from the module proxy: %v\n%s", referencePlugins, referencePluginsVersion, err, out)
	}
	primary := filepath.Join(n.cniConf, "10-ptp.conflist")
	primaryConf := map[string]any{
		"cniVersion": "1.0.0", "name": "ptpnet",
		"plugins": []any{map[string]any{"type": "ptp", "mtu": 1500,
			"ipam": map[string]any{"type": "host-local", "ranges": []any{[]any{map[string]any{"subnet": n.podCIDR}}},
				"routes": []any{map[string]any{"dst": "0.0.0.0/0"}}, "dataDir": filepath.Join(n.scratch, "host-local")}}},
	}
	writePrimary := func() {
		t.Helper()
		data, _ := json.MarshalIndent(primaryConf, "", "  ")
		if err := os.WriteFile(primary, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writePrimary()
	n.agentArgs = []string{"--cni-mode", agent.CNIChained, "--routing-mode", agent.RoutingNone}
	n.startAgent()

	chained := func() error {
		list, err := libcni.ConfListFromFile(primary)
		if err != nil {
			return err
		}
		var types []string
		for _, p := range list.Plugins {
			types = append(types, p.Network.Type)
		}
		if strings.Join(types, ",") != "ptp,"+cni.PluginType {
			return fmt.Errorf("plugins %v, want ptp then %s", types, cni.PluginType)
		}
		return nil
	}
	t.Run("the agent chains nodemesh-cni into the primary conflist, and writes none of its own", func(t *testing.T) {
		eventually(t, 10*time.Second, "chained", chained)
		if _, err := os.Stat(filepath.Join(n.cniConf, agent.CNIConfFile)); !os.IsNotExist(err) {
			t.Errorf("%s exists in chained mode: %v", agent.CNIConfFile, err)
		}
		writePrimary() // the primary CNI writes its file again (its restart)
		eventually(t, 10*time.Second, "chained again", chained)
	})

	ns := env.Namespace(t, "chained", nil)
	cniConf := libcni.NewCNIConfigWithCacheDir([]string{n.cniBin}, filepath.Join(n.scratch, "cni-cache"), nil)
	type cpod struct {
		*pod
		rt *libcni.RuntimeConf
	}
	add := func(name, app string) *cpod {
		t.Helper()
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := &pod{namespace: ns, name: name, containerID: "ctr" + rand.String(20), netns: n.netnsName(name), cgroup: filepath.Join(n.cgroupRoot, name)}
		run(t, "ip", "netns", "add", p.netns)
		rt := &libcni.RuntimeConf{ContainerID: p.containerID, NetNS: n.netnsPath(name), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name}, {"K8S_POD_INFRA_CONTAINER_ID", p.containerID}}}
		list, err := libcni.ConfListFromFile(primary)
		if err != nil {
			t.Fatal(err)
		}
		// The plugins run in the node's namespace, as a runtime's do.
		var res *types100.Result
		err = nodeNetnsDo(n.netnsPath("node"), func() error {
			r, err := cniConf.AddNetworkList(ctx, list, rt)
			if err != nil {
				return err
			}
			res, err = types100.GetResult(r)
			return err
		})
		if err != nil {
			t.Fatalf("ADD %s through ptp and nodemesh-cni: %v\n%s", name, err, n.logs())
		}
		if len(res.IPs) != 1 {
			t.Fatalf("ADD %s: %d addresses in the result", name, len(res.IPs))
		}
		p.ip = res.IPs[0].Address.IP.String()
		return &cpod{p, rt}
	}
	server := add("server", "server")
	client := add("client", "client")
	other := add("other", "other")
	n.daemon(server.netns, server.cgroup, "serve", "server")
	url := "http://" + server.ip + ":8080/"
	reach := func(what string, p *cpod, want bool) {
		t.Helper()
		eventually(t, 15*time.Second, what, func() error {
			out, err := n.exec(p.pod, "get", url, "700ms")
			switch {
			case want && err != nil:
				return fmt.Errorf("want allowed, got %v: %s", err, out)
			case !want && err == nil:
				return fmt.Errorf("want denied, got through: %s", out)
			}
			return nil
		})
	}

	t.Run("ptp's address, nodemesh's programs on ptp's veth", func(t *testing.T) {
		if !strings.HasPrefix(server.ip, "10.79.1.") {
			t.Errorf("server address %s is not from host-local's range %s", server.ip, n.podCIDR)
		}
		reach("client → server, no policy", client, allowed)
		st := n.snapshot(t)
		if len(st.Endpoints) != 3 {
			t.Errorf("%d endpoints in nm_endpoints, want 3: %+v", len(st.Endpoints), st.Endpoints)
		}
	})

	t.Run("NetworkPolicy: client allowed, other denied", func(t *testing.T) {
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "server-from-client"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
				}},
			},
		}
		if _, err := env.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		reach("other → server denied", other, denied)
		reach("client → server allowed", client, allowed)
	})

	t.Run("DEL through the chain: endpoint gone, then ptp's veth", func(t *testing.T) {
		list, err := libcni.ConfListFromFile(primary)
		if err != nil {
			t.Fatal(err)
		}
		if err := nodeNetnsDo(n.netnsPath("node"), func() error { return cniConf.DelNetworkList(ctx, list, other.rt) }); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if st := n.snapshot(t); len(st.Endpoints) != 2 {
			t.Errorf("%d endpoints after DEL, want 2", len(st.Endpoints))
		}
	})

	t.Run("cleanup takes nodemesh-cni out of the primary conflist", func(t *testing.T) {
		n.stopAgent(syscall.SIGTERM)
		out, err := exec.Command("ip", "netns", "exec", n.netnsName("node"), n.bin+"/nodemesh-agent", "cleanup",
			"--bpffs", n.bpffs, "--cni-conf-dir", n.cniConf, "--cni-bin-dir", n.cniBin, "--state-dir", n.stateDir).CombinedOutput()
		if err != nil {
			t.Fatalf("cleanup: %v\n%s", err, out)
		}
		list, err := libcni.ConfListFromFile(primary)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "ptp" {
			t.Errorf("primary conflist after cleanup has %d plugins (%s), want ptp alone", len(list.Plugins), out)
		}
	})
}

// nodeNetnsDo runs fn on a thread in the network namespace at path (the
// plugins libcni starts inherit it).
func nodeNetnsDo(path string, fn func() error) error { return inNetns(path, fn) }

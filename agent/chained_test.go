//go:build linux

package agent

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// TestPodAddress: which address of prevResult is the pod's, and what is
// refused.
func TestPodAddress(t *testing.T) {
	ipc := func(cidr string, iface *int) *types100.IPConfig {
		ip, n, _ := net.ParseCIDR(cidr)
		n.IP = ip
		return &types100.IPConfig{Address: *n, Interface: iface}
	}
	ifaces := []*types100.Interface{{Name: "veth1"}, {Name: "eth0", Sandbox: "/run/netns/p"}, {Name: "net1", Sandbox: "/run/netns/p"}}
	tests := map[string]struct {
		ips     []*types100.IPConfig
		want    string
		wantErr string
	}{
		"the pod interface's":                                       {ips: []*types100.IPConfig{ipc("10.0.0.5/24", types100.Int(1))}, want: "10.0.0.5"},
		"no interface named":                                        {ips: []*types100.IPConfig{ipc("10.0.0.6/24", nil)}, want: "10.0.0.6"},
		"IPv6 beside it (not policed, ignored)":                     {ips: []*types100.IPConfig{ipc("fd00::5/64", types100.Int(1)), ipc("10.0.0.5/24", types100.Int(1))}, want: "10.0.0.5"},
		"the host side's and another interface's are not the pod's": {ips: []*types100.IPConfig{ipc("10.0.0.1/32", types100.Int(0)), ipc("10.1.0.5/24", types100.Int(2)), ipc("10.0.0.5/24", types100.Int(1))}, want: "10.0.0.5"},
		"an interface index out of range":                           {ips: []*types100.IPConfig{ipc("10.0.0.5/24", types100.Int(7))}, wantErr: "no IPv4 address"},
		"no IPv4":                                                   {ips: []*types100.IPConfig{ipc("fd00::5/64", types100.Int(1))}, wantErr: "no IPv4 address"},
		"two IPv4 addresses: refused":                               {ips: []*types100.IPConfig{ipc("10.0.0.5/24", types100.Int(1)), ipc("10.0.0.6/24", types100.Int(1))}, wantErr: "several"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := podAddress(&types100.Result{Interfaces: ifaces, IPs: tc.ips}, "eth0", "/run/netns/p")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// TestChainInto: nodemesh-cni goes last into the primary conflist, once,
// keeping the other plugins and keys as they are; unchain takes it out.
func TestChainInto(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "10-calico.conflist")
	orig := `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico","mtu":0},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	plugins := func() []string {
		t.Helper()
		var l struct {
			Name    string           `json:"name"`
			Plugins []map[string]any `json:"plugins"`
		}
		data, _ := os.ReadFile(path)
		if err := json.Unmarshal(data, &l); err != nil {
			t.Fatal(err)
		}
		if l.Name != "k8s-pod-network" {
			t.Errorf("name changed: %q", l.Name)
		}
		var out []string
		for _, p := range l.Plugins {
			out = append(out, p["type"].(string))
			if p["type"] == "nodemesh-cni" && p["agentSocket"] != "/run/nodemesh/cni.sock" {
				t.Errorf("agentSocket %v", p["agentSocket"])
			}
		}
		return out
	}
	for i, wantChanged := range []bool{true, false} {
		changed, err := chainInto(path, "/run/nodemesh/cni.sock")
		if err != nil || changed != wantChanged {
			t.Fatalf("chainInto #%d: changed %v, %v; want %v", i, changed, err, wantChanged)
		}
	}
	if got := strings.Join(plugins(), ","); got != "calico,portmap,nodemesh-cni" {
		t.Errorf("plugins %s", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the file's own 0600", st.Mode().Perm())
	}
	if p, err := primaryConfList(dir); err != nil || p != path {
		t.Errorf("primary: %s, %v", p, err)
	}
	changed, err := unchain(dir)
	if err != nil || len(changed) != 1 {
		t.Fatalf("unchain: %v, %v", changed, err)
	}
	if got := strings.Join(plugins(), ","); got != "calico,portmap" {
		t.Errorf("plugins after unchain %s", got)
	}

	for name, tc := range map[string]struct{ files map[string]string }{
		"a single-plugin .conf sorts first": {map[string]string{"05-x.conf": `{"type":"x"}`, "10-y.conflist": orig}},
		"nothing to chain onto":             {map[string]string{CNIConfFile: `{}`}},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			for f, c := range tc.files {
				if err := os.WriteFile(filepath.Join(d, f), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if p, err := primaryConfList(d); err == nil {
				t.Errorf("primary %s, want an error", p)
			}
		})
	}
	bad := filepath.Join(t.TempDir(), "10-bad.conflist")
	os.WriteFile(bad, []byte(`{"name":"x","plugins":[]}`), 0o644)
	if _, err := chainInto(bad, "/s"); err == nil {
		t.Error("a conflist without plugins: want an error")
	}
}

//go:build linux

package e2e

// Readers of the node state the datapath tests assert on.

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/bpf"
)

// mapState is what the agent keeps in the pinned maps.
type mapState struct {
	Endpoints  map[int]bpf.Endpoint
	Identities map[string]bpf.Identity
	Policies   map[string]bpf.Verdict
	Ranges     map[bpf.PortRangeKey]bpf.Verdict
	OptedIn    []uint64
	Services   []string
}

// snapshot reads the pinned maps.
func (n *node) snapshot(t *testing.T) mapState {
	t.Helper()
	pins := filepath.Join(n.bpffs, "nodemesh", "maps")
	pol, err := bpf.LoadPolicy(bpf.LoadOptions{PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	defer pol.Close()
	red, err := bpf.LoadRedirect(bpf.LoadOptions{PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	defer red.Close()
	var s mapState
	s.Identities, s.Policies = map[string]bpf.Identity{}, map[string]bpf.Verdict{}
	if s.Endpoints, err = pol.Endpoints(); err != nil {
		t.Fatal(err)
	}
	ids, err := pol.Identities()
	if err != nil {
		t.Fatal(err)
	}
	for p, id := range ids {
		s.Identities[p.String()] = id
	}
	pols, err := pol.Policies()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range pols {
		s.Policies[fmt.Sprintf("%+v", k)] = v
	}
	if s.Ranges, err = pol.PortRanges(); err != nil {
		t.Fatal(err)
	}
	if s.OptedIn, err = red.OptedIn(); err != nil {
		t.Fatal(err)
	}
	svcs, err := red.Services()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range svcs {
		s.Services = append(s.Services, a.String())
	}
	slices.Sort(s.OptedIn)
	slices.Sort(s.Services)
	return s
}

// checkEmpty asserts that no trace of the pods is left: links, addresses,
// pins, map entries, leases, records.
func (n *node) checkEmpty(t *testing.T, pods []*pod) {
	t.Helper()
	out, _ := execOut("ip", "-n", n.netnsName("node"), "-o", "link")
	if strings.Contains(out, " nm") {
		t.Errorf("host veths left:\n%s", out)
	}
	out, _ = execOut("ip", "-n", n.netnsName("node"), "-o", "-4", "addr")
	if strings.Contains(out, "10.244.77.") {
		t.Errorf("addresses left on the node:\n%s", out)
	}
	for _, p := range pods {
		out, _ := execOut("ip", "-n", p.netns, "-o", "link")
		if strings.Contains(out, "eth0") {
			t.Errorf("pod %s still has eth0:\n%s", p.name, out)
		}
	}
	pins, _ := filepath.Glob(filepath.Join(n.bpffs, "nodemesh", "links", "*"))
	if len(pins) > 0 {
		t.Errorf("link pins left: %v", pins)
	}
	leases, _ := filepath.Glob(filepath.Join(n.stateDir, "ipam", "leases", "*"))
	if len(leases) > 0 {
		t.Errorf("leases left: %v", leases)
	}
	records, _ := filepath.Glob(filepath.Join(n.stateDir, "endpoints", "*"))
	if len(records) > 0 {
		t.Errorf("endpoint records left: %v", records)
	}
	// The maps, read through their pins.
	pol, err := bpf.LoadPolicy(bpf.LoadOptions{PinPath: filepath.Join(n.bpffs, "nodemesh", "maps")})
	if err != nil {
		t.Fatal(err)
	}
	defer pol.Close()
	if eps, err := pol.Endpoints(); err != nil || len(eps) != 0 {
		t.Errorf("endpoint entries left: %v %v", eps, err)
	}
	ids, err := pol.Identities()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if id, ok := ids[netip.PrefixFrom(netip.MustParseAddr(p.ip), 32)]; ok {
			t.Errorf("identity entry for %s (%s) left: %d", p.name, p.ip, id)
		}
	}
	if pols, err := pol.Policies(); err != nil || len(pols) != 0 {
		t.Errorf("policy entries left with no pods: %v %v", pols, err)
	}
	if rs, err := pol.PortRanges(); err != nil || len(rs) != 0 {
		t.Errorf("port range entries left with no pods: %v %v", rs, err)
	}
	red, err := bpf.LoadRedirect(bpf.LoadOptions{PinPath: filepath.Join(n.bpffs, "nodemesh", "maps")})
	if err != nil {
		t.Fatal(err)
	}
	defer red.Close()
	if c, err := red.OptedIn(); err != nil || len(c) != 0 {
		t.Errorf("opted-in namespaces left: %v %v", c, err)
	}
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}

func ptr[T any](v T) *T { return &v }

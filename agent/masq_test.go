//go:build linux

package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/bpf"
)

// TestPlanNATPorts: the NAT port range never overlaps the node's ephemeral
// range (the node's own connections would collide with pods'), defaults to
// the ports above it, and bad input is a diagnostic.
func TestPlanNATPorts(t *testing.T) {
	linux := bpf.PortRange{Min: 32768, Max: 60999}
	tests := map[string]struct {
		ephemeral  bpf.PortRange
		configured string
		want       bpf.PortRange
		wantErr    string
	}{
		"default: above the kernel's default range":  {ephemeral: linux, want: bpf.PortRange{Min: 61000, Max: 65535}},
		"configured below the ephemeral range":       {ephemeral: linux, configured: "20000-29999", want: bpf.PortRange{Min: 20000, Max: 29999}},
		"configured overlapping the ephemeral range": {ephemeral: linux, configured: "30000-40000", wantErr: "overlaps the node's ephemeral port range"},
		"configured touching its last port":          {ephemeral: linux, configured: "60999-65535", wantErr: "overlaps"},
		"configured below 1024":                      {ephemeral: linux, configured: "1-2000", wantErr: "below 1024"},
		"configured too small":                       {ephemeral: linux, configured: "62000-62100", wantErr: "want at least 1024"},
		"configured garbage":                         {ephemeral: linux, configured: "many", wantErr: "want min-max"},
		"configured reversed":                        {ephemeral: linux, configured: "65000-62000", wantErr: "min <= max"},
		"ephemeral range up to 65535: no room":       {ephemeral: bpf.PortRange{Min: 1024, Max: 65535}, wantErr: "fewer than 1024 ports above it"},
		"ephemeral range almost to the top":          {ephemeral: bpf.PortRange{Min: 10000, Max: 65000}, wantErr: "fewer than 1024"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := planNATPorts(tc.ephemeral, tc.configured)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error %q, got %v (%v)", tc.wantErr, err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			if got.Overlaps(tc.ephemeral) {
				t.Errorf("%s overlaps the ephemeral range %s", got, tc.ephemeral)
			}
		})
	}
}

// TestParsePortRange: the sysctl's format (tab-separated) and the flag's.
func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]bpf.PortRange{"32768\t60999\n": {Min: 32768, Max: 60999}, "61000-65535": {Min: 61000, Max: 65535}} {
		if got, err := parsePortRange(in); err != nil || got != want {
			t.Errorf("%q: got %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0-10", "1-70000", "a-b", "1-2-3"} {
		if _, err := parsePortRange(in); err == nil {
			t.Errorf("%q: want an error", in)
		}
	}
}

// TestMasqExclusions: pod CIDRs of this node and of valid peers, every
// Node's address, the configured node addresses, link-local and the user's
// list are never masqueraded; a Node whose pod CIDR is rejected for routes
// (0.0.0.0/1) does not exempt half of the Internet.
func TestMasqExclusions(t *testing.T) {
	self := netip.MustParsePrefix("10.244.1.0/24")
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tests := map[string]struct {
		nodes   []*corev1.Node
		nodeIPs []netip.Addr
		user    []netip.Prefix
		want    []netip.Prefix
	}{
		"no nodes: own CIDR and link-local": {
			want: pfx("10.244.1.0/24", "169.254.0.0/16"),
		},
		"peers' CIDRs and every node's address": {
			nodes: []*corev1.Node{testNode("me", "192.168.0.1", "10.244.1.0/24"), testNode("b", "192.168.0.2", "10.244.2.0/24"),
				testNode("no-cidr", "192.168.0.3")},
			want: pfx("10.244.1.0/24", "10.244.2.0/24", "169.254.0.0/16", "192.168.0.1/32", "192.168.0.2/32", "192.168.0.3/32"),
		},
		"a Node claiming 0.0.0.0/1 exempts nothing but its address": {
			nodes: []*corev1.Node{testNode("me", "192.168.0.1", "10.244.1.0/24"), testNode("greedy", "192.168.0.9", "0.0.0.0/1")},
			want:  pfx("10.244.1.0/24", "169.254.0.0/16", "192.168.0.1/32", "192.168.0.9/32"),
		},
		"user list (masked, deduplicated) and node IPs; IPv6 ignored": {
			nodeIPs: []netip.Addr{netip.MustParseAddr("172.16.0.5"), netip.MustParseAddr("fd00::1")},
			user:    pfx("10.0.0.1/8", "10.0.0.0/8", "fd00::/8"),
			want:    pfx("10.0.0.0/8", "10.244.1.0/24", "169.254.0.0/16", "172.16.0.5/32"),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := masqExclusions(tc.nodes, "me", self, tc.nodeIPs, tc.user)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("exclusions (-want +got):\n%s", diff)
			}
		})
	}
}

package mapsync

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodemesh/nodemesh/bpf"
)

func ip(n byte) [4]byte { return [4]byte{10, 0, 0, n} }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func key(ep bpf.Identity, dir bpf.Direction, peer bpf.Identity, port uint16, proto uint8) bpf.PolicyKey {
	return bpf.PolicyKey{Endpoint: ep, Peer: peer, Port: port, Proto: proto, Dir: dir}
}

func endpoint(n byte, id bpf.Identity, flags bpf.EndpointFlags, rev uint32) bpf.Endpoint {
	return bpf.Endpoint{IP: ip(n), Identity: id, Flags: flags, PolicyRevision: rev}
}

const (
	in  = bpf.Ingress
	tcp = bpf.ProtoTCP
	iso = bpf.EnforceIngress
)

// scenario is a state the maps hold and the state the agent wants.
type scenario struct {
	have State
	want Want
}

// base: one pod (ifindex 1, 10.0.0.1, identity 300, isolated for ingress,
// revision 2) that allows 301 (10.0.0.2, on another node) on 80/TCP.
func base() scenario {
	return scenario{
		have: State{
			Identities:     map[netip.Prefix]bpf.Identity{pfx("10.0.0.1/32"): 300, pfx("10.0.0.2/32"): 301},
			Policies:       map[bpf.PolicyKey]bpf.Verdict{key(300, in, 301, 80, tcp): bpf.Allow},
			Endpoints:      map[int]bpf.Endpoint{1: endpoint(1, 300, iso, 2)},
			LocalEndpoints: map[[4]byte]LocalEndpoint{ip(1): {Endpoint: endpoint(1, 300, iso, 2), NetnsCookie: 7}},
		},
		want: Want{
			Identities: map[netip.Prefix]bpf.Identity{pfx("10.0.0.1/32"): 300, pfx("10.0.0.2/32"): 301},
			Policies:   map[bpf.PolicyKey]bpf.Verdict{key(300, in, 301, 80, tcp): bpf.Allow},
			Pods:       []Pod{{Ifindex: 1, IP: ip(1), Identity: 300, Flags: iso, NetnsCookie: 7}},
		},
	}
}

func (s scenario) mutate(f func(have *State, want *Want)) scenario {
	s.have = clone(s.have)
	w := Want{Identities: map[netip.Prefix]bpf.Identity{}, Policies: map[bpf.PolicyKey]bpf.Verdict{}, Pods: append([]Pod(nil), s.want.Pods...)}
	for k, v := range s.want.Identities {
		w.Identities[k] = v
	}
	for k, v := range s.want.Policies {
		w.Policies[k] = v
	}
	s.want = w
	f(&s.have, &s.want)
	return s
}

// withPod2 adds a second pod (ifindex 2, 10.0.0.3, identity 302) that
// allows 300 on 80, and that 300 allows on 80.
func withPod2(have *State, want *Want, inHave bool) {
	want.Identities[pfx("10.0.0.3/32")] = 302
	want.Policies[key(302, in, 300, 80, tcp)] = bpf.Allow
	want.Policies[key(300, in, 302, 80, tcp)] = bpf.Allow
	want.Pods = append(want.Pods, Pod{Ifindex: 2, IP: ip(3), Identity: 302, Flags: iso, NetnsCookie: 8})
	if inHave {
		have.Identities[pfx("10.0.0.3/32")] = 302
		have.Policies[key(302, in, 300, 80, tcp)] = bpf.Allow
		have.Policies[key(300, in, 302, 80, tcp)] = bpf.Allow
		have.Endpoints[2] = endpoint(3, 302, iso, 0)
		have.LocalEndpoints[ip(3)] = LocalEndpoint{Endpoint: endpoint(3, 302, iso, 0), NetnsCookie: 8}
	}
}

// scenarios are the table of TestNewPlan; TestPlanNeverAllowsMore checks
// each of them too.
var scenarios = map[string]struct {
	s     scenario
	lines []string
}{
	"an unchanged state writes nothing": {s: base()},
	"a deny replacing an allow is written while restricting; the revision last": {
		s: base().mutate(func(_ *State, w *Want) { w.Policies[key(300, in, 301, 80, tcp)] = bpf.Deny }),
		lines: []string{
			"restrict: policy 300 ingress 301 80/6 = deny",
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 3 cookie 7",
		},
	},
	"isolation is gained before the deny it replaces goes": {
		s: base().mutate(func(h *State, w *Want) {
			h.Policies = map[bpf.PolicyKey]bpf.Verdict{key(300, in, 301, 0, 0): bpf.Deny}
			h.Endpoints[1] = endpoint(1, 300, 0, 2)
			h.LocalEndpoints[ip(1)] = LocalEndpoint{Endpoint: endpoint(1, 300, 0, 2), NetnsCookie: 7}
			w.Policies = map[bpf.PolicyKey]bpf.Verdict{}
		}),
		lines: []string{
			"restrict: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 2",
			"restrict: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 2 cookie 7",
			"relax: policy 300 ingress 301 0/0 deleted",
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 3 cookie 7",
		},
	},
	"isolation gained alone: written while restricting, the revision last": {
		s: base().mutate(func(h *State, _ *Want) {
			h.Endpoints[1] = endpoint(1, 300, 0, 2)
			h.LocalEndpoints[ip(1)] = LocalEndpoint{Endpoint: endpoint(1, 300, 0, 2), NetnsCookie: 7}
		}),
		lines: []string{
			"restrict: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 2",
			"restrict: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 2 cookie 7",
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 3 cookie 7",
		},
	},
	"a new pod's entries are complete before its endpoint and address appear": {
		s: base().mutate(func(h *State, w *Want) { withPod2(h, w, false) }),
		lines: []string{
			"restrict: policy 300 ingress 302 80/6 = allow",
			"restrict: policy 302 ingress 300 80/6 = allow",
			"switch: endpoint 2 = 10.0.0.3 id 302 flags 1 rev 0",
			"switch: local 10.0.0.3 = 10.0.0.3 id 302 flags 1 rev 0 cookie 8",
			"switch: identity 10.0.0.3/32 = 302",
		},
	},
	"a deleted pod's endpoint and address go at the switch, its entries after": {
		s: base().mutate(func(h *State, w *Want) {
			withPod2(h, w, true)
			*w = base().want
		}),
		lines: []string{
			"switch: endpoint 2 deleted",
			"switch: local 10.0.0.3 deleted",
			"switch: identity 10.0.0.3/32 deleted",
			"relax: policy 300 ingress 302 80/6 deleted",
			"relax: policy 302 ingress 300 80/6 deleted",
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 3 cookie 7",
		},
	},
	"a relabeled pod: its new identity's entries first, the old ones after the switch": {
		s: base().mutate(func(_ *State, w *Want) {
			w.Identities[pfx("10.0.0.1/32")] = 303
			w.Policies = map[bpf.PolicyKey]bpf.Verdict{key(303, in, 301, 80, tcp): bpf.Allow}
			w.Pods[0].Identity = 303
		}),
		lines: []string{
			"restrict: policy 303 ingress 301 80/6 = allow",
			"switch: endpoint 1 = 10.0.0.1 id 303 flags 1 rev 2",
			"switch: local 10.0.0.1 = 10.0.0.1 id 303 flags 1 rev 2 cookie 7",
			"switch: identity 10.0.0.1/32 = 303",
			"relax: policy 300 ingress 301 80/6 deleted",
			"finalize: endpoint 1 = 10.0.0.1 id 303 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 303 flags 1 rev 3 cookie 7",
		},
	},
	"a peer's address changing identity: the allow of its new identity first, revisions last": {
		s: base().mutate(func(_ *State, w *Want) {
			w.Identities[pfx("10.0.0.2/32")] = 304
			w.Policies[key(300, in, 304, 80, tcp)] = bpf.Allow
		}),
		lines: []string{
			"restrict: policy 300 ingress 304 80/6 = allow",
			"switch: identity 10.0.0.2/32 = 304",
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 3 cookie 7",
		},
	},
	"an allow moving to another port is on neither between the phases": {
		s: base().mutate(func(_ *State, w *Want) {
			w.Policies = map[bpf.PolicyKey]bpf.Verdict{key(300, in, 301, 443, tcp): bpf.Allow}
		}),
		lines: []string{
			"restrict: policy 300 ingress 301 80/6 deleted",
			"relax: policy 300 ingress 301 443/6 = allow",
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 3 cookie 7",
		},
	},
	"a deny lifted while the pod stays open: relaxed, revision kept": {
		s: base().mutate(func(h *State, w *Want) {
			h.Policies[key(300, in, 301, 22, tcp)] = bpf.Deny
		}),
		lines: []string{
			"relax: policy 300 ingress 301 22/6 deleted",
			// A key of 300 went: revoked, as the agent always did.
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 3",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 3 cookie 7",
		},
	},
	"isolation lost goes last, with no new revision": {
		s: base().mutate(func(_ *State, w *Want) { w.Pods[0].Flags = 0 }),
		lines: []string{
			"finalize: endpoint 1 = 10.0.0.1 id 300 flags 0 rev 2",
			"finalize: local 10.0.0.1 = 10.0.0.1 id 300 flags 0 rev 2 cookie 7",
		},
	},
	"a pod's network namespace changed: its local endpoint switches": {
		s:     base().mutate(func(_ *State, w *Want) { w.Pods[0].NetnsCookie = 9 }),
		lines: []string{"switch: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 2 cookie 9"},
	},
	"an empty map gets everything; nothing is revised": {
		s: base().mutate(func(h *State, _ *Want) { *h = clone(State{}) }),
		lines: []string{
			"restrict: policy 300 ingress 301 80/6 = allow",
			"switch: endpoint 1 = 10.0.0.1 id 300 flags 1 rev 0",
			"switch: local 10.0.0.1 = 10.0.0.1 id 300 flags 1 rev 0 cookie 7",
			"switch: identity 10.0.0.1/32 = 300",
			"switch: identity 10.0.0.2/32 = 301",
		},
	},
}

func TestNewPlan(t *testing.T) {
	for name, tc := range scenarios {
		t.Run(name, func(t *testing.T) {
			got := NewPlan(tc.s.have, tc.s.want)
			if diff := cmp.Diff(tc.lines, got.Lines()); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			if len(tc.lines) != got.Writes() {
				t.Errorf("Writes() = %d, want %d", got.Writes(), len(tc.lines))
			}
		})
	}
}

// TestApply: the writes go through the interface in order; the first error
// stops the plan and is returned with its phase.
func TestApply(t *testing.T) {
	s := scenarios["a relabeled pod: its new identity's entries first, the old ones after the switch"].s
	plan := NewPlan(s.have, s.want)
	tests := map[string]struct {
		failAt int
		err    string
		writes int
	}{
		"all writes":                 {failAt: 0, writes: 7},
		"a failure in the switch":    {failAt: 3, err: "switch: injected failure", writes: 2},
		"a failure of the first one": {failAt: 1, err: "restrict: injected failure", writes: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFake(s.have)
			f.failAt = tc.failAt
			writes := 0
			f.after = func(State, string) { writes++ }
			err := Apply(f, plan)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || err.Error() != tc.err || !errors.Is(err, errInjected)) {
				t.Errorf("Apply = %v, want %q", err, tc.err)
			}
			if writes != tc.writes {
				t.Errorf("%d writes, want %d", writes, tc.writes)
			}
			if tc.err != "" {
				return
			}
			// Once applied, the maps hold what was wanted, and a new plan
			// is empty.
			if again := NewPlan(f.s, s.want); len(again.Ops) != 0 {
				t.Errorf("after Apply the plan is not empty:\n%s", strings.Join(again.Lines(), "\n"))
			}
		})
	}
}

// TestRead: the listings become a State; an error names the map.
func TestRead(t *testing.T) {
	s := base().have
	s.Ranges = map[bpf.PortRangeKey]bpf.Verdict{{Endpoint: 300, Peer: 301, Proto: 6, Block: bpf.PortBlock{Port: 1024, Bits: 6}}: bpf.Allow}
	got, err := Read(newFake(s))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	f := newFake(s)
	f.readErr = errInjected
	if _, err := Read(f); !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "identity map") {
		t.Errorf("Read = %v", err)
	}
}

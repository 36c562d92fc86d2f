package lbsync

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nodemesh/nodemesh/bpf"
)

// fakeMaps is the two maps in memory; check, when set, runs after every
// write (the programs read the maps between any two writes).
type fakeMaps struct {
	State
	check func() error
	err   error
}

func newFake() *fakeMaps {
	return &fakeMaps{State: State{Services: map[bpf.LBKey]bpf.LBService{}, Backends: map[uint32]bpf.LBBackend{}}}
}

func (m *fakeMaps) after() error {
	if m.check != nil && m.err == nil {
		m.err = m.check()
	}
	return nil
}
func (m *fakeMaps) LBServices() (map[bpf.LBKey]bpf.LBService, error) {
	return maps.Clone(m.Services), nil
}
func (m *fakeMaps) LBBackends() (map[uint32]bpf.LBBackend, error) { return maps.Clone(m.Backends), nil }
func (m *fakeMaps) PutLBService(k bpf.LBKey, v bpf.LBService) error {
	m.Services[k] = v
	return m.after()
}
func (m *fakeMaps) DeleteLBService(k bpf.LBKey) error { delete(m.Services, k); return m.after() }
func (m *fakeMaps) PutLBBackend(id uint32, b bpf.LBBackend) error {
	m.Backends[id] = b
	return m.after()
}
func (m *fakeMaps) DeleteLBBackend(id uint32) error { delete(m.Backends, id); return m.after() }

// resolve is what the programs can reach for a frontend: the backends of
// slots 1..count, or an error naming a slot or backend that is missing.
func resolve(s State, f Frontend) (bs []Backend, isFrontend bool, err error) {
	master, ok := s.Services[f.key(0)]
	if !ok {
		return nil, false, nil
	}
	for i := uint16(1); i <= master.Count; i++ {
		slot, ok := s.Services[f.key(i)]
		if !ok {
			return nil, true, fmt.Errorf("%s slot %d missing", f, i)
		}
		b, ok := s.Backends[slot.BackendID]
		if !ok {
			return nil, true, fmt.Errorf("%s slot %d names backend %d, not in the map", f, i, slot.BackendID)
		}
		bs = append(bs, backendOf(b))
	}
	return bs, true, nil
}

func tcp(s string) Frontend { return Frontend{Addr: netip.MustParseAddrPort(s), Proto: bpf.ProtoTCP} }
func udp(s string) Frontend { return Frontend{Addr: netip.MustParseAddrPort(s), Proto: bpf.ProtoUDP} }
func be(s string, proto uint8) Backend {
	return Backend{Addr: netip.MustParseAddrPort(s), Proto: proto}
}

// TestPlan applies each plan to a fake whose every intermediate state is
// checked: every slot the programs can reach names a backend in the map,
// one the frontend had before or has after. The final state must be the
// wanted one, and planning again must write nothing.
func TestPlan(t *testing.T) {
	a, b, c, d := be("10.244.0.5:8080", bpf.ProtoTCP), be("10.244.0.6:8080", bpf.ProtoTCP), be("10.244.0.7:8080", bpf.ProtoTCP), be("10.244.0.8:8080", bpf.ProtoTCP)
	dns1, dns2 := be("10.244.0.10:53", bpf.ProtoUDP), be("10.244.0.11:53", bpf.ProtoUDP)
	web, web2, kdns := tcp("10.96.0.20:80"), tcp("10.96.0.21:80"), udp("10.96.0.10:53")
	tests := map[string]struct {
		steps []Want
		// wantLines, when set, is the plan of the last step.
		wantLines []string
	}{
		"from empty": {steps: []Want{{web: {a, b}, kdns: {dns1}}}, wantLines: []string{
			"put backend 1 = 10.244.0.10:53/udp",
			"put backend 2 = 10.244.0.5:8080/tcp",
			"put backend 3 = 10.244.0.6:8080/tcp",
			"put slot 10.96.0.10:53/udp #1 = backend 1",
			"put frontend 10.96.0.10:53/udp = 1 slots",
			"put slot 10.96.0.20:80/tcp #1 = backend 2",
			"put slot 10.96.0.20:80/tcp #2 = backend 3",
			"put frontend 10.96.0.20:80/tcp = 2 slots",
		}},
		"a backend replaced: the new one is written before its slot, the old deleted last": {
			steps: []Want{{web: {a, b, c}}, {web: {a, d}}}, wantLines: []string{
				"put backend 4 = 10.244.0.8:8080/tcp",
				"put slot 10.96.0.20:80/tcp #2 = backend 4",
				"put frontend 10.96.0.20:80/tcp = 2 slots",
				"delete slot 10.96.0.20:80/tcp #3",
				"delete backend 2",
				"delete backend 3",
			}},
		"grows: slots before the count": {steps: []Want{{web: {a}}, {web: {a, b, c}}}, wantLines: []string{
			"put backend 2 = 10.244.0.6:8080/tcp",
			"put backend 3 = 10.244.0.7:8080/tcp",
			"put slot 10.96.0.20:80/tcp #2 = backend 2",
			"put slot 10.96.0.20:80/tcp #3 = backend 3",
			"put frontend 10.96.0.20:80/tcp = 3 slots",
		}},
		"last backend gone: the frontend stays and refuses": {steps: []Want{{web: {a}}, {web: nil}}, wantLines: []string{
			"put frontend 10.96.0.20:80/tcp = 0 slots",
			"delete slot 10.96.0.20:80/tcp #1",
			"delete backend 1",
		}},
		"frontend gone: master first, shared backend kept": {steps: []Want{{web: {a, b}, web2: {b}}, {web2: {b}}}, wantLines: []string{
			"delete frontend 10.96.0.20:80/tcp",
			"delete slot 10.96.0.20:80/tcp #1",
			"delete slot 10.96.0.20:80/tcp #2",
			"delete backend 1",
		}},
		"unchanged: nothing written": {steps: []Want{{web: {a, b}, kdns: {dns1, dns2}}, {web: {a, b}, kdns: {dns1, dns2}}}, wantLines: []string{}},
		"everything gone":            {steps: []Want{{web: {a, b}, kdns: {dns1}}, {}}},
		"many changes":               {steps: []Want{{web: {a, b, c}, kdns: {dns1}}, {web: {d}, web2: {a, c}, kdns: {dns2, dns1}}, {web2: {d, c, b, a}}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := newFake()
			var prev Want
			for i, want := range tc.steps {
				m.check = func() error {
					for _, f := range slices.Concat(sortedFrontends(prev), sortedFrontends(want)) {
						bs, _, err := resolve(m.State, f)
						if err != nil {
							return err
						}
						for _, b := range bs {
							if !slices.Contains(prev[f], b) && !slices.Contains(want[f], b) {
								return fmt.Errorf("%s reaches %s, neither an old nor a new backend of it", f, b)
							}
						}
					}
					return nil
				}
				have, err := Read(m)
				if err != nil {
					t.Fatal(err)
				}
				p := NewPlan(have, want)
				if err := Apply(m, p); err != nil {
					t.Fatal(err)
				}
				if m.err != nil {
					t.Fatalf("step %d: an intermediate state is wrong: %v\nplan:\n%v", i, m.err, p.Lines())
				}
				if i == len(tc.steps)-1 && tc.wantLines != nil {
					if diff := cmp.Diff(tc.wantLines, p.Lines(), cmp.Transformer("nonil", func(s []string) []string {
						if s == nil {
							return []string{}
						}
						return s
					})); diff != "" {
						t.Errorf("plan (-want +got):\n%s", diff)
					}
				}
				// The final state is the wanted one, and nothing else.
				for f, bs := range want {
					got, ok, err := resolve(m.State, f)
					if err != nil || !ok || !slices.Equal(got, bs) {
						t.Errorf("step %d: %s resolves to %v (frontend %v, %v), want %v", i, f, got, ok, err, bs)
					}
				}
				entries := 0
				for _, bs := range want {
					entries += 1 + len(bs)
				}
				if len(m.Services) != entries {
					t.Errorf("step %d: %d service entries, want %d", i, len(m.Services), entries)
				}
				if again := NewPlan(m.State, want); len(again.Ops) != 0 {
					t.Errorf("step %d: planning again writes %v", i, again.Lines())
				}
				prev = want
			}
		})
	}
}

func TestApplyStopsAtError(t *testing.T) {
	m := &failing{fakeMaps: newFake(), after: 1}
	p := NewPlan(State{}, Want{tcp("10.96.0.1:443"): {be("192.168.0.1:6443", bpf.ProtoTCP), be("192.168.0.2:6443", bpf.ProtoTCP)}})
	if err := Apply(m, p); !errors.Is(err, errBoom) {
		t.Fatalf("Apply = %v, want the writer's error", err)
	}
	if m.writes != 2 || len(m.Services) != 0 {
		t.Errorf("%d backend writes and %d service entries, want 2 and none (stop at the first error)", m.writes, len(m.Services))
	}
}

var errBoom = errors.New("boom")

type failing struct {
	*fakeMaps
	after, writes int
}

func (f *failing) PutLBBackend(id uint32, b bpf.LBBackend) error {
	f.writes++
	if f.writes > f.after {
		return errBoom
	}
	return f.fakeMaps.PutLBBackend(id, b)
}

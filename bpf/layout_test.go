//go:build linux

package bpf

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// TestMapLayouts checks the hand-written Go key and value types against the
// BTF of the compiled objects: same size, same field offsets. It needs no
// privileges.
func TestMapLayouts(t *testing.T) {
	policy, err := loadPolicy()
	if err != nil {
		t.Fatal(err)
	}
	redirect, err := loadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	type kv struct{ key, value any }
	tests := map[string]struct {
		spec *ebpf.CollectionSpec
		want kv
	}{
		policyMapNmEndpoints:    {policy, kv{uint32(0), Endpoint{}}},
		policyMapNmIpcache:      {policy, kv{ipcacheKey{}, Identity(0)}},
		policyMapNmPolicy:       {policy, kv{PolicyKey{}, Verdict(0)}},
		policyMapNmPolicyRanges: {policy, kv{rangeKey{}, Verdict(0)}},
		policyMapNmCt:           {policy, kv{ctKey{}, ctEntry{}}},
		policyMapNmPolStats:     {policy, kv{uint32(0), Count{}}},
		policyMapNmProxyCfg:     {policy, kv{uint32(0), proxyConfig{}}},
		policyMapNmLocalEps:     {policy, kv{[4]byte{}, localEndpoint{}}},
		policyMapNmInbound:      {policy, kv{inboundKey{}, uint32(0)}},
		policyMapNmInboundCfg:   {policy, kv{uint32(0), inboundConfig{}}},
		redirectMapNmRedirCfg:   {redirect, kv{uint32(0), redirectConfig{}}},
		redirectMapNmNetns:      {redirect, kv{uint64(0), netnsConfig{}}},
		redirectMapNmServices:   {redirect, kv{serviceKey{}, uint32(0)}},
		redirectMapNmRedirStats: {redirect, kv{uint32(0), uint64(0)}},
		redirectMapNmLbServices: {redirect, kv{LBKey{}, LBService{}}},
		redirectMapNmLbBackends: {redirect, kv{uint32(0), LBBackend{}}},
		redirectMapNmLbRevnat:   {redirect, kv{lbRevNATKey{}, lbRevNAT{}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := tc.spec.Maps[name]
			if m == nil {
				t.Fatalf("no map %s in the object", name)
			}
			sameLayout(t, "key", m.Key, reflect.TypeOf(tc.want.key))
			sameLayout(t, "value", m.Value, reflect.TypeOf(tc.want.value))
		})
	}
	if got, want := policy.Maps[policyMapNmPolStats].MaxEntries, uint32(2*reasonSlots); got != want {
		t.Errorf("%s has %d entries, want 2*%d (REASON_MAX)", policyMapNmPolStats, got, reasonSlots)
	}
	if got := policy.Maps[policyMapNmInbound].MaxEntries; got != MaxInboundCaptures {
		t.Errorf("%s has %d entries, MaxInboundCaptures says %d", policyMapNmInbound, got, MaxInboundCaptures)
	}
	if got := redirect.Maps[redirectMapNmLbServices].MaxEntries; got != MaxLBServiceEntries {
		t.Errorf("%s has %d entries, MaxLBServiceEntries says %d", redirectMapNmLbServices, got, MaxLBServiceEntries)
	}
	if got := redirect.Maps[redirectMapNmLbBackends].MaxEntries; got != MaxLBBackends {
		t.Errorf("%s has %d entries, MaxLBBackends says %d", redirectMapNmLbBackends, got, MaxLBBackends)
	}
	if got, want := redirect.Maps[redirectMapNmRedirStats].MaxEntries, uint32(NumRedirectReasons); got < want {
		t.Errorf("%s has %d entries, fewer than the %d reasons", redirectMapNmRedirStats, got, want)
	}
}

// TestSharedMapsAgree: the maps both objects define (c/policy_maps.h:
// policy, identities, local endpoints, inbound capture) are one map once
// pinned, so their definitions must be the same, or the second load fails
// with ebpf.ErrMapIncompatible.
func TestSharedMapsAgree(t *testing.T) {
	policy, err := loadPolicy()
	if err != nil {
		t.Fatal(err)
	}
	redirect, err := loadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	// The redirection programs read these for the node proxy's upstream
	// connections (egress decision, inbound capture at connect()).
	for _, name := range []string{policyMapNmIpcache, policyMapNmPolicy, policyMapNmPolicyRanges, policyMapNmLocalEps,
		redirectMapNmInbound, redirectMapNmInboundCfg} {
		if redirect.Maps[name] == nil {
			t.Errorf("the redirection object has no %s", name)
		}
	}
	for name, rm := range redirect.Maps {
		pm := policy.Maps[name]
		if pm == nil || strings.HasPrefix(name, ".") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if pm.Type != rm.Type || pm.MaxEntries != rm.MaxEntries || pm.Flags != rm.Flags {
				t.Errorf("policy: %v/%d/%#x, redirect: %v/%d/%#x", pm.Type, pm.MaxEntries, pm.Flags, rm.Type, rm.MaxEntries, rm.Flags)
			}
			for _, kv := range []struct {
				what   string
				pt, rt btf.Type
			}{{"key", pm.Key, rm.Key}, {"value", pm.Value, rm.Value}} {
				ps, perr := btf.Sizeof(kv.pt)
				rs, rerr := btf.Sizeof(kv.rt)
				if perr != nil || rerr != nil || ps != rs {
					t.Errorf("%s size: policy %d (%v), redirect %d (%v)", kv.what, ps, perr, rs, rerr)
				}
			}
		})
	}
}

func sameLayout(t *testing.T, what string, bt btf.Type, gt reflect.Type) {
	t.Helper()
	size, err := btf.Sizeof(bt)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if uintptr(size) != gt.Size() {
		t.Errorf("%s: C size %d, Go %s size %d", what, size, gt, gt.Size())
	}
	st, ok := btf.UnderlyingType(bt).(*btf.Struct)
	if !ok {
		if gt.Kind() == reflect.Struct {
			t.Errorf("%s: C type %s is not a struct, Go type %s is", what, bt, gt)
		}
		return
	}
	if gt.Kind() != reflect.Struct || gt.NumField() != len(st.Members) {
		t.Fatalf("%s: C struct %s has %d members, Go type %s does not match", what, st.Name, len(st.Members), gt)
	}
	for i, m := range st.Members {
		f := gt.Field(i)
		if uintptr(m.Offset.Bytes()) != f.Offset {
			t.Errorf("%s: %s.%s at offset %d, Go %s.%s at %d", what, st.Name, m.Name, m.Offset.Bytes(), gt, f.Name, f.Offset)
		}
		msize, err := btf.Sizeof(m.Type)
		if err != nil {
			t.Fatal(err)
		}
		if uintptr(msize) != f.Type.Size() {
			t.Errorf("%s: %s.%s is %d bytes, Go %s.%s is %d", what, st.Name, m.Name, msize, gt, f.Name, f.Type.Size())
		}
	}
}

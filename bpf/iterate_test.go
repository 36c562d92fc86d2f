//go:build linux

package bpf

import (
	"net/netip"
	"testing"
)

func TestListing(t *testing.T) {
	requireBPF(t)
	p, err := LoadPolicy(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.PutEndpoint(7, Endpoint{IP: ip4("10.244.0.2"), Identity: 300}); err != nil {
		t.Fatal(err)
	}
	if err := p.PutIdentity(netip.MustParsePrefix("10.0.0.0/8"), 400); err != nil {
		t.Fatal(err)
	}
	k := PolicyKey{Endpoint: 300, Peer: 400, Port: 80, Proto: ProtoTCP, Dir: Ingress}
	if err := p.PutPolicy(k, Allow); err != nil {
		t.Fatal(err)
	}
	eps, err := p.Endpoints()
	if err != nil || len(eps) != 1 || eps[7].Identity != 300 {
		t.Errorf("Endpoints = %v, %v", eps, err)
	}
	ids, err := p.Identities()
	if err != nil || ids[netip.MustParsePrefix("10.0.0.0/8")] != 400 || len(ids) != 1 {
		t.Errorf("Identities = %v, %v", ids, err)
	}
	pols, err := p.Policies()
	if err != nil || pols[k] != Allow || len(pols) != 1 {
		t.Errorf("Policies = %v, %v", pols, err)
	}
	use, err := p.Usage()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range use {
		want := map[string]int{"nm_endpoints": 1, "nm_ipcache": 1, "nm_policy": 1, "nm_ct": 0}[u.Name]
		if u.Entries != want || u.MaxEntries == 0 {
			t.Errorf("usage %+v, want %d entries", u, want)
		}
	}

	r, err := LoadRedirect(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	svc := netip.MustParseAddrPort("10.96.0.10:80")
	if err := r.PutService(svc); err != nil {
		t.Fatal(err)
	}
	if err := r.OptIn(42); err != nil {
		t.Fatal(err)
	}
	if s, err := r.Services(); err != nil || len(s) != 1 || s[0] != svc {
		t.Errorf("Services = %v, %v", s, err)
	}
	if c, err := r.OptedIn(); err != nil || len(c) != 1 || c[0] != 42 {
		t.Errorf("OptedIn = %v, %v", c, err)
	}
}

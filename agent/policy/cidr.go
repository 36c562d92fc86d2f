package policy

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"sort"

	"github.com/nodemesh/nodemesh/bpf"
)

// CIDR identities are node-local: they only appear in this node's maps, so
// they come from a range of their own above the cluster-wide identities.
const (
	CIDRIdentityBase  bpf.Identity = 1 << 24
	cidrIdentityCount              = 1 << 20
)

// IsCIDRIdentity reports whether id is a node-local CIDR identity.
func IsCIDRIdentity(id bpf.Identity) bool {
	return id >= CIDRIdentityBase && id < CIDRIdentityBase+cidrIdentityCount
}

// CIDRAllocator gives each ipBlock prefix a node-local identity and keeps it
// while the prefix is in use, so unrelated policy changes do not renumber
// (and so do not rewrite) entries.
type CIDRAllocator struct {
	ids  map[netip.Prefix]bpf.Identity
	used map[bpf.Identity]netip.Prefix
}

// NewCIDRAllocator returns an allocator that starts from existing
// assignments (read back from the pinned identity map after a restart).
func NewCIDRAllocator(existing map[netip.Prefix]bpf.Identity) *CIDRAllocator {
	a := &CIDRAllocator{ids: map[netip.Prefix]bpf.Identity{}, used: map[bpf.Identity]netip.Prefix{}}
	for p, id := range existing {
		if IsCIDRIdentity(id) {
			if _, taken := a.used[id]; !taken {
				a.ids[p.Masked()] = id
				a.used[id] = p.Masked()
			}
		}
	}
	return a
}

// assign returns identities for exactly the prefixes given, keeping earlier
// assignments and forgetting prefixes no longer used.
func (a *CIDRAllocator) assign(prefixes map[netip.Prefix]bool) map[netip.Prefix]bpf.Identity {
	for p, id := range a.ids {
		if !prefixes[p] {
			delete(a.ids, p)
			delete(a.used, id)
		}
	}
	sorted := make([]netip.Prefix, 0, len(prefixes))
	for p := range prefixes {
		sorted = append(sorted, p)
	}
	sort.Slice(sorted, func(i, j int) bool { return prefixLess(sorted[i], sorted[j]) })
	out := make(map[netip.Prefix]bpf.Identity, len(prefixes))
	for _, p := range sorted {
		id, ok := a.ids[p]
		if !ok {
			// Start from a hash of the prefix so the numbers do not depend
			// on the order prefixes appear in.
			h := fnv.New32a()
			b := p.Addr().As4()
			h.Write(b[:])
			h.Write([]byte{byte(p.Bits())})
			n := binary.BigEndian.Uint32(h.Sum(nil)) % cidrIdentityCount
			for {
				id = CIDRIdentityBase + bpf.Identity(n)
				if _, taken := a.used[id]; !taken {
					break
				}
				n = (n + 1) % cidrIdentityCount
			}
			a.ids[p] = id
			a.used[id] = p
		}
		out[p] = id
	}
	return out
}

func prefixLess(a, b netip.Prefix) bool {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Bits() < b.Bits()
}

// contains reports whether outer contains every address of inner.
func contains(outer, inner netip.Prefix) bool {
	return inner.Bits() >= outer.Bits() && outer.Contains(inner.Addr())
}

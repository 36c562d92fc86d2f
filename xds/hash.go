package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// hasher computes content versions of resources once each: resources shared
// by many nodes are hashed once per generation.
type hasher struct {
	mu   sync.Mutex
	memo map[types.Resource]string
}

func newHasher() *hasher { return &hasher{memo: map[types.Resource]string{}} }

// resource is the version of one resource: go-control-plane's digest of its
// deterministic wire form. It must be exactly go-control-plane's: the delta
// server sends that digest as the resource's version, and a node that
// reconnects presents it back (initial_resource_versions) to be compared
// with this one.
func (h *hasher) resource(m types.Resource) string {
	h.mu.Lock()
	v, ok := h.memo[m]
	h.mu.Unlock()
	if ok {
		return v
	}
	data, err := cachev3.MarshalResource(m)
	if err != nil {
		// Validated resources always marshal; should one not, give it a
		// version of its own rather than one that could hide a change.
		data = fmt.Appendf(nil, "%p", m)
	}
	v = cachev3.HashResource(data)
	h.mu.Lock()
	h.memo[m] = v
	h.mu.Unlock()
	return v
}

// typeVersion is the version of a set of resources of one type: a digest of
// their names and versions, so it changes exactly when one of them does.
func typeVersion(versions map[string]string) string {
	names := make([]string, 0, len(versions))
	for n := range versions {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(versions[n]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// resourceSet is the resources of one type with their versions.
type resourceSet struct {
	items    map[string]types.ResourceWithTTL
	versions map[string]string
	version  string
}

func (h *hasher) set(resources []types.Resource) *resourceSet {
	s := &resourceSet{
		items:    make(map[string]types.ResourceWithTTL, len(resources)),
		versions: make(map[string]string, len(resources)),
	}
	for _, r := range resources {
		name := resourceName(r)
		s.items[name] = types.ResourceWithTTL{Resource: r}
		s.versions[name] = h.resource(r)
	}
	s.version = typeVersion(s.versions)
	return s
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// with is the set with some resources replaced (by name); only those are
// hashed.
func (s *resourceSet) with(h *hasher, replaced []types.Resource) *resourceSet {
	out := &resourceSet{items: maps.Clone(s.items), versions: maps.Clone(s.versions)}
	for _, r := range replaced {
		name := resourceName(r)
		out.items[name] = types.ResourceWithTTL{Resource: r}
		out.versions[name] = h.resource(r)
	}
	out.version = typeVersion(out.versions)
	return out
}

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

// hasher encodes and versions resources once each: resources shared by
// many nodes are encoded and hashed once per generation.
type hasher struct {
	mu   sync.Mutex
	memo map[types.Resource]*encoded
}

type encoded struct {
	wire    *wire
	version string
}

func newHasher() *hasher { return &hasher{memo: map[types.Resource]*encoded{}} }

// encode returns a resource's wire value and version: go-control-plane's
// digest of its deterministic encoding. It must be exactly go-control-plane's:
// the delta server sends that digest as the resource's version, and a node
// that reconnects presents it back (initial_resource_versions) to be
// compared with this one.
func (h *hasher) encode(m types.Resource) *encoded {
	m = unwrap(m)
	h.mu.Lock()
	e, ok := h.memo[m]
	h.mu.Unlock()
	if ok {
		return e
	}
	data, err := cachev3.MarshalResource(m)
	if err != nil {
		// Validated resources always marshal; should one not, give it a
		// version of its own rather than one that could hide a change, and
		// leave its encoding to go-control-plane.
		e = &encoded{version: fmt.Sprintf("unencodable-%p", m)}
	} else {
		e = &encoded{wire: &wire{msg: m, bytes: data}, version: cachev3.HashResource(data)}
	}
	h.mu.Lock()
	h.memo[m] = e
	h.mu.Unlock()
	return e
}

// item is what a snapshot holds for a resource.
func (e *encoded) item(m types.Resource) types.ResourceWithTTL {
	if e.wire == nil {
		return types.ResourceWithTTL{Resource: m}
	}
	return types.ResourceWithTTL{Resource: e.wire}
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
	return (&resourceSet{}).with(h, resources)
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// with is the set with some resources added or replaced (by name); only
// those are hashed.
func (s *resourceSet) with(h *hasher, replaced []types.Resource) *resourceSet {
	out := &resourceSet{
		items:    make(map[string]types.ResourceWithTTL, len(s.items)+len(replaced)),
		versions: make(map[string]string, len(s.versions)+len(replaced)),
	}
	maps.Copy(out.items, s.items)
	maps.Copy(out.versions, s.versions)
	for _, r := range replaced {
		name := resourceName(r)
		e := h.encode(r)
		out.items[name] = e.item(r)
		out.versions[name] = e.version
	}
	out.version = typeVersion(out.versions)
	return out
}

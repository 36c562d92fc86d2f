package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// encode returns a resource as a snapshot holds it — its wire value — and
// its version: a digest of its deterministic encoding (64 bits of SHA-256,
// as hex). The delta server sends it as the resource's version and a node
// that reconnects presents it back (initial_resource_versions), so it must
// depend on the content alone; snapshots carry these versions in their
// version maps, so go-control-plane never computes its own (a full SHA-256
// in hex: 64 bytes per resource and node-visible copy, several megabytes at
// 10,000 Services).
func encode(m types.Resource) (types.ResourceWithTTL, string) {
	data, err := cachev3.MarshalResource(m)
	if err != nil {
		// Validated resources always marshal; should one not, give it a
		// version of its own rather than one that could hide a change, and
		// leave its encoding to go-control-plane.
		return types.ResourceWithTTL{Resource: m}, fmt.Sprintf("unencodable-%p", m)
	}
	w := &wire{name: cachev3.GetResourceName(m), typ: m.ProtoReflect().Type(), bytes: data}
	sum := sha256.Sum256(data)
	return types.ResourceWithTTL{Resource: w}, hex.EncodeToString(sum[:8])
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

// resourceSet is the resources of one type, encoded, with their versions.
// Sets are immutable once built: snapshots of many nodes share them.
type resourceSet struct {
	items    map[string]types.ResourceWithTTL
	versions map[string]string
	version  string
	// keys identifies the set's names: sets made from one another by
	// replacing resources (with) share it while no name comes or goes, so
	// a record kept as a difference from one set's names can move to the
	// next (nameSet) without comparing them.
	keys *keySet
}

// keySet is the identity of a set of names (see resourceSet.keys).
type keySet struct{ _ int }

// encodeSet encodes resources into a set.
func encodeSet[T types.Resource](resources []T) *resourceSet {
	return with(&resourceSet{}, resources)
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// with is the set with some resources added or replaced (by name); only
// those are encoded.
func with[T types.Resource](s *resourceSet, replaced []T) *resourceSet {
	out := &resourceSet{
		items:    make(map[string]types.ResourceWithTTL, len(s.items)+len(replaced)),
		versions: make(map[string]string, len(s.versions)+len(replaced)),
	}
	maps.Copy(out.items, s.items)
	maps.Copy(out.versions, s.versions)
	out.keys = s.keys
	for _, r := range replaced {
		name := cachev3.GetResourceName(r)
		if _, ok := out.items[name]; !ok {
			out.keys = nil // a new name
		}
		out.items[name], out.versions[name] = encode(r)
	}
	if out.keys == nil {
		out.keys = &keySet{}
	}
	out.version = typeVersion(out.versions)
	return out
}

// subset is the resources of the sets whose names keep accepts.
func subset(keep func(name string) bool, sets ...*resourceSet) *resourceSet {
	out := &resourceSet{items: map[string]types.ResourceWithTTL{}, versions: map[string]string{}, keys: &keySet{}}
	for _, s := range sets {
		for name, it := range s.items {
			if keep(name) {
				out.items[name], out.versions[name] = it, s.versions[name]
			}
		}
	}
	out.version = typeVersion(out.versions)
	return out
}

// bytes is the wire size of the set.
func (s *resourceSet) bytes() int {
	n := 0
	for _, it := range s.items {
		if w, ok := it.Resource.(*wire); ok {
			n += len(w.bytes)
		}
	}
	return n
}

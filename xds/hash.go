package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
)

// hasher computes content versions of resources once each: resources shared
// by many nodes are hashed once per generation.
type hasher struct {
	mu   sync.Mutex
	memo map[proto.Message]string
}

func newHasher() *hasher { return &hasher{memo: map[proto.Message]string{}} }

// resource is the version of one resource: a digest of its deterministic
// wire form.
func (h *hasher) resource(m proto.Message) string {
	h.mu.Lock()
	v, ok := h.memo[m]
	h.mu.Unlock()
	if ok {
		return v
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		// Validated resources always marshal; should one not, give it a
		// version of its own rather than one that could hide a change.
		data = fmt.Appendf(nil, "%p", m)
	}
	sum := sha256.Sum256(data)
	v = hex.EncodeToString(sum[:8])
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

package envoy

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Sharing identical RBAC policies within one build. A node's RBAC repeats
// itself: the same rule body in the policy of every namespace a template
// was applied to, the same sources and operations in rule after rule.
// Rendering builds four or five messages per value and protoc-gen-validate
// walks all of them, so BuildRBAC renders and validates each distinct rule
// body once and every RBAC policy with that body points to the same
// *rbacv3.Policy. That is sound because
//   - a rule's policy is a pure function of what ruleKey encodes (its
//     clauses' matches; names and fields are only in error messages,
//     which are rebuilt per rule — see BuildRBAC);
//   - nothing changes an RBAC policy once it is built (the filters are
//     packed into Anys; summaries and rbaceval only read), so sharing a
//     pointer is serialising the same message twice;
//   - validation is a function of the message, so validating the one
//     instance validates every use of it.
// TestRBACSharingIdentical compares the shared build with the unshared
// one; translate's TestRBACIdentical* pin the bytes to what the build
// emitted before sharing existed.

// policyShare is the distinct rule bodies of one BuildRBAC call, and the
// distinct matches of those bodies.
type policyShare struct {
	mu      sync.Mutex
	m       map[string]*sharedPolicy
	matches matchShare
}

func newPolicyShare() *policyShare {
	return &policyShare{m: map[string]*sharedPolicy{}, matches: matchShare{
		principals:  map[string][]*rbacv3.Principal{},
		permissions: map[string][]*rbacv3.Permission{},
	}}
}

// matchShare is the rendered principals and permissions of the distinct
// matches of one build: different rules often have a source or an
// operation in common (the same namespaces, the same health-check paths).
// The slices are clipped, so that a rule appending to one copies it.
type matchShare struct {
	mu          sync.Mutex
	principals  map[string][]*rbacv3.Principal
	permissions map[string][]*rbacv3.Permission
}

// principalsOf is principalsOf(m), shared with the identical matches of
// the build (s nil: not shared).
func (s *matchShare) principalsOf(m *ir.PolicyMatch) []*rbacv3.Principal {
	if s == nil {
		return principalsOf(m)
	}
	var buf [256]byte
	key := matchKey(buf[:0], m)
	s.mu.Lock()
	ps, ok := s.principals[string(key)]
	s.mu.Unlock()
	if !ok {
		// Two rules may render the same match at once: both results
		// are the same, either is kept.
		ps = slices.Clip(principalsOf(m))
		s.mu.Lock()
		s.principals[string(key)] = ps
		s.mu.Unlock()
	}
	return ps
}

// permissionsOf is permissionsOf(m), shared like principalsOf; a match
// that fails is not kept (its rule is rebuilt alone for the error).
func (s *matchShare) permissionsOf(m *ir.PolicyMatch) ([]*rbacv3.Permission, error) {
	if s == nil {
		return permissionsOf(m)
	}
	var buf [256]byte
	key := matchKey(buf[:0], m)
	s.mu.Lock()
	ps, ok := s.permissions[string(key)]
	s.mu.Unlock()
	if !ok {
		var err error
		if ps, err = permissionsOf(m); err != nil {
			return nil, err
		}
		ps = slices.Clip(ps)
		s.mu.Lock()
		s.permissions[string(key)] = ps
		s.mu.Unlock()
	}
	return ps, nil
}

// sharedPolicy is one distinct rule body's policy, rendered and validated
// once (by the first job that needs it; the others wait on once).
type sharedPolicy struct {
	once sync.Once
	out  *rbacv3.Policy
	err  error
}

// get is the entry of key, created if it is new: the lookup with a []byte
// key does not allocate, so only distinct bodies cost a string.
func (s *policyShare) get(key []byte) *sharedPolicy {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[string(key)]
	if !ok {
		e = &sharedPolicy{}
		s.m[string(key)] = e
	}
	return e
}

// ruleKey appends an injective encoding of everything rbacPolicy renders
// of a rule (every string length-prefixed, every list counted) to b. It
// leaves out what rbacPolicy does not read or reads only for an error
// message: the rule's, clauses' and matches' Field, the rule's Direction
// and Degradations; of peer workload selectors (which have no RBAC form:
// matchSide rejects them) only their number. TestRuleKeyCoversPolicyModel
// fails when the model gains a field this does not account for.
func ruleKey(b []byte, r *ir.PolicyRule) []byte {
	b = append(b, 'r')
	b = binary.AppendUvarint(b, uint64(len(r.Clauses)))
	for i := range r.Clauses {
		c := &r.Clauses[i]
		b = binary.AppendUvarint(b, uint64(len(c.Matches)))
		for j := range c.Matches {
			b = matchKey(b, &c.Matches[j])
		}
	}
	return b
}

func matchKey(b []byte, m *ir.PolicyMatch) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Workloads)))
	b = keyGlobs(b, m.Principals)
	b = keyGlobs(b, m.NotPrincipals)
	b = keyGlobs(b, m.Namespaces)
	b = keyGlobs(b, m.NotNamespaces)
	b = keyBlocks(b, m.IPBlocks)
	b = keyBlocks(b, m.NotIPBlocks)
	b = keyGlobs(b, m.TrustDomains)
	b = keyGlobs(b, m.NotTrustDomains)
	b = keyPorts(b, m.Ports)
	b = keyPorts(b, m.NotPorts)
	b = binary.AppendUvarint(b, uint64(len(m.L7)))
	for i := range m.L7 {
		c := &m.L7[i]
		b = keyString(b, string(c.Attribute))
		b = keyString(b, c.Name)
		b = binary.AppendUvarint(b, uint64(len(c.Path)))
		for _, p := range c.Path {
			b = keyString(b, p)
		}
		b = keyGlobs(b, c.Values)
		b = keyGlobs(b, c.NotValues)
	}
	return b
}

func keyString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func keyGlobs(b []byte, gs []ir.Glob) []byte {
	b = binary.AppendUvarint(b, uint64(len(gs)))
	for _, g := range gs {
		b = keyString(b, string(g))
	}
	return b
}

func keyPrefix(b []byte, p netip.Prefix) []byte {
	// netip's binary form: the address (0, 4 or 16 bytes, which tells
	// the family) then the prefix length; length-prefixed like a string.
	n := len(b)
	b = append(b, 0)
	b, _ = p.AppendBinary(b) // never fails
	b[n] = byte(len(b) - n - 1)
	return b
}

func keyBlocks(b []byte, bs []ir.IPBlock) []byte {
	b = binary.AppendUvarint(b, uint64(len(bs)))
	for _, blk := range bs {
		b = keyPrefix(b, blk.CIDR)
		b = binary.AppendUvarint(b, uint64(len(blk.Except)))
		for _, e := range blk.Except {
			b = keyPrefix(b, e)
		}
	}
	return b
}

func keyPorts(b []byte, ps []ir.PortMatch) []byte {
	b = binary.AppendUvarint(b, uint64(len(ps)))
	for _, p := range ps {
		b = keyString(b, string(p.Protocol))
		b = binary.AppendUvarint(b, uint64(p.Port))
		b = binary.AppendUvarint(b, uint64(p.EndPort))
		b = keyString(b, p.Name)
	}
	return b
}

package authz

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// PeerAuthentication (security.istio.io v1/v1beta1): which mutual TLS mode a
// workload's port has, with istiod's precedence (docs/design/policy.md §10).
// The rules are istiod's own, read from istio.io/istio:
//
//   - pilot/pkg/model/authentication.go getConfigsForWorkload: the policies of
//     the workload's namespace and of the root namespace take part; one with
//     a selector only when its matchLabels are a subset of the pod's labels.
//   - pilot/pkg/security/authn/policy_applier.go ComposePeerAuthentication:
//     a policy with no selector or empty matchLabels is mesh-level in the
//     root namespace and namespace-level elsewhere; a policy with a selector
//     in the root namespace is ignored; among several of one level the
//     oldest wins (creationTimestamp, then name, then namespace:
//     pilot/pkg/model/config.go configCompareByCreationTime); the mode is
//     the mesh's, overridden by the namespace's, overridden by the
//     workload's, UNSET (or no mtls) inheriting from the level above and
//     PERMISSIVE when nothing is set; portLevelMtls is read from the
//     workload-level policy only, an UNSET port inheriting the workload's
//     mode.
//   - pkg/config/validation ValidatePeerAuthentication rejects portLevelMtls
//     without a selector and ports outside 1..65535; an API server without
//     Istio's webhook may still hold them: they are reported and ignored, as
//     istiod ignores them.

// PeerAuthnKind is the kind of PeerAuthentication sources.
const PeerAuthnKind = "PeerAuthentication"

// MTLSMode is the effective mutual TLS mode of a port.
type MTLSMode string

// The modes a port can have once UNSET is resolved.
const (
	ModePermissive MTLSMode = "PERMISSIVE"
	ModeStrict     MTLSMode = "STRICT"
	ModeDisable    MTLSMode = "DISABLE"
)

// PeerAuthnLevel is where an effective mode comes from.
type PeerAuthnLevel string

// The levels, narrowest last; LevelDefault is Istio's PERMISSIVE when no
// policy sets a mode, LevelUnreadable a policy the reader could not decode
// (enforced as STRICT: the safe side).
const (
	LevelDefault    PeerAuthnLevel = "default"
	LevelMesh       PeerAuthnLevel = "mesh"
	LevelNamespace  PeerAuthnLevel = "namespace"
	LevelWorkload   PeerAuthnLevel = "workload"
	LevelPort       PeerAuthnLevel = "port"
	LevelUnreadable PeerAuthnLevel = "unreadable"
)

// PeerAuthnSetting is an effective mode and the policy that decided it
// (zero for the default).
type PeerAuthnSetting struct {
	Mode  MTLSMode
	Level PeerAuthnLevel
	From  ir.ResourceRef
}

func (s PeerAuthnSetting) String() string {
	if s.From.Name == "" {
		return fmt.Sprintf("%s (%s)", s.Mode, s.Level)
	}
	return fmt.Sprintf("%s (%s: %s/%s)", s.Mode, s.Level, s.From.Namespace, s.From.Name)
}

// EffectivePeerAuthn is the peer authentication of one workload: a mode for
// every port, and the ports a workload-level policy sets apart.
type EffectivePeerAuthn struct {
	Workload PeerAuthnSetting
	Ports    map[uint32]PeerAuthnSetting
}

// Port is the effective setting of a (container) port.
func (e EffectivePeerAuthn) Port(port uint32) PeerAuthnSetting {
	if s, ok := e.Ports[port]; ok {
		return s
	}
	return e.Workload
}

// SortedPorts are the ports set apart, in order.
func (e EffectivePeerAuthn) SortedPorts() []uint32 {
	out := make([]uint32, 0, len(e.Ports))
	for p := range e.Ports {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// StrictPorts says which TCP ports require an authenticated peer: every
// port but except (all true), or exactly ports (all false).
func (e EffectivePeerAuthn) StrictPorts() (all bool, ports []uint32) {
	all = e.Workload.Mode == ModeStrict
	for _, p := range e.SortedPorts() {
		if strict := e.Ports[p].Mode == ModeStrict; strict != all {
			ports = append(ports, p)
		}
	}
	return all, ports
}

// PeerAuthentications are a cluster's PeerAuthentications, indexed as
// istiod indexes them, ready to answer for workloads.
type PeerAuthentications struct {
	root string
	// byNamespace are the policies taking part, oldest first.
	byNamespace map[string][]*securityv1.PeerAuthentication
	unreadable  map[string]ir.ResourceRef
	// Diagnostics are what istiod ignores and why, per policy.
	Diagnostics ir.Diagnostics
}

// NewPeerAuthentications indexes policies; rootNamespace "" is Istio's
// default. Unreadable are policies the caller could not decode: the pods
// of their namespace (every pod, in the root namespace) are STRICT on every
// port whatever else applies — the reading that denies the most.
func NewPeerAuthentications(pas []*securityv1.PeerAuthentication, rootNamespace string, unreadable []ir.ResourceRef) *PeerAuthentications {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	idx := &PeerAuthentications{root: rootNamespace, byNamespace: map[string][]*securityv1.PeerAuthentication{},
		unreadable: map[string]ir.ResourceRef{}}
	for _, ref := range unreadable {
		if old, ok := idx.unreadable[ref.Namespace]; !ok || ref.Name < old.Name {
			idx.unreadable[ref.Namespace] = ref
		}
	}
	sorted := slices.DeleteFunc(slices.Clone(pas), func(pa *securityv1.PeerAuthentication) bool { return pa == nil })
	slices.SortFunc(sorted, func(a, b *securityv1.PeerAuthentication) int {
		return cmp.Or(a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Namespace, b.Namespace))
	})
	// The oldest namespace- or mesh-level policy of a namespace wins
	// (authentication.go addPeerAuthentication keeps only it).
	levelPolicy := map[string]*securityv1.PeerAuthentication{}
	for _, pa := range sorted {
		ref := ir.ResourceRef{Kind: PeerAuthnKind, Namespace: pa.Namespace, Name: pa.Name}
		diag := func(sev ir.Severity, code ir.Code, field, format string, args ...any) {
			idx.Diagnostics = append(idx.Diagnostics, ir.Diagnostic{Severity: sev, Code: code, Resource: ref, Field: field,
				Message: fmt.Sprintf(format, args...)})
		}
		spec := &pa.Spec
		if !hasSelector(spec) {
			if first, ok := levelPolicy[pa.Namespace]; ok {
				level := "namespace"
				if pa.Namespace == rootNamespace {
					level = "mesh"
				}
				diag(ir.SeverityWarning, ir.CodeConflict, "spec", "ignored: the %s-level PeerAuthentication %s is older and wins, as in istiod",
					level, first.Name)
				continue
			}
			levelPolicy[pa.Namespace] = pa
			if len(spec.PortLevelMtls) > 0 {
				diag(ir.SeverityError, ir.CodeInvalidValue, "spec.portLevelMtls",
					"a mesh- or namespace-level PeerAuthentication cannot have port-level mTLS (Istio rejects it); ignored, as istiod ignores it")
			}
		} else if pa.Namespace == rootNamespace {
			diag(ir.SeverityWarning, ir.CodeUnreachable, "spec.selector",
				"a PeerAuthentication with a selector in the root namespace %s applies to no workload; ignored, as istiod ignores it", rootNamespace)
			continue
		}
		for _, port := range sortedKeys(spec.PortLevelMtls) {
			if port == 0 || port > 65535 {
				diag(ir.SeverityError, ir.CodeInvalidValue, "spec.portLevelMtls["+strconv.FormatUint(uint64(port), 10)+"]",
					"port %d is outside 1..65535 (Istio rejects it); it matches no port", port)
			}
		}
		idx.byNamespace[pa.Namespace] = append(idx.byNamespace[pa.Namespace], pa)
	}
	return idx
}

// RootNamespace is the namespace of mesh-wide policies.
func (idx *PeerAuthentications) RootNamespace() string { return idx.root }

// For is the effective peer authentication of a pod of namespace with
// labels (ComposePeerAuthentication over getConfigsForWorkload's policies).
func (idx *PeerAuthentications) For(namespace string, labels map[string]string) EffectivePeerAuthn {
	if idx == nil {
		return EffectivePeerAuthn{Workload: PeerAuthnSetting{Mode: ModePermissive, Level: LevelDefault}}
	}
	for _, ns := range []string{namespace, idx.root} {
		if ref, ok := idx.unreadable[ns]; ok {
			return EffectivePeerAuthn{Workload: PeerAuthnSetting{Mode: ModeStrict, Level: LevelUnreadable, From: ref}}
		}
	}
	var mesh, nsLevel, workload *securityv1.PeerAuthentication
	namespaces := []string{namespace}
	if namespace != idx.root {
		namespaces = append(namespaces, idx.root)
	}
	for _, ns := range namespaces {
		for _, pa := range idx.byNamespace[ns] {
			switch {
			case !hasSelector(&pa.Spec) && ns == idx.root:
				if mesh == nil {
					mesh = pa
				}
			case !hasSelector(&pa.Spec):
				if nsLevel == nil {
					nsLevel = pa
				}
			case ns != idx.root && subset(pa.Spec.Selector.MatchLabels, labels):
				if workload == nil {
					workload = pa
				}
			}
		}
	}
	out := EffectivePeerAuthn{Workload: PeerAuthnSetting{Mode: ModePermissive, Level: LevelDefault}}
	for _, l := range []struct {
		pa    *securityv1.PeerAuthentication
		level PeerAuthnLevel
	}{{mesh, LevelMesh}, {nsLevel, LevelNamespace}, {workload, LevelWorkload}} {
		if l.pa == nil || unset(l.pa.Spec.Mtls) {
			continue
		}
		out.Workload = PeerAuthnSetting{Mode: modeOf(l.pa.Spec.Mtls.Mode), Level: l.level, From: refOf(l.pa)}
	}
	if workload == nil || len(workload.Spec.PortLevelMtls) == 0 {
		return out
	}
	out.Ports = map[uint32]PeerAuthnSetting{}
	for port, m := range workload.Spec.PortLevelMtls {
		if port == 0 || port > 65535 {
			continue
		}
		if unset(m) {
			out.Ports[port] = out.Workload // inherits the workload's setting
			continue
		}
		out.Ports[port] = PeerAuthnSetting{Mode: modeOf(m.Mode), Level: LevelPort, From: refOf(workload)}
	}
	return out
}

// hasSelector: a selector with no matchLabels is no selector (istiod).
func hasSelector(spec *securityapi.PeerAuthentication) bool {
	return spec.Selector != nil && len(spec.Selector.MatchLabels) > 0
}

func unset(m *securityapi.PeerAuthentication_MutualTLS) bool {
	return m == nil || m.Mode == securityapi.PeerAuthentication_MutualTLS_UNSET
}

func modeOf(m securityapi.PeerAuthentication_MutualTLS_Mode) MTLSMode {
	switch m {
	case securityapi.PeerAuthentication_MutualTLS_DISABLE:
		return ModeDisable
	case securityapi.PeerAuthentication_MutualTLS_PERMISSIVE:
		return ModePermissive
	}
	// STRICT, and a value no Istio version defines (the decoder rejects
	// unknown names; a number could slip through): the safe side.
	return ModeStrict
}

func refOf(pa *securityv1.PeerAuthentication) ir.ResourceRef {
	return ir.ResourceRef{Kind: PeerAuthnKind, Namespace: pa.Namespace, Name: pa.Name}
}

// subset: every selector label is on the pod (labels.Instance.SubsetOf).
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

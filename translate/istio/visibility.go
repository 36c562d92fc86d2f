package istio

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// exportTo values with a meaning of their own (Istio's visibility.Instance).
const (
	exportPrivate = "."
	exportPublic  = "*"
	exportNone    = "~"
)

// exportSet is a resolved exportTo: "." is replaced by the resource's
// namespace, so that a set is a list of namespaces, "*" or "~".
type exportSet []string

// public says whether the set exports to every namespace.
func (e exportSet) public() bool { return slices.Contains(e, exportPublic) }

// visibleTo is Istio's visibility check for a client namespace. A client
// without a namespace (the default class) sees only what is exported to
// "*": Istio has no proxy without a namespace, and "*" is the only value
// that names every namespace, whatever it is.
func (e exportSet) visibleTo(clientNamespace string) bool {
	return e.public() || (clientNamespace != "" && slices.Contains(e, clientNamespace))
}

// resolveExportTo replaces "." with the namespace.
func resolveExportTo(namespace string, values []string) exportSet {
	out := make(exportSet, 0, len(values))
	for _, v := range values {
		if v == exportPrivate {
			v = namespace
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// validateExportTo is Istio's validateExportTo for VirtualServices and
// DestinationRules (pkg/config/validation/validation.go): ".", "*" or a
// DNS-1123 label, no duplicates ("." counts as the namespace), "*" alone;
// "~" is not allowed on these kinds. Istio's admission rejects a resource
// that fails it, so the caller ignores the resource.
func validateExportTo(namespace string, values []string) error {
	seen := map[string]bool{}
	var errs []string
	for _, v := range values {
		key := v
		if v == exportPrivate {
			key = namespace
		}
		switch {
		case seen[key]:
			errs = append(errs, fmt.Sprintf("duplicate entry %q", v))
			continue
		case v == exportNone:
			errs = append(errs, "exportTo ~ (none) is not allowed for Istio configuration objects")
		case v != exportPrivate && v != exportPublic && !dns1123Label.MatchString(v):
			errs = append(errs, fmt.Sprintf("%q is not ., * or a namespace name (DNS-1123 label)", v))
		}
		seen[key] = true
	}
	if seen[exportPublic] && len(values) > 1 {
		errs = append(errs, "cannot have both public (*) and non-public exportTo values")
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid exportTo: %s", strings.Join(errs, "; "))
	}
	return nil
}

// exportToOf resolves a resource's exportTo, or the mesh default when it
// has none (Istio's exportToDefaults: "*" when the mesh sets none).
func exportToOf(namespace string, values, meshDefault []string) exportSet {
	if len(values) == 0 {
		values = meshDefault
		if len(values) == 0 {
			values = []string{exportPublic}
		}
	}
	return resolveExportTo(namespace, values)
}

// checkExportTo validates a VirtualService's or DestinationRule's exportTo;
// false means Istio's admission would have rejected the resource, which is
// then ignored.
func (t *translator) checkExportTo(ref ir.ResourceRef, exportTo []string) bool {
	if err := validateExportTo(ref.Namespace, exportTo); err != nil {
		t.diags.Errorf(ir.CodeInvalidValue, ref, "spec.exportTo", "%v; Istio rejects the resource, so it is ignored", err)
		return false
	}
	if len(exportTo) > 0 && !slices.Contains(exportTo, exportPublic) {
		t.diags.Infof(ir.CodeSourceSelector, ref, "spec.exportTo",
			"exportTo %v limits which client namespaces see this resource; nodemesh evaluates it per source class, and the default class (translation without pods, no namespace) sees only what is exported to \"*\"", exportTo)
	}
	return true
}

// serviceExportToAnnotation is Istio's per-Service exportTo
// (annotation.NetworkingExportTo).
const serviceExportToAnnotation = "networking.istio.io/exportTo"

// indexServiceExportTo reads each Service's exportTo annotation as Istio's
// kube registry does (pilot/pkg/serviceregistry/kube/conversion.go: split on
// ",", spaces trimmed). Istio does not validate it: an entry that is not a
// namespace name simply matches no client; nodemesh warns about it.
func (t *translator) serviceExportTo(s *service) exportSet {
	raw, ok := s.obj.Annotations[serviceExportToAnnotation]
	if !ok || raw == "" {
		return exportToOf(s.namespace, nil, t.opts.DefaultServiceExportTo)
	}
	var values []string
	for _, v := range strings.Split(raw, ",") {
		v = strings.TrimSpace(v)
		if v != exportPrivate && v != exportPublic && v != exportNone && !dns1123Label.MatchString(v) {
			t.diags.Warnf(ir.CodeInvalidValue, s.ref, "metadata.annotations."+serviceExportToAnnotation,
				"exportTo entry %q is not ., *, ~ or a namespace name; it matches no client (as in Istio)", v)
		}
		values = append(values, v)
	}
	return resolveExportTo(s.namespace, values)
}

// serviceVisible is Istio's PushContext.IsServiceVisible for a client
// namespace.
func (t *translator) serviceVisible(s *service, clientNamespace string) bool {
	return s.exportTo.visibleTo(clientNamespace)
}

// ValidateMeshExportTo checks a mesh config default exportTo
// (defaultVirtualServiceExportTo, defaultDestinationRuleExportTo,
// defaultServiceExportTo): Istio's mesh config documents "." and "*" as the
// values.
func ValidateMeshExportTo(values []string) error {
	for _, v := range values {
		if v != exportPrivate && v != exportPublic {
			return fmt.Errorf("mesh default exportTo %q: only . and * are allowed", v)
		}
	}
	if len(values) > 1 {
		return fmt.Errorf("mesh default exportTo %v: one of . or *", values)
	}
	return nil
}

package ir

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Severity says how bad a Diagnostic is.
type Severity string

const (
	// SeverityError: the resource (or the part of it named by Field) was not
	// translated, or was translated in a way that cannot be what the user meant.
	SeverityError Severity = "error"
	// SeverityWarning: translated, but something is ignored or behaves
	// differently from Istio; the message says what.
	SeverityWarning Severity = "warning"
	// SeverityInfo: nothing is wrong; nodemesh explains a decision.
	SeverityInfo Severity = "info"
)

func (s Severity) rank() int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	default:
		return 2
	}
}

// ResourceRef names a Kubernetes object.
type ResourceRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

func (r ResourceRef) String() string {
	switch {
	case r.Namespace != "":
		return r.Kind + " " + r.Namespace + "/" + r.Name
	case r.Name != "":
		return strings.TrimSpace(r.Kind + " " + r.Name)
	default:
		return r.Kind
	}
}

// Compare orders references by kind, namespace and name.
func (r ResourceRef) Compare(o ResourceRef) int {
	return cmp.Or(cmp.Compare(r.Kind, o.Kind), cmp.Compare(r.Namespace, o.Namespace), cmp.Compare(r.Name, o.Name))
}

// Code classifies a diagnostic so that scripts and the migration analyzer can
// act on it without parsing messages. Codes are stable; messages are not.
type Code string

const (
	CodeDecode            Code = "Decode"            // the document is not valid YAML/JSON or not an object
	CodeUnknownField      Code = "UnknownField"      // strict decoding found a field the schema does not have
	CodeInvalidValue      Code = "InvalidValue"      // a value is out of range or malformed
	CodeDuplicate         Code = "Duplicate"         // a later document replaced an earlier one (kubectl apply semantics)
	CodeIgnoredKind       Code = "IgnoredKind"       // a kind nodemesh does not translate (yet)
	CodeUnsupportedField  Code = "UnsupportedField"  // a field nodemesh does not implement yet; it is ignored
	CodeHostNotFound      Code = "HostNotFound"      // a host or destination names no known Service
	CodeSubsetNotFound    Code = "SubsetNotFound"    // a destination names a subset no DestinationRule defines
	CodePortNotFound      Code = "PortNotFound"      // a destination port the Service does not have
	CodeNoEndpoints       Code = "NoEndpoints"       // a subset or Service selects no endpoint
	CodeConflict          Code = "Conflict"          // two resources claim the same thing; one wins
	CodeUnreachable       Code = "Unreachable"       // a rule can never match
	CodeSourceSelector    Code = "SourceSelector"    // sourceLabels/sourceNamespace/exportTo evaluated per source class
	CodeGatewayOnly       Code = "GatewayOnly"       // the resource applies to gateways only
	CodeChangedBehavior   Code = "ChangedBehavior"   // works, but differently from an Istio sidecar
	CodeInvalidXDS        Code = "InvalidXDS"        // an emitted xDS resource failed validation and was withheld
	CodeAmbiguousHostname Code = "AmbiguousHostname" // a short host name maps to several Services
	CodeDelegate          Code = "Delegate"          // a delegate VirtualService is missing, hidden from its root, unused, or a rule of it conflicts with the root's match
)

// Diagnostic is a finding about the input. Diagnostics are data: the
// translator never panics and never silently drops a rule; it reports here.
type Diagnostic struct {
	Severity Severity    `json:"severity"`
	Code     Code        `json:"code"`
	Resource ResourceRef `json:"resource"`
	// Field is the path of the offending field inside the resource, e.g.
	// spec.http[0].route[1].destination.subset.
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	// File and Line locate the field (or the document) when the resource was
	// read from a file.
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// Location is "file:line", "file" or "".
func (d Diagnostic) Location() string {
	switch {
	case d.File != "" && d.Line > 0:
		return d.File + ":" + strconv.Itoa(d.Line)
	default:
		return d.File
	}
}

// String renders the diagnostic the way the CLI prints it:
//
//	samples/x.yaml:12: error: VirtualService default/reviews: spec.http[0].route[0].destination.subset: subset "v9" not found [SubsetNotFound]
func (d Diagnostic) String() string {
	var b strings.Builder
	if loc := d.Location(); loc != "" {
		b.WriteString(loc)
		b.WriteString(": ")
	}
	b.WriteString(string(d.Severity))
	b.WriteString(": ")
	if d.Resource.Kind != "" || d.Resource.Name != "" {
		b.WriteString(d.Resource.String())
		b.WriteString(": ")
	}
	if d.Field != "" {
		b.WriteString(d.Field)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	if d.Code != "" {
		fmt.Fprintf(&b, " [%s]", d.Code)
	}
	return b.String()
}

// Diagnostics is an ordered collection with helpers for the producers.
type Diagnostics []Diagnostic

// Add appends a diagnostic.
func (ds *Diagnostics) Add(sev Severity, code Code, res ResourceRef, field, format string, args ...any) {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	*ds = append(*ds, Diagnostic{Severity: sev, Code: code, Resource: res, Field: field, Message: msg})
}

// Errorf adds an error.
func (ds *Diagnostics) Errorf(code Code, res ResourceRef, field, format string, args ...any) {
	ds.Add(SeverityError, code, res, field, format, args...)
}

// Warnf adds a warning.
func (ds *Diagnostics) Warnf(code Code, res ResourceRef, field, format string, args ...any) {
	ds.Add(SeverityWarning, code, res, field, format, args...)
}

// Infof adds an info.
func (ds *Diagnostics) Infof(code Code, res ResourceRef, field, format string, args ...any) {
	ds.Add(SeverityInfo, code, res, field, format, args...)
}

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool {
	for _, d := range ds {
		if d.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Count returns the number of diagnostics of a severity.
func (ds Diagnostics) Count(sev Severity) int {
	n := 0
	for _, d := range ds {
		if d.Severity == sev {
			n++
		}
	}
	return n
}

// Sort orders diagnostics by file position first (so output follows the
// input), then by resource, field, severity and message, and drops exact
// duplicates.
func (ds Diagnostics) Sort() Diagnostics {
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			a.Resource.Compare(b.Resource),
			cmp.Compare(a.Field, b.Field),
			cmp.Compare(a.Severity.rank(), b.Severity.rank()),
			cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Message, b.Message),
		)
	})
	return slices.Compact(ds)
}

package istio

import (
	"errors"
	"regexp"
	"strings"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Istio's header rules (pkg/config/validation/validation.go and
// header_value_validator.go); each exists because Envoy rejects the
// configuration otherwise.

// validHeaderName is RFC 7230's token (Istio's validHeaderNameRegex).
var validHeaderName = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~A-Za-z0-9]+$")

// pseudoHeaders may be matched on (Istio's pseudoHeaders).
var pseudoHeaders = map[string]bool{":method": true, ":scheme": true, ":authority": true, ":path": true, ":status": true}

// invalidHeaderValue matches the characters Envoy refuses in a header value
// (Istio's httpHeaderValueRegexp, PGV's HTTP_HEADER_VALUE: controls but tab).
var invalidHeaderValue = regexp.MustCompile("[\u0000-\u0008\u000A-\u001F\u007F]")

// headerOp checks the name of a header operation: request set/add may name
// the authority (a host rewrite) but no other pseudo-header; removals and
// response operations may name neither Host nor a pseudo-header (Istio's
// ValidateHTTPHeaderWithAuthorityOperationName / ValidateHTTPHeaderOperationName;
// Envoy: ":-prefixed or host headers may not be modified").
func (v vsValidator) headerOp(field ir.Path, name string, requestSet bool, fail failFunc) {
	switch {
	case name == "":
	case requestSet && isAuthorityHeader(name):
	case strings.HasPrefix(name, ":"):
		fail(field.Field(name), "header %q cannot have a \":\" prefix", name)
	case strings.EqualFold(name, "host"):
		fail(field.Field(name), "the Host header cannot be set or removed here")
	}
}

// headerValueError is Istio's ValidateHTTPHeaderValue: no control
// characters, and Envoy's %VARIABLE% syntax well formed (a lone % must be
// written %%), which Envoy's header parser enforces.
func headerValueError(value string) error {
	if invalidHeaderValue.MatchString(value) {
		return errors.New("control characters (NUL, CR, LF…) are not allowed")
	}
	return ir.HeaderFormatError(value)
}

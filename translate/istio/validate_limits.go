package istio

import (
	"math"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// Limits Envoy enforces on what Istio's validation accepts: a rule over one
// of them is left out (an error naming the field) rather than emitted, since
// the node would reject the whole route configuration — every route of the
// port — for it.

// maxRegexLength is Istio's limit on a regular expression's length
// (validateStringRegexp): its stand-in for RE2's program size.
const maxRegexLength = 1024

// regexSize checks a regular expression that compiles against Istio's
// length limit (fail: Istio rejects the resource) and against the RE2
// program size the node Envoy accepts (drop: Istio accepts it, Envoy would
// not — Istio's length limit does not bound the program size: `\p{L}{20}`
// is 10 characters and ~24,000 RE2 instructions).
func (v vsValidator) regexSize(field ir.Path, re string, fail, drop failFunc) {
	if len(re) > maxRegexLength {
		fail(field, "regular expression is %d characters long; Istio allows at most %d", len(re), maxRegexLength)
		return
	}
	size, err := ir.RE2ProgramSize(re)
	switch {
	case err != nil:
		fail(field, "%v", err)
	case size > ir.RE2MaxProgramSize:
		drop(field, "regular expression may compile to an RE2 program of %d instructions (a bound: nodemesh cannot run RE2 itself); the node Envoy rejects programs over %d (re2.max_program_size.error_level), which would take down every route of the port", size, ir.RE2MaxProgramSize)
	}
}

// weightSum checks the total weight of a rule's destinations: Envoy rejects
// weighted clusters whose weights add up to more than 2^32-1 (Istio sums
// int32 weights without checking, so it accepts them and emits them).
// A single destination is not a weighted cluster; its weight is ignored.
func (v vsValidator) weightSum(field ir.Path, n int, total int64, drop failFunc) {
	if n > 1 && total > math.MaxUint32 {
		drop(field, "the weights add up to %d; Envoy rejects weighted clusters over %d", total, uint64(math.MaxUint32))
	}
}

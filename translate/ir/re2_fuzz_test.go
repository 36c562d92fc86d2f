package ir

import (
	"regexp/syntax"
	"strings"
	"testing"
)

// FuzzRE2ProgramSize: any input gives a size or an error, never a panic;
// an expression Go accepts gets a bound no smaller than Go's own program
// (RE2's byte program is never smaller than its rune program), and an
// expression Go rejects is an error (RE2 rejects it too: Go's syntax is
// RE2's).
func FuzzRE2ProgramSize(f *testing.F) {
	for _, s := range []string{"a", `^/api/v[0-9]+/.*$`, `\p{L}{10}`, `(?i)straße`, `[^\x00-\x7f]+`, "(", "a{1001}", `(?i)[a-\x{3fff}]{3}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		size, err := RE2ProgramSize(expr)
		re, perr := syntax.Parse(expr, syntax.Perl)
		if perr != nil {
			if err == nil {
				t.Fatalf("%q: Go rejects it (%v) but the bound is %d", expr, perr, size)
			}
			return
		}
		prog, cerr := syntax.Compile(re.Simplify())
		if cerr != nil {
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", expr, err)
		}
		insts := 0
		for _, in := range prog.Inst {
			if in.Op != syntax.InstNop {
				insts++
			}
		}
		if size < insts {
			t.Fatalf("%q: bound %d below Go's %d instructions", expr, size, insts)
		}
	})
}

// FuzzHeaderFormatError: never a panic; a value without % is always
// valid, and so is any value with each % doubled (how Istio's users write a
// literal %).
func FuzzHeaderFormatError(f *testing.F) {
	for _, s := range []string{"plain", "100%%", "%HOSTNAME%", "%REQ(x-a)%", `%START_TIME(["%s"])%`, "50%", "%A(", `%A(["a",`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		err := HeaderFormatError(v)
		if !strings.Contains(v, "%") && err != nil {
			t.Fatalf("%q has no %% but: %v", v, err)
		}
		if err := HeaderFormatError(strings.ReplaceAll(v, "%", "%%")); err != nil {
			t.Fatalf("%q with each %% doubled: %v", v, err)
		}
	})
}

package ir

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestRE2ProgramSizeBound compares RE2ProgramSize with the sizes libre2
// itself reports (testdata/re2sizes.tsv, written by hack/re2size.cc): the
// bound must never be below RE2's size — a regex Envoy would reject must
// never pass — and stays within a small factor of it.
func TestRE2ProgramSizeBound(t *testing.T) {
	f, err := os.Open("testdata/re2sizes.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		sizeText, expr, ok := strings.Cut(line, "\t")
		want, err := strconv.Atoi(sizeText)
		if !ok || err != nil {
			t.Fatalf("bad line %q", line)
		}
		n++
		got, err := RE2ProgramSize(expr)
		if err != nil {
			t.Errorf("%q: %v", expr, err)
			continue
		}
		if got < want {
			t.Errorf("%q: bound %d is below RE2's program size %d", expr, got, want)
		}
		if got > 4*want+16 {
			t.Errorf("%q: bound %d is far above RE2's program size %d", expr, got, want)
		}
		t.Logf("%6d %6d %s", want, got, expr)
	}
	if n < 40 {
		t.Fatalf("only %d expressions in the table", n)
	}
}

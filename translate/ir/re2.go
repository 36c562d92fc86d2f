package ir

import (
	"fmt"
	"regexp/syntax"
	"slices"
	"unicode"
	"unicode/utf8"
)

// RE2MaxProgramSize is the largest RE2 program a node Envoy accepts in a
// regular expression (its runtime key re2.max_program_size.error_level).
// Envoy's default is 100, which a path regex with one Unicode class already
// exceeds; the node bootstrap (xds.Bootstrap) raises it to Istio's value
// (tools/packaging/common/envoy_bootstrap.json, "re2.max_program_size.error_level":
// 32768), and the translator validates against the same constant.
const RE2MaxProgramSize = 32768

// RE2ProgramSize bounds from above the size of the program RE2 compiles for
// expr — what Envoy compares with re2.max_program_size.error_level (RE2's
// ProgramSize()). Go's regexp/syntax compiles a program of runes where RE2's
// is of bytes: a Go instruction matching a rune class becomes one RE2
// instruction per byte of each UTF-8 sequence covering the class (`.` is 1
// Go instruction, 7 in RE2; `\p{L}` 1 and ~1,190). The bound counts every
// other Go instruction as one and each rune class as the total length of its
// UTF-8 sequences (RE2 shares common suffixes, so it needs at most that), with
// case folding expanded. It is never below RE2's size (checked against
// libre2 in TestRE2ProgramSizeBound) and close to it for ASCII expressions.
// The error is the parse error of an expression RE2 (and Go) reject.
func RE2ProgramSize(expr string) (int, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return 0, fmt.Errorf("invalid RE2 regular expression: %w", err)
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, fmt.Errorf("invalid RE2 regular expression: %w", err)
	}
	size := 0
	// A repeated class (x{1000}) is costed once: folding a large class
	// walks its runes.
	costs := map[string]int{}
	for _, in := range prog.Inst {
		switch in.Op {
		case syntax.InstRune, syntax.InstRune1:
			fold := syntax.Flags(in.Arg)&syntax.FoldCase != 0
			key := fmt.Sprint(fold, in.Rune)
			c, ok := costs[key]
			if !ok {
				c = classCost(in.Rune, fold)
				costs[key] = c
			}
			size += c
		case syntax.InstRuneAny:
			size += classCost([]rune{0, unicode.MaxRune}, false)
		case syntax.InstRuneAnyNotNL:
			size += classCost([]rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune}, false)
		case syntax.InstNop:
			// Go's compiler leaves no-ops RE2's flattening removes.
		default:
			size++
		}
	}
	// RE2 adds a fail instruction and the unanchored-search loop Go leaves
	// to its matcher.
	return size + re2Overhead, nil
}

// maxFoldRunes bounds the runes whose case-folding orbits are expanded one
// by one; a larger folded class is charged three times its unfolded cost
// (an orbit has at most four members, the rune included, and most classes
// that large already contain their folds).
const maxFoldRunes = 1 << 14

// classCost is the total length of the UTF-8 byte sequences covering a rune
// class given as Go's Inst.Rune: a single rune, or pairs lo, hi.
func classCost(runes []rune, fold bool) int {
	var ranges [][2]rune
	if len(runes) == 1 {
		ranges = [][2]rune{{runes[0], runes[0]}}
	} else {
		for i := 0; i+1 < len(runes); i += 2 {
			ranges = append(ranges, [2]rune{runes[i], runes[i+1]})
		}
	}
	if fold {
		n := 0
		for _, r := range ranges {
			n += int(r[1]-r[0]) + 1
		}
		if n > maxFoldRunes {
			return 3 * rangesCost(ranges)
		}
		for _, r := range slices.Clone(ranges) {
			for c := r[0]; c <= r[1]; c++ {
				for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
					ranges = append(ranges, [2]rune{f, f})
				}
			}
		}
		ranges = mergeRanges(ranges)
	}
	return rangesCost(ranges)
}

func mergeRanges(ranges [][2]rune) [][2]rune {
	slices.SortFunc(ranges, func(a, b [2]rune) int { return int(a[0] - b[0]) })
	var out [][2]rune
	for _, r := range ranges {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

func rangesCost(ranges [][2]rune) int {
	cost := 0
	for _, r := range ranges {
		cost += utf8Cost(r[0], r[1])
	}
	return cost
}

// utf8Boundaries are the last runes of each UTF-8 encoding length.
var utf8Boundaries = []rune{0x7f, 0x7ff, 0xffff, unicode.MaxRune}

// utf8Cost is the total length of the UTF-8 byte-range sequences that cover
// [lo, hi]: the range is split where the encoding length changes, then until
// every continuation byte of a piece either is one value or spans 80–BF —
// the split RE2's compiler makes (and Rust's regex-syntax Utf8Sequences).
func utf8Cost(lo, hi rune) int {
	if lo > hi {
		return 0
	}
	for _, b := range utf8Boundaries {
		if lo <= b && hi > b {
			return utf8Cost(lo, b) + utf8Cost(b+1, hi)
		}
	}
	n := utf8.RuneLen(lo)
	if n < 0 { // a surrogate: RE2 encodes it like any 3-byte rune
		n = 3
	}
	for i := 1; i < n; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				return utf8Cost(lo, lo|m) + utf8Cost((lo|m)+1, hi)
			}
			if hi&m != m {
				return utf8Cost(lo, (hi&^m)-1) + utf8Cost(hi&^m, hi)
			}
		}
	}
	return n
}

// re2Overhead covers the instructions RE2's program has and Go's does not
// (measured: 2 on every expression of testdata/re2sizes.tsv; doubled for
// margin).
const re2Overhead = 4

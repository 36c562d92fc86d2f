//go:build linux

package bpf

import (
	"fmt"
	"testing"
)

// TestPortBlocks checks the decomposition exhaustively: for each range,
// every one of the 65,536 ports is in a block exactly when it is in the
// range, and in one block only; blocks are aligned and at most 2x15.
func TestPortBlocks(t *testing.T) {
	tests := map[string][2]uint16{
		"single":             {80, 80},
		"ephemeral":          {1024, 65535},
		"every valid port":   {1, 65535},
		"aligned 1024":       {1024, 2047},
		"unaligned both":     {1000, 3001},
		"wider than 1024":    {30000, 32767},
		"two":                {65534, 65535},
		"zero to max":        {0, 65535},
		"odd":                {3, 5},
		"empty (last<first)": {10, 9},
		"worst case":         {1, 65534},
		"one below power":    {32767, 32768},
	}
	for name, r := range tests {
		t.Run(name, func(t *testing.T) {
			first, last := r[0], r[1]
			blocks := PortBlocks(first, last)
			if len(blocks) > 30 {
				t.Errorf("%d blocks, want ≤ 30", len(blocks))
			}
			var covered [65536]int
			for _, b := range blocks {
				if b.Bits > 16 {
					t.Fatalf("block %+v: bits > 16", b)
				}
				if _, err := (PortRangeKey{Block: b}).raw(); err != nil {
					t.Errorf("block %v: %v", b, err)
				}
				for p := uint32(b.Port); p <= uint32(b.Last()); p++ {
					covered[p]++
				}
			}
			for p := range 65536 {
				in := first <= last && uint16(p) >= first && uint16(p) <= last
				if want := map[bool]int{true: 1, false: 0}[in]; covered[p] != want {
					t.Fatalf("port %d is in %d blocks, want %d (blocks %v)", p, covered[p], want, blocks)
				}
			}
			// The lookup the program does finds a block for exactly
			// the ports of the range.
			m := map[PortRangeKey]Verdict{}
			for _, b := range blocks {
				m[PortRangeKey{Proto: ProtoTCP, Block: b}] = Allow
			}
			for p := range 65536 {
				in := first <= last && uint16(p) >= first && uint16(p) <= last
				if got := RangeVerdict(m, PortRangeKey{Proto: ProtoTCP}, uint16(p)) == Allow; got != in {
					t.Fatalf("lookup of port %d = %v, want %v", p, got, in)
				}
			}
		})
	}
}

// TestNormalizeRanges: after normalization the longest-match lookup gives
// deny wherever any deny block contains the port, else allow wherever an
// allow block does — the hash's "deny wins", exhaustively over the ports.
func TestNormalizeRanges(t *testing.T) {
	type rng struct {
		first, last uint16
		v           Verdict
	}
	tests := map[string][]rng{
		"allow inside deny":        {{1024, 65535, Allow}, {1, 65535, Deny}},
		"deny inside allow":        {{1024, 65535, Allow}, {40000, 40000, Deny}},
		"overlapping, unaligned":   {{1000, 5000, Allow}, {3000, 9000, Deny}, {8000, 8100, Allow}},
		"allow only":               {{10, 20, Allow}, {15, 30, Allow}},
		"deny same block as allow": {{1024, 2047, Allow}, {1024, 2047, Deny}},
	}
	for name, rs := range tests {
		t.Run(name, func(t *testing.T) {
			m := map[PortRangeKey]Verdict{}
			for _, r := range rs {
				for _, b := range PortBlocks(r.first, r.last) {
					k := PortRangeKey{Endpoint: 300, Peer: 301, Proto: ProtoTCP, Block: b}
					if m[k] != Deny { // deny wins on the same key
						m[k] = r.v
					}
				}
			}
			NormalizeRanges(m)
			for p := range 65536 {
				want := Verdict(0)
				for _, r := range rs {
					if uint16(p) >= r.first && uint16(p) <= r.last && (want == 0 || r.v == Deny) {
						want = r.v
					}
				}
				if got := RangeVerdict(m, PortRangeKey{Endpoint: 300, Peer: 301, Proto: ProtoTCP}, uint16(p)); got != want {
					t.Fatalf("port %d: %v, want %v", p, got, want)
				}
			}
		})
	}
}

func ExamplePortBlocks() {
	fmt.Println(PortBlocks(1024, 65535))
	fmt.Println(PortBlocks(1000, 1100))
	// Output:
	// [1024-2047 2048-4095 4096-8191 8192-16383 16384-32767 32768-65535]
	// [1000-1007 1008-1023 1024-1087 1088-1095 1096-1099 1100]
}

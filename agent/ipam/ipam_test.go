package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
)

func owner(i int) Owner { return Owner{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"} }

func TestAllocate(t *testing.T) {
	tests := map[string]struct {
		cidr string
		n    int
		want []string
		err  error
	}{
		"first addresses skip network and gateway": {cidr: "10.244.1.0/24", n: 3, want: []string{"10.244.1.2", "10.244.1.3", "10.244.1.4"}},
		"/30 has one pod address":                  {cidr: "10.0.0.0/30", n: 1, want: []string{"10.0.0.2"}},
		"/30 exhausted":                            {cidr: "10.0.0.0/30", n: 2, want: []string{"10.0.0.2"}, err: ErrExhausted},
		"unmasked prefix":                          {cidr: "10.9.0.7/29", n: 5, want: []string{"10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.TempDir(), netip.MustParsePrefix(tc.cidr))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range tc.n {
				a, err := s.Allocate(owner(i))
				if err != nil {
					if tc.err == nil || !errors.Is(err, tc.err) {
						t.Fatalf("allocate %d: %v", i, err)
					}
					break
				}
				got = append(got, a.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	for name, cidr := range map[string]string{"ipv6": "fd00::/64", "/31": "10.0.0.0/31", "/32": "10.0.0.1/32"} {
		t.Run(name, func(t *testing.T) {
			if _, err := Open(t.TempDir(), netip.MustParsePrefix(cidr)); err == nil {
				t.Errorf("Open(%s) succeeded", cidr)
			}
		})
	}
}

func TestIdempotentAndRelease(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, netip.MustParsePrefix("10.244.0.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := s.Allocate(owner(1))
	again, _ := s.Allocate(owner(1))
	if a1 != again {
		t.Fatalf("second ADD of the same container got %s, first %s", again, a1)
	}
	other, _ := s.Allocate(Owner{ContainerID: "c1", IfName: "net1"})
	if other == a1 {
		t.Fatalf("another interface of the same container got the same address %s", a1)
	}
	freed, ok, err := s.Release("c1", "eth0")
	if err != nil || !ok || freed != a1 {
		t.Fatalf("release = %s %v %v, want %s", freed, ok, err, a1)
	}
	if _, ok, err := s.Release("c1", "eth0"); err != nil || ok {
		t.Fatalf("second release = %v %v, want nothing, no error", ok, err)
	}
	// Round robin: the freed address is not the next one handed out.
	next, _ := s.Allocate(owner(2))
	if next == a1 {
		t.Errorf("released %s was reused at once", a1)
	}
}

// TestRestartNeverDoubleAllocates reopens the store (an agent restart) and
// checks that no address is handed out twice, also when the round-robin
// hint is lost.
func TestRestartNeverDoubleAllocates(t *testing.T) {
	dir := t.TempDir()
	cidr := netip.MustParsePrefix("10.244.0.0/28") // 13 pod addresses
	seen := map[netip.Addr]string{}
	for round := range 3 {
		s, err := Open(dir, cidr)
		if err != nil {
			t.Fatal(err)
		}
		if round == 2 {
			if err := removeHint(dir); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 4 {
			o := owner(round*10 + i)
			a, err := s.Allocate(o)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if prev, dup := seen[a]; dup {
				t.Fatalf("round %d: %s handed out to %s and before to %s", round, a, o.ContainerID, prev)
			}
			seen[a] = o.ContainerID
		}
		// A repeated ADD after the restart gets the address from before it.
		if round > 0 {
			if a, err := s.Allocate(owner(0)); err != nil || seen[a] != "c0" {
				t.Fatalf("round %d: c0 got %s (%v), which belongs to %q", round, a, err, seen[a])
			}
		}
	}
	s, _ := Open(dir, cidr)
	leases, _ := s.Leases()
	if len(leases) != 12 {
		t.Errorf("%d leases on disk, want 12", len(leases))
	}
}

func removeHint(dir string) error { return os.Remove(dir + "/last") }

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	cidr := netip.MustParsePrefix("10.1.0.0/24")
	// Two stores on one directory stand for two processes.
	s1, _ := Open(dir, cidr)
	s2, _ := Open(dir, cidr)
	var mu sync.Mutex
	seen := map[netip.Addr]bool{}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := s1
			if i%2 == 1 {
				s = s2
			}
			a, err := s.Allocate(owner(i))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[a] {
				t.Errorf("%s allocated twice", a)
			}
			seen[a] = true
		}()
	}
	wg.Wait()
}

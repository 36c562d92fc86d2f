package translate

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/nodemesh/nodemesh/internal/golden"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// The RBAC build shares identical principals, permissions and policies
// between the rules that render them (translate/envoy/rbac_share.go). These
// tests pin what it emits, byte for byte, to digests the unshared build
// wrote before sharing existed (testdata/rbac/*.golden): the packed filters
// — name, type URL and deterministic encoding — of the authorization oracle
// corpus and of BenchmarkAuthorizationPolicies' input, HTTP and TCP. An
// intended change of the RBAC output is accepted with UPDATE_GOLDEN=1 after
// TestRBACSharingIdentical (translate/envoy) shows the shared and unshared
// builds still agree.

// rbacDigests is one line per filter BuildRBAC emits for pols: its action,
// size and the SHA-256 of the filter as served (the HTTP or network filter
// with its packed configuration).
func rbacDigests(t *testing.T, name string, pols []ir.Policy) string {
	t.Helper()
	var b strings.Builder
	for _, tcp := range []bool{false, true} {
		filters, _, err := BuildRBAC(pols, tcp)
		if err != nil {
			fmt.Fprintf(&b, "%s tcp=%v error %v\n", name, tcp, err)
			continue
		}
		for i, f := range filters {
			var m proto.Message
			if tcp {
				m, err = f.NetworkFilter()
			} else {
				m, err = f.HTTPFilter()
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s tcp=%v filter[%d] %s custom=%v %d bytes sha256:%x\n", name, tcp, i, f.Action, f.Custom, len(data), sha256.Sum256(data))
		}
	}
	return b.String()
}

func TestRBACIdenticalBenchmarkInput(t *testing.T) {
	pols, _ := istio.AuthorizationPolicies(syntheticAuthz(1000, 10), AuthzOptions{})
	golden.Check(t, "testdata/rbac/benchmark.golden", []byte(rbacDigests(t, "1000x10", pols)))
}

func TestRBACIdenticalOracleCorpus(t *testing.T) {
	dir := needShared(t)
	ins, _ := filepath.Glob(filepath.Join(dir, "istio-authz", "*", "*-in.yaml"))
	ambient, _ := filepath.Glob(filepath.Join(dir, "istio-ambient-authz", "*-in.yaml"))
	ins = append(ins, ambient...)
	if len(ins) == 0 {
		t.Fatalf("no cases under %s", dir)
	}
	var b strings.Builder
	for _, in := range ins {
		name, _ := filepath.Rel(dir, in)
		sub := filepath.Base(filepath.Dir(in))
		c := authzCases[sub+"/"+strings.TrimSuffix(filepath.Base(in), "-in.yaml")]
		pols, _ := loadAuthz(t, in, AuthzOptions{TrustDomain: c.td, TrustDomainAliases: c.aliases})
		b.WriteString(rbacDigests(t, name, pols))
	}
	golden.Check(t, "testdata/rbac/oracle.golden", []byte(b.String()))
}

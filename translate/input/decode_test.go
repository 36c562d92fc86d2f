package input

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/translate/ir"
)

func load(t *testing.T, text string) (*Bag, ir.Diagnostics) {
	t.Helper()
	l := NewLoader("")
	l.LoadBytes("in.yaml", []byte(text))
	return l.Bag(), l.Diagnostics()
}

func TestDecodeDiagnostics(t *testing.T) {
	tests := map[string]struct {
		in string
		// want lists "line code field" of the expected diagnostics, in order.
		want []string
		// objects is the number of translated objects expected in the bag.
		objects int
	}{
		"unknown field in a VirtualService spec names field and line": {
			in: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subsett: v1
`,
			want:    []string{`11 UnknownField spec.http[0].route[0].destination.subsett unknown field "subsett" (did you mean "subset"?)`},
			objects: 0,
		},
		"snake_case key is unknown, with a hint": {
			in: `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - retries: {attempts: 2, per_try_timeout: 2s}
    route: [{destination: {host: r}}]
`,
			want: []string{`7 UnknownField spec.http[0].retries.per_try_timeout unknown field "per_try_timeout" (did you mean "perTryTimeout"?)`},
		},
		"a duration Go cannot parse": {
			in: `apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - timeout: 1d
    route: [{destination: {host: r}}]
`,
			want: []string{`7 InvalidValue spec.http[0].timeout invalid duration "1d": use a number with a unit (ms, s, m, h), e.g. 1.5s, 250ms or 2m`},
		},
		"Go-style durations are read as istiod reads them": {
			in: `apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - timeout: 1m30s
    retries: {attempts: 2, perTryTimeout: 250ms}
    route: [{destination: {host: r}}]
`,
			objects: 1,
		},
		"two members of a oneof": {
			in: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - match:
    - uri: {exact: /a, prefix: /b}
    route: [{destination: {host: r}}]
`,
			want: []string{`8 InvalidValue spec.http[0].match[0].uri.prefix only one of exact and prefix may be set`},
		},
		"wrong enum and scalar types": {
			in: `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: r
  trafficPolicy:
    loadBalancer: {simple: FASTEST}
    connectionPool: {tcp: {maxConnections: lots}}
`,
			want: []string{
				`7 InvalidValue spec.trafficPolicy.loadBalancer.simple unknown value "FASTEST", expected one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST`,
				`8 InvalidValue spec.trafficPolicy.connectionPool.tcp.maxConnections expected an integer, got the string "lots"`,
			},
		},
		"unknown field in a Service": {
			in: `apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports:
  - port: 80
    nme: http
`,
			want: []string{`7 UnknownField spec.ports[0].nme unknown field "nme"`},
		},
		"a broken document does not stop the next one": {
			in: `apiVersion: v1
kind: Service
metadata: {name: a
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {ports: [{port: 80}]}
`,
			want:    []string{`2 Decode  invalid YAML: did not find expected ',' or '}'`},
			objects: 1,
		},
		"later document replaces the earlier one": {
			in: `apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
`,
			want:    []string{`5 Duplicate  replaces the definition at in.yaml:1 (kubectl apply semantics: the last one wins)`},
			objects: 1,
		},
		"other kinds are reported and ignored": {
			in: `apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec: {whatever: true}
`,
			want: []string{`1 IgnoredKind  apps/v1 Deployment is not translated by nodemesh; ignored`},
		},
		"lists are expanded": {
			in: `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: v1
  kind: Pod
  metadata: {name: p}
`,
			objects: 2,
		},
		"missing kind": {
			in:   "apiVersion: v1\nmetadata: {name: x}\n",
			want: []string{`1 Decode  missing apiVersion or kind`},
		},
		"duplicate keys": {
			in: `apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  type: ClusterIP
  type: NodePort
`,
			want: []string{`6 Decode  duplicate key "type"`},
		},
		"unsupported Istio version": {
			in:   "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\nspec: {}\n",
			want: []string{`1 Decode apiVersion unsupported apiVersion "networking.istio.io/v2" for VirtualService; use networking.istio.io/v1`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			bag, diags := load(t, tc.in)
			var got []string
			for _, d := range diags {
				got = append(got, strings.TrimSpace(strings.Join([]string{strconv.Itoa(d.Line), string(d.Code), d.Field, d.Message}, " ")))
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, strings.Join(strings.Fields(w), " "))
			}
			for i := range got {
				got[i] = strings.Join(strings.Fields(got[i]), " ")
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("diagnostics:\n got: %q\nwant: %q", got, want)
			}
			n := len(bag.VirtualServices) + len(bag.DestinationRules) + len(bag.Services) + len(bag.Pods)
			if n != tc.objects {
				t.Errorf("objects = %d, want %d", n, tc.objects)
			}
		})
	}
}

// TestAliasBombOfBytes: few nodes, but one 64 KiB string aliased 4^7
// times: 1 GiB (a 77 KB file of this shape expanded to 64 GiB and exhausted memory when
// only nodes were counted).
func TestAliasBombOfBytes(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Service\nmetadata:\n  name: bomb\n  annotations:\n")
	fmt.Fprintf(&b, "    a: &a %q\n", strings.Repeat("x", 64<<10))
	prev := "a"
	for i := range 7 {
		name := fmt.Sprintf("l%d", i)
		fmt.Fprintf(&b, "    %s: &%s [*%s,*%s,*%s,*%s]\n", name, name, prev, prev, prev, prev)
		prev = name
	}
	b.WriteString("---\napiVersion: v1\nkind: Service\nmetadata: {name: fine, namespace: default}\nspec: {ports: [{port: 80}]}\n")
	bag, diags := load(t, b.String())
	if len(diags) != 1 || !strings.Contains(diags[0].Message, "more than 16 MiB") || diags[0].Line == 0 {
		t.Fatalf("diagnostics = %v", diags)
	}
	if len(bag.Services) != 1 || bag.Services[0].Name != "fine" {
		t.Errorf("the valid document was not decoded: %d Services", len(bag.Services))
	}
}

func TestAliasBomb(t *testing.T) {
	doc := `apiVersion: v1
kind: Service
metadata:
  name: bomb
  annotations:
    a: &a ["x","x","x","x","x","x","x","x","x","x"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
`
	_, diags := load(t, doc)
	if len(diags) != 1 || !strings.Contains(diags[0].Message, "excessive aliasing") {
		t.Fatalf("diagnostics = %v", diags)
	}
}

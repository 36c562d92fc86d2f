package workloadcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
)

func TestParseID(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://cluster.local/ns/bookinfo/sa/productpage": "",
		"spiffe://td/ns/a/sa/b":                             "",
		"https://cluster.local/ns/a/sa/b":                   "want spiffe://",
		"spiffe://cluster.local/ns/a/sa/":                   "want spiffe://",
		"spiffe://cluster.local/ns/a/sa/b/c":                "want spiffe://",
		"spiffe://cluster.local/ns/a/sa/b?x=1":              "want spiffe://",
		"spiffe://u@cluster.local/ns/a/sa/b":                "want spiffe://",
		"spiffe:///ns/a/sa/b":                               "want spiffe://",
		"spiffe://cluster.local/sa/a/ns/b":                  "want spiffe://",
	} {
		t.Run(in, func(t *testing.T) {
			id, err := ParseID(in)
			if want == "" {
				if err != nil || id.String() != in {
					t.Fatalf("ParseID = %v, %v; want %s", id, err, in)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("ParseID = %v, %v; want an error with %q", id, err, want)
			}
		})
	}
}

func TestMeshed(t *testing.T) {
	ns := func(l map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: l}}
	}
	opted := map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh}
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
			Spec:   corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "sa", Containers: []corev1.Container{{Name: "app"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	now := metav1.Now()
	for name, tc := range map[string]struct {
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want bool
	}{
		"meshed":                    {pod: pod(nil), ns: ns(opted), want: true},
		"pending":                   {pod: pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), ns: ns(opted), want: true},
		"another node":              {pod: pod(func(p *corev1.Pod) { p.Spec.NodeName = "node-b" }), ns: ns(opted)},
		"namespace not opted in":    {pod: pod(nil), ns: ns(nil)},
		"ambient namespace":         {pod: pod(nil), ns: ns(map[string]string{api.DataplaneModeLabel: api.DataplaneModeAmbient})},
		"namespace injected":        {pod: pod(nil), ns: ns(map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh, api.IstioInjectionLabel: "enabled"})},
		"namespace with a revision": {pod: pod(nil), ns: ns(map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh, api.IstioRevisionLabel: "canary"})},
		"pod opted out":             {pod: pod(func(p *corev1.Pod) { p.Labels = map[string]string{api.DataplaneModeLabel: api.DataplaneModeNone} }), ns: ns(opted)},
		"sidecar": {pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
		}), ns: ns(opted)},
		"host network":                {pod: pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), ns: ns(opted)},
		"finished":                    {pod: pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), ns: ns(opted)},
		"failed":                      {pod: pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), ns: ns(opted)},
		"being deleted":               {pod: pod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), ns: ns(opted)},
		"namespace unknown (no read)": {pod: pod(nil), ns: nil},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Meshed(tc.pod, tc.ns, "node-a"); got != tc.want {
				t.Fatalf("Meshed = %v, want %v", got, tc.want)
			}
		})
	}
	ids := NodeIdentities([]*corev1.Pod{pod(nil), pod(nil), pod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" })},
		map[string]*corev1.Namespace{"ns": ns(opted)}, "node-a", "td")
	if len(ids) != 2 || ids[0].String() != "spiffe://td/ns/ns/sa/default" || ids[1].String() != "spiffe://td/ns/ns/sa/sa" {
		t.Fatalf("NodeIdentities = %v", ids)
	}
}

// fakeCA signs like istiod, or answers as a broken or malicious CA would.
type fakeCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newFakeCA(t *testing.T) *fakeCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &fakeCA{cert: c, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

func (ca *fakeCA) sign(t *testing.T, csrPEM []byte, uris ...string) string {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestCheckResponse: what the CA returns is checked before Envoy gets it;
// a CA answering with another identity, another key, a chain to another
// root or a malformed chain is refused.
func TestCheckResponse(t *testing.T) {
	ca, other := newFakeCA(t), newFakeCA(t)
	id := ID{TrustDomain: "cluster.local", Namespace: "bookinfo", ServiceAccount: "productpage"}
	keyPEM, csrPEM, err := newKeyAndCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	_, otherCSR, _ := newKeyAndCSR(id)
	for name, tc := range map[string]struct {
		chain   []string
		wantErr string
	}{
		"istiod's answer":          {chain: []string{ca.sign(t, csrPEM, id.String()), ca.pem}},
		"another identity":         {chain: []string{ca.sign(t, csrPEM, "spiffe://cluster.local/ns/bookinfo/sa/reviews"), ca.pem}, wantErr: "want exactly"},
		"another trust domain":     {chain: []string{ca.sign(t, csrPEM, "spiffe://evil.local/ns/bookinfo/sa/productpage"), ca.pem}, wantErr: "want exactly"},
		"two identities":           {chain: []string{ca.sign(t, csrPEM, id.String(), "spiffe://cluster.local/ns/x/sa/y"), ca.pem}, wantErr: "want exactly"},
		"another key":              {chain: []string{ca.sign(t, otherCSR, id.String()), ca.pem}, wantErr: "requested key"},
		"not chained to the root":  {chain: []string{ca.sign(t, csrPEM, id.String()), other.pem}, wantErr: "does not chain"},
		"no root":                  {chain: []string{ca.sign(t, csrPEM, id.String())}, wantErr: "at least"},
		"garbage":                  {chain: []string{"not pem", ca.pem}, wantErr: "not a PEM"},
		"two certificates in one":  {chain: []string{ca.sign(t, csrPEM, id.String()) + ca.pem, ca.pem}, wantErr: "more than one"},
		"a CA certificate as leaf": {chain: []string{ca.pem, ca.pem}, wantErr: "requested key"},
		"an empty answer":          {wantErr: "at least"},
	} {
		t.Run(name, func(t *testing.T) {
			iss, err := checkResponse(id, keyPEM, tc.chain, time.Now())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if string(iss.RootPEM) != ca.pem || iss.ID != id {
					t.Fatalf("issued %+v", iss)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("checkResponse = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// scriptedIssuer answers Issue from a script per identity, and can block.
type scriptedIssuer struct {
	mu      sync.Mutex
	fail    map[ID]int // failures left before success
	calls   map[ID]int
	life    time.Duration
	block   chan struct{} // non-nil: Issue waits on it
	entered chan ID
}

func (s *scriptedIssuer) Issue(ctx context.Context, id ID) (*Issued, error) {
	if s.entered != nil {
		s.entered <- id
	}
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[id]++
	if s.fail[id] > 0 {
		s.fail[id]--
		return nil, ErrRefused
	}
	now := time.Now()
	return &Issued{ID: id, NotBefore: now, NotAfter: now.Add(s.life)}, nil
}

type chanSink struct {
	updates chan *Issued
	removes chan ID
}

func (c chanSink) Update(iss *Issued) { c.updates <- iss }
func (c chanSink) Remove(id ID)       { c.removes <- id }

func newChanSink() chanSink {
	return chanSink{updates: make(chan *Issued, 100), removes: make(chan ID, 100)}
}

func recv[T any](t *testing.T, c chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("never: %s", what)
	}
	var zero T
	return zero
}

// TestManagerRetriesThenRotates: a refused request is retried with
// backoff until issued; the certificate is renewed before it expires.
func TestManagerRetriesThenRotates(t *testing.T) {
	a := ID{TrustDomain: "td", Namespace: "ns", ServiceAccount: "a"}
	iss := &scriptedIssuer{fail: map[ID]int{a: 3}, calls: map[ID]int{}, life: 2 * time.Second}
	sink := newChanSink()
	m, err := NewManager(ManagerOptions{Issuer: iss, Sink: sink, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	m.SetIdentities([]ID{a})
	first := recv(t, sink.updates, "the certificate after three refusals")
	iss.mu.Lock()
	if iss.calls[a] != 4 {
		t.Errorf("%d requests, want 4 (three refused)", iss.calls[a])
	}
	iss.mu.Unlock()
	second := recv(t, sink.updates, "a renewal")
	if at := time.Now(); !at.Before(first.NotAfter) {
		t.Fatalf("renewed at %v, after the first expired at %v", at, first.NotAfter)
	}
	if second == first {
		t.Fatal("the renewal is the same certificate")
	}
}

// TestManagerRemovalWins: an identity whose last pod leaves while its
// certificate is being issued is never published after its removal.
func TestManagerRemovalWins(t *testing.T) {
	a := ID{TrustDomain: "td", Namespace: "ns", ServiceAccount: "a"}
	iss := &scriptedIssuer{calls: map[ID]int{}, life: time.Hour, block: make(chan struct{}), entered: make(chan ID, 10)}
	sink := newChanSink()
	m, _ := NewManager(ManagerOptions{Issuer: iss, Sink: sink})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	m.SetIdentities([]ID{a})
	recv(t, iss.entered, "the request")
	m.SetIdentities(nil)
	if got := recv(t, sink.removes, "the removal"); got != a {
		t.Fatalf("removed %v", got)
	}
	close(iss.block) // the CA answers after the pod left
	// The manager is idle once it waits for work: give it another
	// identity and see that only that one is published.
	b := ID{TrustDomain: "td", Namespace: "ns", ServiceAccount: "b"}
	m.SetIdentities([]ID{b})
	if got := recv(t, sink.updates, "b's certificate"); got.ID != b {
		t.Fatalf("published %s after its removal", got.ID)
	}
}

// TestManagerBound: identities beyond MaxIdentities get no certificate
// (their mTLS fails closed) and are reported.
func TestManagerBound(t *testing.T) {
	iss := &scriptedIssuer{calls: map[ID]int{}, life: time.Hour}
	sink := newChanSink()
	m, _ := NewManager(ManagerOptions{Issuer: iss, Sink: sink, MaxIdentities: 2})
	var ids []ID
	for _, sa := range []string{"d", "c", "b", "a", "a"} {
		ids = append(ids, ID{TrustDomain: "td", Namespace: "ns", ServiceAccount: sa})
	}
	over := m.SetIdentities(ids)
	if len(over) != 2 || over[0].ServiceAccount != "c" || over[1].ServiceAccount != "d" {
		t.Fatalf("left out %v, want c and d", over)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)
	got := map[string]bool{}
	for range 2 {
		got[recv(t, sink.updates, "a certificate").ID.ServiceAccount] = true
	}
	if !got["a"] || !got["b"] {
		t.Fatalf("issued %v, want a and b", got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.entries) != 2 {
		t.Fatalf("%d identities held, want 2", len(m.entries))
	}
}

func TestRotateAt(t *testing.T) {
	created := time.Unix(0, 0)
	expires := created.Add(24 * time.Hour)
	for range 100 {
		at := RotateAt(created, expires, DefaultGraceRatio, DefaultGraceRatioJitter)
		// Half of the lifetime ±1% of it (±14m24s).
		if d := at.Sub(created.Add(12 * time.Hour)); d < -15*time.Minute || d > 15*time.Minute {
			t.Fatalf("rotation at %v after creation, want 12h ±14m", at.Sub(created))
		}
	}
	if at := RotateAt(created, expires, 1, 0); !at.Equal(created) {
		t.Fatalf("ratio 1: %v", at)
	}
}

package workloadcert

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// istioCA is the real CA of these tests: istiod built from the module proxy
// (make istiod), run against the real API server with the agent's
// ServiceAccount as its trusted node account, and the objects it decides
// on: an agent pod on node-a, a meshed namespace with productpage on
// node-a and reviews on node-b, and an untrusted pod on node-a.
type istioCA struct {
	env      *kubetest.Env
	istiod   *kubetest.Istiod
	agentNS  string
	meshNS   string
	agentPod *corev1.Pod
	other    *corev1.Pod
	dir      string
}

const (
	nodeA = "node-a"
	nodeB = "node-b"
)

func startIstioCA(t *testing.T) *istioCA {
	t.Helper()
	env := kubetest.Get(t)
	c := &istioCA{env: env, dir: t.TempDir()}
	c.agentNS = env.Namespace(t, "nodemesh-system", nil)
	c.meshNS = env.Namespace(t, "bookinfo", map[string]string{api.DataplaneModeLabel: api.DataplaneModeNodemesh})
	c.istiod = env.StartIstiod(t, kubetest.IstiodOptions{TrustedNodeAccounts: []string{c.agentNS + "/nodemesh-agent"}})
	c.agentPod = c.pod(t, c.agentNS, "agent", "nodemesh-agent", nodeA)
	c.other = c.pod(t, c.agentNS, "intruder", "intruder", nodeA)
	c.pod(t, c.meshNS, "productpage", "productpage", nodeA)
	c.pod(t, c.meshNS, "reviews", "reviews", nodeB)
	return c
}

func (c *istioCA) pod(t *testing.T, ns, name, sa, node string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := c.env.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !isExists(err) {
		t.Fatal(err)
	}
	obj, err := c.env.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	})
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*corev1.Pod)
}

func isExists(err error) bool { return apierrors.IsAlreadyExists(err) }

// tokenFile writes the pod's projected token of audience istio-ca, bound
// to the pod, as the kubelet does for the agent's projected volume.
func (c *istioCA) tokenFile(t *testing.T, p *corev1.Pod) string {
	t.Helper()
	tr, err := c.env.Client.CoreV1().ServiceAccounts(p.Namespace).CreateToken(context.Background(), p.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{CAAudience}, ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, p.Namespace+"-"+p.Name+".token")
	if err := os.WriteFile(path, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (c *istioCA) client(t *testing.T, caller *corev1.Pod, ttl time.Duration) *CAClient {
	t.Helper()
	cl, err := NewCAClient(CAClientOptions{Address: c.istiod.CAAddress, ServerName: c.istiod.ServerName, Roots: c.istiod.Roots,
		TokenFile: c.tokenFile(t, caller), TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestIstioCA asks the real istiod's CA for certificates as the node
// agent: issued for an identity with a pod on the agent's node (SPIFFE ID,
// chain to istio-ca-root-cert, lifetime), refused for a pod on another
// node, for an identity with no pod, and for a caller that is not a
// trusted node account.
func TestIstioCA(t *testing.T) {
	c := startIstioCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ttl = time.Hour
	agent := c.client(t, c.agentPod, ttl)
	id := func(ns, sa string) ID { return ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa} }

	t.Run("a pod on the agent's node", func(t *testing.T) {
		want := id(c.meshNS, "productpage")
		var iss *Issued
		// istiod's node authorizer learns pods from its informer: the
		// first requests right after the pods were created may be refused
		// (istiod says clients retry, as the Manager does).
		for {
			var err error
			if iss, err = agent.Issue(ctx, want); err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("not issued: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		leaf := parsePEMCert(t, iss.ChainPEM)
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want.String() {
			t.Fatalf("leaf names %v, want %s", leaf.URIs, want)
		}
		if string(pemTrim(iss.RootPEM)) != string(pemTrim(c.istiod.RootPEM)) {
			t.Fatal("the returned root is not istio-ca-root-cert's")
		}
		if _, err := VerifyPeer([]*x509.Certificate{leaf}, c.istiod.Roots, time.Now(), want); err != nil {
			t.Fatalf("does not verify against istio-ca-root-cert: %v", err)
		}
		// istiod backdates NotBefore by its clock-skew grace (2m).
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life < ttl || life > ttl+5*time.Minute {
			t.Fatalf("lifetime %v, want the requested %v (+ istiod's backdating)", life, ttl)
		}
	})

	for name, tc := range map[string]struct {
		caller *corev1.Pod
		id     ID
	}{
		"a pod on another node":           {caller: c.agentPod, id: id(c.meshNS, "reviews")},
		"an identity with no pod":         {caller: c.agentPod, id: id(c.meshNS, "ghost")},
		"an untrusted caller, node-local": {caller: c.other, id: id(c.meshNS, "productpage")},
	} {
		t.Run(name, func(t *testing.T) {
			cl := agent
			if tc.caller != c.agentPod {
				cl = c.client(t, tc.caller, ttl)
			}
			_, err := cl.Issue(ctx, tc.id)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Issue(%s) = %v, want refused", tc.id, err)
			}
		})
	}
}

// recordingSink keeps what the manager published.
type recordingSink struct {
	mu      sync.Mutex
	current map[ID]*Issued
	updates map[ID]int
	at      map[ID][]time.Time // when each update came
	changed chan struct{}
}

func newRecordingSink() *recordingSink {
	return &recordingSink{current: map[ID]*Issued{}, updates: map[ID]int{}, at: map[ID][]time.Time{}, changed: make(chan struct{}, 100)}
}

func (s *recordingSink) Update(iss *Issued) {
	s.mu.Lock()
	s.current[iss.ID] = iss
	s.updates[iss.ID]++
	s.at[iss.ID] = append(s.at[iss.ID], time.Now())
	s.mu.Unlock()
	s.changed <- struct{}{}
}

func (s *recordingSink) Remove(id ID) {
	s.mu.Lock()
	delete(s.current, id)
	s.mu.Unlock()
	s.changed <- struct{}{}
}

func (s *recordingSink) waitFor(t *testing.T, what string, ok func(current map[ID]*Issued, updates map[ID]int) bool) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		s.mu.Lock()
		done := ok(s.current, s.updates)
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("never: %s", what)
		}
	}
}

// TestNodeCertificatesFromIstiod runs the whole node side against the real
// CA: the Manager fed by WatchNode (node-a) gets productpage's certificate
// and not reviews' (node-b), renews it at half its lifetime (istiod issues
// 40s certificates here), and drops it when its last pod is deleted.
func TestNodeCertificatesFromIstiod(t *testing.T) {
	c := startIstioCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := newRecordingSink()
	m, err := NewManager(ManagerOptions{Issuer: c.client(t, c.agentPod, 40*time.Second), Sink: sink, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go m.Run(ctx)
	if err := WatchNode(ctx, c.env.Client, nodeA, "cluster.local", m); err != nil {
		t.Fatal(err)
	}
	pp := ID{TrustDomain: "cluster.local", Namespace: c.meshNS, ServiceAccount: "productpage"}
	sink.waitFor(t, "productpage's certificate", func(cur map[ID]*Issued, _ map[ID]int) bool { return cur[pp] != nil })
	sink.mu.Lock()
	first := parsePEMCert(t, sink.current[pp].ChainPEM)
	for id := range sink.current {
		// Other tests' namespaces may still hold pods on node-a (no
		// kube-controller-manager finishes their deletion): only this
		// test's namespaces are judged.
		if (id.Namespace == c.meshNS || id.Namespace == c.agentNS) && id != pp {
			t.Errorf("certificate for %s: only productpage runs meshed on %s (reviews runs on %s, the agent's namespace is not meshed)", id, nodeA, nodeB)
		}
	}
	sink.mu.Unlock()

	sink.waitFor(t, "a renewal", func(cur map[ID]*Issued, n map[ID]int) bool { return n[pp] >= 2 })
	sink.mu.Lock()
	second := parsePEMCert(t, sink.current[pp].ChainPEM)
	sink.mu.Unlock()
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("the renewal is not a new certificate: serial %v → %v, expiry %v → %v", first.SerialNumber, second.SerialNumber, first.NotAfter, second.NotAfter)
	}
	// Renewed before the first expired (at about half its lifetime,
	// istio-agent's grace ratio), so there is never a moment without a
	// valid certificate.
	sink.mu.Lock()
	renewedAt := sink.at[pp][1]
	sink.mu.Unlock()
	if !renewedAt.Before(first.NotAfter) {
		t.Fatalf("renewed at %v, after the first certificate expired (%v)", renewedAt, first.NotAfter)
	}

	if err := c.env.Client.CoreV1().Pods(c.meshNS).Delete(ctx, "productpage", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, "productpage's certificate removed with its last pod", func(cur map[ID]*Issued, _ map[ID]int) bool { return cur[pp] == nil })
}

func parsePEMCert(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

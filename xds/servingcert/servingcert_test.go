package servingcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIssuedCertificateVerifies: a leaf of the CA verifies for its names
// against the CA alone, and for no other name.
func TestIssuedCertificateVerifies(t *testing.T) {
	ca, err := NewCA("test", CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := back.Issue([]string{"nodemesh-controller.nodemesh-system.svc"}, []net.IP{net.IPv4(127, 0, 0, 1)}, LeafValidity)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	for name, ok := range map[string]bool{"nodemesh-controller.nodemesh-system.svc": true, "127.0.0.1": true, "nodemesh-controller.other.svc": false} {
		_, err := c.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if (err == nil) != ok {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), ca.KeyPEM); err == nil {
		t.Error("a leaf with the CA's key parsed as a CA")
	}
}

func TestRenewalDue(t *testing.T) {
	now := time.Now()
	c := &x509.Certificate{NotBefore: now, NotAfter: now.Add(90 * time.Hour)}
	if renewalDue(c, now.Add(59*time.Hour)) || !renewalDue(c, now.Add(61*time.Hour)) {
		t.Error("renewal is due after two thirds of the lifetime, not before")
	}
}

// TestFilesReload: a renewed certificate in the files is served without a
// restart; a half-written pair keeps the previous one.
func TestFilesReload(t *testing.T) {
	dir := t.TempDir()
	ca, _ := NewCA("test", CAValidity)
	write := func(c *tls.Certificate) {
		t.Helper()
		key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
		_ = os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	}
	first, _ := ca.Issue([]string{"a"}, nil, time.Hour)
	write(first)
	_ = os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o600)
	f, err := NewFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	f.checkEvery = 0
	second, _ := ca.Issue([]string{"a"}, nil, time.Hour)
	write(second)
	if got, _ := f.GetCertificate(nil); got.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Error("the renewed certificate is not served")
	}
	_ = os.WriteFile(filepath.Join(dir, "tls.key"), []byte("half"), 0o600)
	if got, err := f.GetCertificate(nil); err != nil || got.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Errorf("a broken pair replaced the certificate: %v", err)
	}
	if _, err := NewFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")); err == nil {
		t.Error("NewFiles accepted a broken pair")
	}
}

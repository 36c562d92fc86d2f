package servingcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Source serves the current certificate of a TLS server.
type Source interface {
	// GetCertificate is tls.Config's.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// CABundle is the PEM bundle clients verify the certificate with.
	CABundle() ([]byte, error)
}

// ServerTLS is a TLS server configuration serving src's certificate
// (TLS 1.2 or later).
func ServerTLS(src Source) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: src.GetCertificate}
}

// Issuer serves certificates it issues from a CA for fixed names, and
// issues a new one once two thirds of the current one's lifetime have
// passed.
type Issuer struct {
	ca       *CA
	dnsNames []string
	ips      []net.IP
	validity time.Duration

	mu   sync.Mutex
	cert *tls.Certificate
}

// NewIssuer issues the first certificate at once, so a bad CA or name is
// an error at startup, not at the first handshake.
func NewIssuer(ca *CA, dnsNames []string, ips []net.IP, validity time.Duration) (*Issuer, error) {
	is := &Issuer{ca: ca, dnsNames: dnsNames, ips: ips, validity: validity}
	if _, err := is.GetCertificate(nil); err != nil {
		return nil, err
	}
	return is, nil
}

// GetCertificate returns the current certificate, renewing it first when
// it is due.
func (is *Issuer) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.cert != nil && !renewalDue(is.cert.Leaf, time.Now()) {
		return is.cert, nil
	}
	c, err := is.ca.Issue(is.dnsNames, is.ips, is.validity)
	if err != nil {
		if is.cert != nil && time.Now().Before(is.cert.Leaf.NotAfter) {
			return is.cert, nil // keep serving the valid one
		}
		return nil, err
	}
	is.cert = c
	return c, nil
}

// CABundle is the CA's certificate.
func (is *Issuer) CABundle() ([]byte, error) { return is.ca.CertPEM, nil }

// renewalDue says whether two thirds of a certificate's lifetime passed.
func renewalDue(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return now.After(c.NotBefore.Add(life * 2 / 3))
}

// Files serves a certificate and key from files, with the CA bundle from a
// third, re-reading them when they may have changed (at most every
// checkEvery): a mounted Secret that cert-manager renews is picked up
// without a restart. A change that does not load (a half-written pair)
// keeps the previous certificate.
type Files struct {
	CertFile, KeyFile, CAFile string

	checkEvery time.Duration
	mu         sync.Mutex
	checked    time.Time
	certPEM    []byte
	keyPEM     []byte
	cert       *tls.Certificate
}

// NewFiles loads the files once, failing when they do not load.
func NewFiles(certFile, keyFile, caFile string) (*Files, error) {
	f := &Files{CertFile: certFile, KeyFile: keyFile, CAFile: caFile, checkEvery: 30 * time.Second}
	if err := f.reload(); err != nil {
		return nil, err
	}
	if _, err := f.CABundle(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Files) reload() error {
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return fmt.Errorf("serving key: %w", err)
	}
	if bytes.Equal(certPEM, f.certPEM) && bytes.Equal(keyPEM, f.keyPEM) {
		return nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("serving certificate %s and key %s: %w", f.CertFile, f.KeyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return err
		}
	}
	f.certPEM, f.keyPEM, f.cert = certPEM, keyPEM, &pair
	return nil
}

// GetCertificate returns the files' certificate, re-reading them when due.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= f.checkEvery {
		f.checked = now
		if err := f.reload(); err != nil && f.cert == nil {
			return nil, err
		}
	}
	return f.cert, nil
}

// CABundle reads the CA file: PEM certificates, at least one.
func (f *Files) CABundle() ([]byte, error) {
	data, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return nil, errors.New("CA bundle " + f.CAFile + ": no PEM certificate")
	}
	return data, nil
}

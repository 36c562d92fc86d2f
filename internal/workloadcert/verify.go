package workloadcert

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// VerifyPeer checks a peer's certificate chain as an Istio proxy does for
// ISTIO_MUTUAL: it chains to roots (ROOTCA) through the chain's other
// elements, is valid at now, and its only URI SAN is one of want (the
// trust domain is part of the ID, so another trust domain never matches).
// It is what the tests' TLS clients and servers use to verify the SDS
// server's certificates.
func VerifyPeer(chain []*x509.Certificate, roots *x509.CertPool, now time.Time, want ...ID) (ID, error) {
	if len(chain) == 0 {
		return ID{}, errors.New("peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	if len(leaf.URIs) != 1 {
		return ID{}, fmt.Errorf("peer certificate has %d URI SANs, want one SPIFFE ID", len(leaf.URIs))
	}
	got, err := ParseID(leaf.URIs[0].String())
	if err != nil {
		return ID{}, fmt.Errorf("peer certificate: %w", err)
	}
	for _, w := range want {
		if got == w {
			return got, nil
		}
	}
	return got, fmt.Errorf("peer identity %s is not one of %v", got, want)
}

package workloadcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
)

// newKeyAndCSR makes a workload key (ECDSA P-256, istio-agent's default
// for ECC_SIGNATURE_ALGORITHM) and a CSR carrying only the SPIFFE URI SAN:
// istiod ignores the CSR's names and signs for the identity it
// authenticated (or the impersonated one), but a CSR naming the identity
// keeps the request self-describing. The key is returned PEM-encoded
// (PKCS#8), as Envoy takes it inline.
func newKeyAndCSR(id ID) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create csr for %s: %w", id, err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

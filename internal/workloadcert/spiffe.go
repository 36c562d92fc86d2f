package workloadcert

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ID is a workload identity, Istio's SPIFFE form
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// String is the SPIFFE URI; it names the identity's SDS secret, as Istio's
// do.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL is the SPIFFE URI as a URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// ParseID parses an Istio SPIFFE identity, strictly: exactly
// spiffe://td/ns/NS/sa/SA with no empty part, query or fragment.
func ParseID(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	if u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return ID{}, fmt.Errorf("spiffe id %q: want spiffe://<trust domain>/ns/<namespace>/sa/<service account>", s)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return ID{}, fmt.Errorf("spiffe id %q: want spiffe://<trust domain>/ns/<namespace>/sa/<service account>", s)
	}
	return ID{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

func (id ID) validate() error {
	if id.TrustDomain == "" || id.Namespace == "" || id.ServiceAccount == "" {
		return errors.New("identity needs a trust domain, a namespace and a service account")
	}
	if strings.ContainsAny(id.TrustDomain+id.Namespace+id.ServiceAccount, "/?#@: ") {
		return fmt.Errorf("identity %q has a character no Kubernetes name has", id)
	}
	return nil
}

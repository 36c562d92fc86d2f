// Package callcredsenv turns on grpc-go's xDS bootstrap call credentials
// (gRFC A97: "call_creds": [{"type": "jwt_token_file"}]) for the test
// binaries of the packages that import xdstest.
//
// grpc-go reads GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS once, when its
// internal/envconfig package is initialized, so a test cannot set it with
// t.Setenv. Go initializes packages in import-path order among those whose
// imports are initialized (the Go 1.21 specification), and this package
// imports only os: "github.com/nodemesh/…" sorts before
// "google.golang.org/grpc/…", so its init runs before envconfig's. A
// proxyless application sets the variable in its environment instead
// (README: proxyless gRPC clients).
package callcredsenv

import "os"

// Name is the variable grpc-go reads.
const Name = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"

func init() {
	if _, set := os.LookupEnv(Name); !set {
		_ = os.Setenv(Name, "true")
	}
}

package xds_test

import (
	"crypto/tls"

	"google.golang.org/grpc/credentials"
)

// systemTLS verifies servers with the system's roots only.
func systemTLS() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
}

// Package testapp is nodemesh's test application, the one binary of the
// nodemesh-testapp image (cmd/nodemesh-testapp is its main). It replaces
// the images 'nodemesh check' and the migration tests used to pull from
// public registries, so that both run on a cluster with no registry access:
//
//   - netexec serves the endpoints of Kubernetes' agnhost netexec that the
//     check uses (/hostname, /healthz, and /, /echo, /clientip, /header
//     besides; hostname/echo/clientip over UDP), with agnhost's command line
//     shape ('netexec --http-port=8080'), so that --echo-image can still name
//     agnhost;
//   - chain is one service of a bookinfo-like application: it answers every
//     request with its name, its --version and its pod, after calling each
//     --upstream URL and embedding their answers (productpage → details,
//     productpage → reviews → ratings).
//
// It imports only the standard library: the image stays small and a test
// app links no Kubernetes client (internal/archtest enforces it).
package testapp

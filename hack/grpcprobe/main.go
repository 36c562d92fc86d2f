// Command grpcprobe is the local cluster's proxyless gRPC workload (test
// only, never shipped): 'server' answers grpc.testing.TestService with its
// --id as ServerId; 'client' writes the gRPC xDS bootstrap a proxyless
// application in the cluster has (TLS to nodemesh-controller verified with
// its CA, the pod's projected token as call credentials, an Istio-format
// node ID from the pod's address, name and namespace), dials xds:///TARGET
// through grpc-go's xDS resolver and balancer — the real consumer of what
// the controller serves — and prints how many calls each backend answered.
//
//	grpcprobe server --port 9090 --id v1
//	grpcprobe client --target grpc-echo.ns.svc.cluster.local:9090 [--calls 20] [--header k=v]
//
// GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true must be in the
// environment (grpc-go reads it once at start).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and balancers
)

type server struct {
	testgrpc.UnimplementedTestServiceServer
	id string
}

func (s *server) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	h, _ := os.Hostname()
	return &testgrpc.SimpleResponse{ServerId: s.id, Hostname: h}, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grpcprobe server|client [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = serve(os.Args[2:])
	case "client":
		err = client(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcprobe:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	port := fs.Int("port", 9090, "port")
	id := fs.String("id", "", "ServerId in every answer")
	fs.Parse(args)
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, &server{id: *id})
	return s.Serve(l)
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	target := fs.String("target", "", "host:port of the Service (xds:///TARGET)")
	calls := fs.Int("calls", 20, "calls to make")
	header := fs.String("header", "", "k=v metadata on every call")
	controller := fs.String("controller", "nodemesh-controller.nodemesh-system.svc:15010", "the xDS server")
	ca := fs.String("ca-file", "/var/run/secrets/nodemesh/ca/root-cert.pem", "the controller's CA bundle")
	token := fs.String("token-file", "/var/run/secrets/nodemesh/xds/token", "the projected token (audience nodemesh-xds)")
	domain := fs.String("cluster-domain", "cluster.local", "cluster domain")
	fs.Parse(args)
	ns, pod, ip := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME"), os.Getenv("POD_IP")
	if ns == "" || pod == "" || ip == "" || *target == "" {
		return fmt.Errorf("--target and POD_NAMESPACE, POD_NAME, POD_IP (downward API) are required")
	}
	// Istio's node ID for a proxyless client: the controller serves the pod
	// whose token this is, under this ID only.
	nodeID := fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.%s", ip, pod, ns, ns, *domain)
	b, _ := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      *controller,
			"channel_creds":   []any{map[string]any{"type": "tls", "config": map[string]any{"ca_certificate_file": *ca}}},
			"call_creds":      []any{map[string]any{"type": "jwt_token_file", "config": map[string]any{"jwt_token_file": *token}}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": nodeID, "metadata": map[string]any{"GENERATOR": "grpc"}},
	})
	// grpc-go reads its bootstrap from the environment once, at start, as
	// a real application's is set before it starts: run again with it.
	if os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		return syscall.Exec(exe, os.Args, append(os.Environ(), "GRPC_XDS_BOOTSTRAP_CONFIG="+string(b)))
	}
	conn, err := grpc.NewClient("xds:///"+*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := testgrpc.NewTestServiceClient(conn)
	tally := map[string]int{}
	ctx := context.Background()
	if *header != "" {
		k, v, _ := strings.Cut(*header, "=")
		ctx = metadata.AppendToOutgoingContext(ctx, k, v)
	}
	for i := 0; i < *calls; i++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := c.UnaryCall(cctx, &testgrpc.SimpleRequest{FillServerId: true}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			tally["error: "+status.Code(err).String()]++
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		tally[resp.GetServerId()]++
	}
	keys := make([]string, 0, len(tally))
	for k := range tally {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%s %d\n", k, tally[k])
	}
	return nil
}

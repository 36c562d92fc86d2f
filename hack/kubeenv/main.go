// Command kubeenv starts and stops the local Kubernetes API used by tests and
// local runs (make kube-up / make kube-down). State lives in _output/kube; the
// admin kubeconfig is _output/kube/kubeconfig.
//
//	go run ./hack/kubeenv up [--kcm]
//	go run ./hack/kubeenv up --address 172.30.0.1 --nodes node-a,node-b  (the control plane of make cluster-up)
//	go run ./hack/kubeenv down
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func main() {
	dir := flag.String("dir", "_output/kube", "state directory")
	kcm := flag.Bool("kcm", os.Getenv("WITH_KCM") == "1", "also run kube-controller-manager")
	address := flag.String("address", "", "a cluster's control plane: the API server's address for the nodes (then kube-controller-manager allocates pod CIDRs and kube-scheduler runs)")
	nodes := flag.String("nodes", "", "with --address: comma-separated node names to issue kubelet credentials for (kubeconfig-NODE)")
	podCIDR := flag.String("pod-cidr", "10.244.0.0/16", "with --address: the cluster's pod range")
	flag.Parse()
	var cluster *kubetest.ClusterOptions
	if *address != "" {
		a, err := netip.ParseAddr(*address)
		if err != nil {
			fail(fmt.Errorf("--address: %w", err))
		}
		cluster = &kubetest.ClusterOptions{Address: a, PodCIDR: *podCIDR, Nodes: strings.Split(*nodes, ",")}
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	switch flag.Arg(0) {
	case "up":
		if env, err := kubetest.Connect(context.Background(), filepath.Join(abs, "kubeconfig")); err == nil {
			fmt.Println("already running; kubeconfig:", env.Kubeconfig)
			return
		}
		kubetest.StopDir(abs) // a stale environment from a crashed run
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		env, err := kubetest.Start(ctx, kubetest.Options{Dir: abs, WithKCM: *kcm, Detach: true, Cluster: cluster})
		if err != nil {
			fail(err)
		}
		if err := env.InstallIstioCRDs(ctx); err != nil {
			fail(fmt.Errorf("install Istio CRDs: %w", err))
		}
		v, err := env.Client.Discovery().ServerVersion()
		if err != nil {
			fail(err)
		}
		fmt.Printf("kube-apiserver %s ready in %s with Istio's CRDs (kube-controller-manager: %v)\n", v.GitVersion, time.Since(start).Round(100*time.Millisecond), *kcm || cluster != nil)
		fmt.Printf("export KUBECONFIG=%s\n", env.Kubeconfig)
	case "down":
		if err := kubetest.StopDir(abs); err != nil {
			fail(err)
		}
		// The next up starts from an empty cluster, as after kind delete.
		if err := os.RemoveAll(abs); err != nil {
			fail(err)
		}
		fmt.Println("stopped; state removed")
	default:
		fmt.Fprintln(os.Stderr, "usage: kubeenv [--dir DIR] [--kcm] up|down")
		os.Exit(2)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kubeenv:", err)
	os.Exit(1)
}

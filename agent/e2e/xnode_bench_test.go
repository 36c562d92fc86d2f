//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// BenchmarkCrossNode: request/response (20,000 64-byte round trips on one
// connection) and a 1 GiB single-stream transfer from a pod to a pod on
// the same node and to a pod on the other node, with native routing and
// with the VXLAN overlay: the two-node cluster of TestCrossNode (agents,
// policy programs attached, no policy). The underlay is a veth pair of
// MTU 1500, so native pods have MTU 1500 and VXLAN pods 1450. Run with
// -benchtime 1x; the rounds (NODEMESH_BENCH_ROUNDS) interleave the paths.
// Client and server are pinned as in the other datapath benchmarks
// (NODEMESH_BENCH_CPUS, default CPU 0); the agents are not.
func BenchmarkCrossNode(b *testing.B) {
	cgroupV2 := requireDatapath(b)
	env := kubetest.Get(b)
	if err := env.InstallCRDs(context.Background(), crds.All()); err != nil {
		b.Fatal(err)
	}
	type path struct {
		name       string
		c          *cluster
		client     *pod
		echo, sink string
	}
	var paths []path
	for i, mode := range []string{agent.RoutingNative, agent.RoutingVXLAN} {
		c := newCluster(b, env, cgroupV2, mode, 90+i)
		for _, n := range c.nodes {
			n.cpus = benchCPUs() // as the other datapath benchmarks
		}
		ns := env.Namespace(b, "xbench", nil)
		client := c.pod(0, ns, "client", map[string]string{"app": "client"})
		local := c.pod(0, ns, "local", map[string]string{"app": "sink"})
		remote := c.pod(1, ns, "remote", map[string]string{"app": "sink"})
		c.nodes[0].daemon(local.netns, local.cgroup, "perfserve")
		c.nodes[1].daemon(remote.netns, remote.cgroup, "perfserve")
		addr := func(p *pod, port int) string { return fmt.Sprintf("%s:%d", p.ip, port) }
		if mode == agent.RoutingNative { // same-node is the same in both modes
			paths = append(paths, path{"same-node", c, client, addr(local, perfEchoPort), addr(local, perfSinkPort)})
		}
		paths = append(paths, path{"cross-node-" + mode, c, client, addr(remote, perfEchoPort), addr(remote, perfSinkPort)})
	}
	measure := func(b *testing.B, p path, mode string, args ...string) perfResult {
		b.Helper()
		out, err := p.c.nodes[0].exec(p.client, mode, args...)
		if err != nil {
			b.Fatalf("%s %v: %v\n%s", mode, args, err, out)
		}
		var r perfResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			b.Fatalf("%s result %q: %v", mode, out, err)
		}
		return r
	}
	var scenarios []func()
	for _, p := range paths {
		scenarios = append(scenarios, func() {
			b.Run(p.name, func(b *testing.B) {
				var rr, bulk perfResult
				for range b.N {
					rr = measure(b, p, "rr", p.echo, strconv.Itoa(rrCount))
					bulk = measure(b, p, "bulk", p.sink, strconv.Itoa(bulkBytes))
				}
				b.ReportMetric(rr.P50, "rr-p50-us")
				b.ReportMetric(rr.P99, "rr-p99-us")
				b.ReportMetric(bulk.Gbit, "Gbit/s")
			})
		})
	}
	inRounds(scenarios)
}

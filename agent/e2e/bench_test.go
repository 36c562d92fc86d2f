//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/agent/mapsync"
	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/install/chart/crds"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// The datapath benchmarks (make bench-datapath; root only). The topology is
// the one of ../shared/reference/ebpf-on-linux-6.18.md §2: a node network
// namespace with no external link, pods in their own namespaces over veth,
// routed (no bridge). Pod 1 serves, pod 2 is the client. Each scenario
// attaches only what it measures, so these pods are built with ip(8) rather
// than through the agent (which always attaches its programs);
// BenchmarkCNIAdd measures the agent's CNI path itself.

const (
	benchEntries = 10_000
	rrCount      = 20_000
	crrCount     = 3_000
	bulkBytes    = 1 << 30
	applyRounds  = 20

	benchServer = "10.244.1.2"
	benchClient = "10.244.2.2"
	benchNodeIP = "10.244.0.1"
	benchSvc    = "10.96.0.11:9000"

	serverID bpf.Identity = 300
	clientID bpf.Identity = 301
)

// benchNet is the node of the datapath benchmarks.
type benchNet struct {
	*node
	server, client               *pod
	serverIfindex, clientIfindex int
	serverHostIf, clientHostIf   string
	nodeNetns                    string
	echoAddr, sinkAddr           string
}

func newBenchNet(b *testing.B) *benchNet {
	cgroupV2 := requireDatapath(b)
	n := newNode(b, cgroupV2, "")
	n.cpus = benchCPUs()
	bn := &benchNet{node: n, nodeNetns: n.netnsName("node"),
		echoAddr: fmt.Sprintf("%s:%d", benchServer, perfEchoPort), sinkAddr: fmt.Sprintf("%s:%d", benchServer, perfSinkPort)}
	node := bn.nodeNetns
	run(b, "ip", "-n", node, "addr", "add", benchNodeIP+"/32", "dev", "lo")
	run(b, "ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	run(b, "ip", "-n", node, "route", "add", "blackhole", "10.96.0.0/16")
	mk := func(i int, name string) (*pod, string, int) {
		p := &pod{namespace: "bench", name: name, netns: n.netnsName(name), cgroup: filepath.Join(n.cgroupRoot, name),
			ip: fmt.Sprintf("10.244.%d.2", i)}
		hostIf := fmt.Sprintf("%sv%d", n.id, i)
		run(b, "ip", "netns", "add", p.netns)
		run(b, "ip", "-n", p.netns, "link", "set", "lo", "up")
		run(b, "ip", "link", "add", hostIf, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", p.netns)
		run(b, "ip", "-n", node, "addr", "add", fmt.Sprintf("10.244.%d.1/24", i), "dev", hostIf)
		run(b, "ip", "-n", node, "link", "set", hostIf, "up")
		run(b, "ip", "-n", p.netns, "addr", "add", p.ip+"/24", "dev", "eth0")
		run(b, "ip", "-n", p.netns, "link", "set", "eth0", "up")
		run(b, "ip", "-n", p.netns, "route", "add", "10.244.0.0/16", "via", fmt.Sprintf("10.244.%d.1", i))
		run(b, "ip", "-n", p.netns, "route", "add", "10.96.0.0/16", "via", fmt.Sprintf("10.244.%d.1", i))
		out, err := exec.Command("ip", "-n", node, "-o", "link", "show", hostIf).Output()
		if err != nil {
			b.Fatal(err)
		}
		idx, err := strconv.Atoi(strings.SplitN(string(out), ":", 2)[0])
		if err != nil {
			b.Fatalf("ifindex of %s: %q", hostIf, out)
		}
		return p, hostIf, idx
	}
	bn.server, bn.serverHostIf, bn.serverIfindex = mk(1, "server")
	bn.client, bn.clientHostIf, bn.clientIfindex = mk(2, "client")
	n.daemon(bn.server.netns, bn.server.cgroup, "perfserve")
	return bn
}

// benchCPUs is where the benchmarks' client and server run:
// $NODEMESH_BENCH_CPUS (a taskset list; "all": anywhere), by default CPU 0.
// Both on one CPU, a round trip stays on it; spread over two vCPUs, each
// direction may wait for the other vCPU to wake from idle (a VM exit), and
// the median flips between ~25 and ~95 µs from run to run on these
// machines, for every scenario alike.
func benchCPUs() string {
	switch c := os.Getenv("NODEMESH_BENCH_CPUS"); c {
	case "":
		return "0"
	case "all":
		return ""
	default:
		return c
	}
}

// measure runs a measuring helper in the client pod and decodes its result.
func (bn *benchNet) measure(b *testing.B, mode string, args ...string) perfResult {
	b.Helper()
	out, err := bn.exec(bn.client, mode, args...)
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", mode, args, err, out)
	}
	var r perfResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		b.Fatalf("%s result %q: %v", mode, out, err)
	}
	return r
}

// inNetns runs fn on a thread in the network namespace at path.
func inNetns(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			done <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- err // the thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// attachPolicy loads the TC policy program with 10,000 entries, both pods
// isolated in both directions and the client→server flows allowed by
// entries, and attaches it in both directions of both host veths. It
// returns a function that detaches and unloads it.
func (bn *benchNet) attachPolicy(b *testing.B) (*bpf.Policy, func()) {
	p, err := bpf.LoadPolicy(bpf.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var atts []*bpf.TCAttachment
	undo := func() {
		for _, a := range atts {
			if err := a.Detach(); err != nil {
				b.Errorf("detach: %v", err)
			}
		}
		p.Close()
	}
	fail := func(err error) {
		undo()
		b.Fatal(err)
	}
	both := bpf.EnforceIngress | bpf.EnforceEgress
	for ifindex, ep := range map[int]bpf.Endpoint{
		bn.serverIfindex: {IP: netip.MustParseAddr(benchServer).As4(), Identity: serverID, Flags: both},
		bn.clientIfindex: {IP: netip.MustParseAddr(benchClient).As4(), Identity: clientID, Flags: both},
	} {
		if err := p.PutEndpoint(ifindex, ep); err != nil {
			fail(err)
		}
	}
	for ip, id := range map[string]bpf.Identity{benchServer: serverID, benchClient: clientID, benchNodeIP: bpf.IdentityHost} {
		if err := p.PutIdentity(netip.PrefixFrom(netip.MustParseAddr(ip), 32), id); err != nil {
			fail(err)
		}
	}
	keys, verdicts := fillerPolicies(benchEntries - 4)
	for _, port := range []uint16{perfEchoPort, perfSinkPort} {
		keys = append(keys,
			bpf.PolicyKey{Endpoint: serverID, Peer: clientID, Port: port, Proto: bpf.ProtoTCP, Dir: bpf.Ingress},
			bpf.PolicyKey{Endpoint: clientID, Peer: serverID, Port: port, Proto: bpf.ProtoTCP, Dir: bpf.Egress})
		verdicts = append(verdicts, bpf.Allow, bpf.Allow)
	}
	if err := p.PutPolicies(keys, verdicts); err != nil {
		fail(err)
	}
	// As the agent configures it: the node-proxy return path on (replies of
	// flows a node socket opened towards a pod look for a proxy socket).
	if err := p.SetProxyReturn(netip.MustParsePrefix("10.244.0.0/16"), agent.ProxyReturnMark); err != nil {
		fail(err)
	}
	err = inNetns(bn.netnsPath("node"), func() error {
		for _, ifindex := range []int{bn.serverIfindex, bn.clientIfindex} {
			for _, d := range []bpf.Direction{bpf.Egress, bpf.Ingress} {
				a, err := p.Attach(ifindex, d, bpf.AttachOptions{})
				if err != nil {
					return err
				}
				atts = append(atts, a)
			}
		}
		return nil
	})
	if err != nil {
		fail(err)
	}
	return p, undo
}

// fillerPolicies is n entries that never match the benchmark's flows:
// peers that do not exist, 4 ports each, for the server's ingress.
func fillerPolicies(n int) ([]bpf.PolicyKey, []bpf.Verdict) {
	keys := make([]bpf.PolicyKey, 0, n+4)
	verdicts := make([]bpf.Verdict, 0, n+4)
	for i := range n {
		keys = append(keys, bpf.PolicyKey{Endpoint: serverID, Peer: bpf.IdentityFirstAllocated + 10_000 + bpf.Identity(i/4),
			Port: uint16(8000 + i%4), Proto: bpf.ProtoTCP, Dir: bpf.Ingress})
		verdicts = append(verdicts, bpf.Allow)
	}
	return keys, verdicts
}

// iptablesRules is a FORWARD chain of rules (ESTABLISHED shortcut first
// when ct), in the reference's shape: non-matching accepts, then the
// client→server accepts, then the reply-direction accepts (so replies walk
// the whole list), then DROP.
func iptablesRules(rules int, ct bool) string {
	var sb strings.Builder
	sb.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	if ct {
		sb.WriteString("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n")
	}
	for i := range rules - 4 {
		fmt.Fprintf(&sb, "-A FORWARD -s 10.245.%d.%d/32 -d %s/32 -p tcp -m tcp --dport %d -j ACCEPT\n", i/250, i%250+1, benchServer, 8000+i%4)
	}
	for _, port := range []int{perfEchoPort, perfSinkPort} {
		fmt.Fprintf(&sb, "-A FORWARD -s %s/32 -d %s/32 -p tcp -m tcp --dport %d -j ACCEPT\n", benchClient, benchServer, port)
	}
	for _, port := range []int{perfEchoPort, perfSinkPort} {
		fmt.Fprintf(&sb, "-A FORWARD -s %s/32 -d %s/32 -p tcp -m tcp --sport %d -j ACCEPT\n", benchServer, benchClient, port)
	}
	sb.WriteString("-A FORWARD -j DROP\nCOMMIT\n")
	return sb.String()
}

func iptablesRestore(b *testing.B, netnsName, rules string) time.Duration {
	b.Helper()
	cmd := exec.Command("ip", "netns", "exec", netnsName, "iptables-nft-restore")
	cmd.Stdin = strings.NewReader(rules)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("iptables-nft-restore: %v\n%s", err, out)
	}
	return time.Since(start)
}

func requireIptables(b *testing.B) {
	if _, err := exec.LookPath("iptables-nft-restore"); err != nil {
		skip := b.Skipf
		if os.Getenv("NODEMESH_DATAPATH") == "required" {
			skip = b.Fatalf
		}
		skip("skipped: needs iptables-nft-restore (apt-get install iptables) for the iptables comparison")
	}
}

func reportRR(b *testing.B, rr, crr perfResult) {
	b.ReportMetric(rr.P50, "rr-p50-us")
	b.ReportMetric(rr.P99, "rr-p99-us")
	b.ReportMetric(crr.P50, "crr-p50-us")
	b.ReportMetric(crr.P99, "crr-p99-us")
}

// BenchmarkPodToPod: request/response (20,000 64-byte round trips on one
// connection), connection set-up (3,000 × connect, round trip, close) and a
// 1 GiB single-stream transfer, pod to pod through the node, with no
// program, with nodemesh's TC policy holding 10,000 entries, and with a
// 10,000-rule iptables-nft FORWARD chain (with and without the ESTABLISHED
// shortcut). Run with -benchtime 1x; -count repeats the four scenarios in
// turn.
func BenchmarkPodToPod(b *testing.B) {
	requireIptables(b)
	bn := newBenchNet(b)
	var scenarios []func()
	scenario := func(name string, setup func(b *testing.B) func()) {
		scenarios = append(scenarios, func() {
			b.Run(name, func(b *testing.B) {
				undo := setup(b)
				defer undo()
				var rr, crr, bulk perfResult
				for range b.N {
					rr = bn.measure(b, "rr", bn.echoAddr, strconv.Itoa(rrCount))
					crr = bn.measure(b, "crr", bn.echoAddr, strconv.Itoa(crrCount))
					bulk = bn.measure(b, "bulk", bn.sinkAddr, strconv.Itoa(bulkBytes))
				}
				reportRR(b, rr, crr)
				b.ReportMetric(bulk.Gbit, "Gbit/s")
			})
		})
	}
	scenario("none", func(*testing.B) func() { return func() {} })
	scenario("nodemesh-10k", func(b *testing.B) func() {
		p, undo := bn.attachPolicy(b)
		before, _ := p.Counters()
		return func() {
			after, err := p.Counters()
			if err == nil {
				allowed := after[bpf.Ingress][bpf.ReasonAllowedPolicy].Packets - before[bpf.Ingress][bpf.ReasonAllowedPolicy].Packets
				established := after[bpf.Ingress][bpf.ReasonCTEstablished].Packets + after[bpf.Egress][bpf.ReasonCTEstablished].Packets
				var dropped uint64
				for _, d := range []bpf.Direction{bpf.Ingress, bpf.Egress} {
					for r := range bpf.NumReasons {
						if r.Dropped() {
							dropped += after[d][r].Packets
						}
					}
				}
				if allowed == 0 || dropped != 0 {
					b.Errorf("the flows were not decided by policy: %d allowed by an entry, %d dropped", allowed, dropped)
				}
				b.Logf("policy program: %d new flows allowed by an entry, %d packets by conntrack, %d dropped", allowed, established, dropped)
			}
			undo()
		}
	})
	for _, ct := range []bool{false, true} {
		name := "iptables-10k"
		if ct {
			name += "-ct"
		}
		scenario(name, func(b *testing.B) func() {
			load := iptablesRestore(b, bn.nodeNetns, iptablesRules(benchEntries, ct))
			b.Logf("iptables-nft-restore of %d rules: %s", benchEntries, load.Round(time.Millisecond))
			return func() { run(b, "ip", "netns", "exec", bn.nodeNetns, "iptables-nft", "-F", "FORWARD") }
		})
	}
	inRounds(scenarios)
}

// inRounds runs the scenarios in turn, benchRounds() times, so that a load
// change on the shared machine hits every scenario alike. The repeated
// sub-benchmarks get go test's #01, #02 suffixes.
func inRounds(scenarios []func()) {
	for range benchRounds() {
		for _, s := range scenarios {
			s()
		}
	}
}

// benchRounds is NODEMESH_BENCH_ROUNDS, default 3.
func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv("NODEMESH_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// BenchmarkRedirect: connection set-up (connect, one round trip, close) of
// the client pod to a Service address answered by a Go splicing proxy on
// 15001 that reads SO_ORIGINAL_DST: through nodemesh's cgroup/connect4
// redirect (proxy in the node netns) and through an iptables nat REDIRECT in
// the client pod's OUTPUT chain (proxy in the pod netns, as a sidecar), vs
// the client connecting to the backend directly.
func BenchmarkRedirect(b *testing.B) {
	requireIptables(b)
	bn := newBenchNet(b)
	backend := bn.echoAddr
	var scenarios []func()
	scenario := func(name, addr string, setup func(b *testing.B) func()) {
		scenarios = append(scenarios, func() {
			b.Run(name, func(b *testing.B) {
				undo := setup(b)
				defer undo()
				var rr, crr perfResult
				for range b.N {
					rr = bn.measure(b, "rr", addr, strconv.Itoa(rrCount))
					crr = bn.measure(b, "crr", addr, strconv.Itoa(crrCount))
				}
				reportRR(b, rr, crr)
			})
		})
	}
	scenario("direct", backend, func(*testing.B) func() { return func() {} })
	scenario("iptables-redirect", benchSvc, func(b *testing.B) func() {
		proxy, _ := bn.daemon(bn.client.netns, filepath.Join(bn.cgroupRoot, "sidecar"), "splice", benchSvc, backend)
		run(b, "ip", "netns", "exec", bn.client.netns, "iptables-nft", "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
			"-d", "10.96.0.11", "--dport", "9000", "-j", "REDIRECT", "--to-ports", strconv.Itoa(bpf.ProxyOutboundPort))
		return func() {
			run(b, "ip", "netns", "exec", bn.client.netns, "iptables-nft", "-t", "nat", "-F", "OUTPUT")
			proxy.Kill()
			proxy.Wait()
		}
	})
	scenario("nodemesh-connect4", benchSvc, func(b *testing.B) func() {
		proxy, _ := bn.daemon(bn.nodeNetns, filepath.Join(bn.cgroupRoot, "proxy"), "splice", benchSvc, backend)
		r, err := bpf.LoadRedirect(bpf.LoadOptions{})
		if err != nil {
			b.Fatal(err)
		}
		att, err := r.AttachCgroup(bn.cgroupRoot, "")
		if err != nil {
			r.Close()
			b.Fatal(err)
		}
		undo := func() {
			att.Detach()
			r.Close()
			proxy.Kill()
			proxy.Wait()
		}
		cookie, err := bpf.NetnsCookie(bn.netnsPath("client"))
		if err == nil {
			err = r.SetProxy(netip.AddrPortFrom(netip.MustParseAddr(benchNodeIP), bpf.ProxyOutboundPort))
		}
		if err == nil {
			err = r.PutService(netip.MustParseAddrPort(benchSvc))
		}
		if err == nil {
			err = r.OptIn(cookie)
		}
		if err != nil {
			undo()
			b.Fatal(err)
		}
		return func() {
			if c, err := r.Counters(); err == nil {
				b.Logf("redirect counters: %d redirected, %d SO_ORIGINAL_DST answered, %d missed",
					c[bpf.RedirectRedirected], c[bpf.RedirectOrigDstAnswered], c[bpf.RedirectOrigDstMiss])
				if c[bpf.RedirectRedirected] < crrCount || c[bpf.RedirectOrigDstAnswered] < crrCount {
					b.Errorf("connections were not redirected by connect4")
				}
			}
			undo()
		}
	})
	inRounds(scenarios)
}

// BenchmarkPolicyApply: writing 10,000 policy entries into an empty map
// (20 times per run),
// with PutPolicies alone and through what the agent's sync does (translate
// the NetworkPolicies, read the maps, plan and apply the writes:
// agent/mapsync). The policy:
// one server identity, ingress from 2,500 client identities on 4 ports.
func BenchmarkPolicyApply(b *testing.B) {
	requireDatapath(b)
	in := policyInput10k()
	if n := countEntries(policy.Translate(in)); n < benchEntries {
		b.Fatalf("the input translates to %d entries, want ≥ %d", n, benchEntries)
	}
	var scenarios []func()
	bench := func(name string, apply func(p *bpf.Policy) error) {
		scenarios = append(scenarios, func() {
			b.Run(name, func(b *testing.B) {
				p, err := bpf.LoadPolicy(bpf.LoadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				var samples []time.Duration
				for range b.N {
					for range applyRounds {
						have, err := p.Policies()
						if err != nil {
							b.Fatal(err)
						}
						if err := p.DeletePolicies(slices.Collect(maps.Keys(have))); err != nil {
							b.Fatal(err)
						}
						start := time.Now()
						if err := apply(p); err != nil {
							b.Fatal(err)
						}
						samples = append(samples, time.Since(start))
					}
				}
				if have, _ := p.Policies(); len(have) < benchEntries {
					b.Fatalf("map holds %d entries", len(have))
				}
				r := summarize(samples)
				b.ReportMetric(r.P50/1e3, "apply-p50-ms")
				b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1e3, "apply-max-ms")
			})
		})
	}
	keys, verdicts := fillerPolicies(benchEntries)
	bench("PutPolicies", func(p *bpf.Policy) error { return p.PutPolicies(keys, verdicts) })
	bench("agent-sync", func(p *bpf.Policy) error {
		res := policy.Translate(in)
		want := mapsync.Want{Policies: map[bpf.PolicyKey]bpf.Verdict{}}
		for _, ip := range res.Identities {
			maps.Copy(want.Policies, ip.Entries)
		}
		have, err := mapsync.Read(p)
		if err != nil {
			return err
		}
		return mapsync.Apply(p, mapsync.NewPlan(have, want))
	})
	inRounds(scenarios)
}

var tookRE = regexp.MustCompile(`msg="pod added".* took=([0-9.]+[µmn]?s)`)

func countEntries(res *policy.Result) int {
	n := 0
	for _, ip := range res.Identities {
		n += len(ip.Entries)
	}
	return n
}

func policyInput10k() policy.Input {
	in := policy.Input{Namespaces: map[string]map[string]string{"bench": {"kubernetes.io/metadata.name": "bench"}}}
	in.Endpoints = []policy.Endpoint{{Namespace: "bench", Name: "server", Labels: map[string]string{"app": "server"}, Identity: serverID}}
	in.Identities = []policy.Identity{{ID: serverID, Namespace: "bench", Labels: map[string]string{"app": "server"}}}
	for i := range benchEntries / 4 {
		in.Identities = append(in.Identities, policy.Identity{ID: bpf.IdentityFirstAllocated + 1000 + bpf.Identity(i),
			Namespace: "bench", Labels: map[string]string{"app": "client", "shard": strconv.Itoa(i)}})
	}
	var ports []networkingv1.NetworkPolicyPort
	tcp := corev1.ProtocolTCP
	for i := range 4 {
		port := intstr.FromInt32(int32(8000 + i))
		ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
	}
	in.Policies = []*networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "clients"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: ports,
			}},
		},
	}}
	return in
}

// BenchmarkCNIAdd: latency of the CNI plugin binary's ADD and DEL as a
// container runtime sees it (exec of nodemesh-cni, the agent's unix socket,
// veth, address, routes, identity, maps, programs), over 50 pods.
func BenchmarkCNIAdd(b *testing.B) {
	cgroupV2 := requireDatapath(b)
	env := kubetest.Dedicated(b, "cni-bench")
	ctx := context.Background()
	if err := env.InstallCRDs(ctx, crds.All()); err != nil {
		b.Fatal(err)
	}
	n := newNode(b, cgroupV2, env.Kubeconfig)
	buildBinaries(b, n.bin)
	ns := env.Namespace(b, "cni-bench", nil)
	const pods = 50
	for i := range pods {
		_, err := env.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": "bench"}},
			Spec:       corev1.PodSpec{NodeName: n.name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
	}
	// tcx=quiet: the agent's default, pods move from cls_bpf filters to
	// tcx once CNI calls are quiet (not during this back-to-back burst).
	// tcx=immediate: each pod moves right after its ADD, so the next ADD
	// competes with the tcx attaches (RTNL lock and the agent's lock).
	modes := []struct {
		name string
		args []string
	}{
		{"quiet", nil},
		{"immediate", []string{"--tcx-quiet-period", "1ns", "--tcx-max-delay", "1ns"}},
	}
	for range benchRounds() {
		for _, mode := range modes {
			if n.agent != nil {
				n.stopAgent(syscall.SIGTERM)
			}
			n.agentArgs = mode.args
			n.startAgent()
			benchCNIAdd(b, n, ns, pods, mode.name)
		}
	}
}

func benchCNIAdd(b *testing.B, n *node, ns string, pods int, mode string) {
	b.Run(fmt.Sprintf("pods=%d/tcx=%s", pods, mode), func(b *testing.B) {
		var adds, dels []time.Duration
		for range b.N {
			// A burst of ADDs, then of DELs, as in a rollout.
			ps := make([]*pod, pods)
			for i := range pods {
				p := &pod{namespace: ns, name: fmt.Sprintf("p%d", i), containerID: fmt.Sprintf("ctr%d%024d", i, time.Now().UnixNano())}
				p.netns = n.netnsName(p.name)
				ps[i] = p
				run(b, "ip", "netns", "add", p.netns)
				start := time.Now()
				if out, err := n.cni("ADD", p); err != nil {
					b.Fatalf("ADD: %v\n%s\n%s", err, out, n.logs())
				}
				adds = append(adds, time.Since(start))
			}
			for _, p := range ps {
				start := time.Now()
				if out, err := n.cni("DEL", p); err != nil {
					b.Fatalf("DEL: %v\n%s", err, out)
				}
				dels = append(dels, time.Since(start))
				run(b, "ip", "netns", "del", p.netns)
			}
		}
		a, d := summarize(adds), summarize(dels)
		b.ReportMetric(a.P50/1e3, "add-p50-ms")
		b.ReportMetric(a.P99/1e3, "add-p99-ms")
		// The agent's own part of ADD (from its log: request received to
		// result), without the plugin's exec and the socket round trip.
		var inAgent []time.Duration
		matches := tookRE.FindAllStringSubmatch(n.logs(), -1)
		for _, m := range matches[max(0, len(matches)-len(adds)):] { // this round's
			if d, err := time.ParseDuration(m[1]); err == nil {
				inAgent = append(inAgent, d)
			}
		}
		if len(inAgent) > 0 {
			ag := summarize(inAgent)
			b.ReportMetric(ag.P50/1e3, "agent-add-p50-ms")
			b.ReportMetric(ag.P99/1e3, "agent-add-p99-ms")
		}
		b.ReportMetric(d.P50/1e3, "del-p50-ms")
		b.ReportMetric(d.P99/1e3, "del-p99-ms")
	})
}

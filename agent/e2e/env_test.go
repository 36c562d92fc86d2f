//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/nodemesh/nodemesh/agent"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/bpf"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

// requireDatapath skips unless the test can build a node out of network
// namespaces: root, BPF, iproute2, a cgroup v2 hierarchy.
func requireDatapath(t testing.TB) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("NODEMESH_DATAPATH") == "required" { // make test-datapath
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("skipped: needs root (netns, veth, BPF, cgroups); run `sudo make test-datapath` (tests) or `sudo make bench-datapath` (benchmarks)")
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		skip("skipped: cannot create a BPF map as root (%v)", err)
	}
	m.Close()
	if _, err := exec.LookPath("ip"); err != nil {
		skip("skipped: needs the ip command (iproute2)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		skip("skipped: needs the setpriv command (util-linux), to run the agent with only its capabilities")
	}
	dir, err := bpf.CgroupV2Root()
	if err != nil {
		skip("skipped: %v", err)
	}
	return dir
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// repoRoot is the module root (the test runs in agent/e2e).
func repoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// buildBinaries builds nodemesh-agent and nodemesh-cni into dir.
func buildBinaries(t testing.TB, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/nodemesh-agent", "./cmd/nodemesh-cni")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build binaries: %v\n%s", err, out)
	}
}

// node is a node made of network namespaces, with the agent as a process.
type node struct {
	t          testing.TB
	id         string // unique prefix of everything created
	name       string // Kubernetes node name
	scratch    string
	bin        string
	bpffs      string
	cgroupRoot string // the cgroup the agent attaches to
	stateDir   string
	cniConf    string
	cniBin     string
	socket     string
	kubeconfig string
	podCIDR    string
	metrics    string
	// agentArgs are added to every agent's command line.
	agentArgs []string
	// cpus, when set, pins helper processes to these CPUs (taskset -c).
	cpus string

	agent     *exec.Cmd
	agentDone chan error
	agentLog  *os.File
	agentN    int

	mu    sync.Mutex
	procs []*proc
	files []*os.File
}

func (n *node) netnsName(suffix string) string { return n.id + "-" + suffix }
func (n *node) netnsPath(suffix string) string { return "/run/netns/" + n.netnsName(suffix) }

// newNode sets up the node netns, a private bpffs, a cgroup and the
// directories, and registers the cleanup of all of it (and of every process
// started) even when the test fails.
func newNode(t testing.TB, cgroupV2, kubeconfig string) *node {
	n := &node{t: t, id: "nme2e" + rand.String(5), scratch: t.TempDir(), kubeconfig: kubeconfig, podCIDR: "10.244.77.0/24"}
	n.name = n.id + "-node"
	n.bin = filepath.Join(n.scratch, "build")
	n.bpffs = filepath.Join(n.scratch, "bpffs")
	n.stateDir = filepath.Join(n.scratch, "state")
	n.cniConf = filepath.Join(n.scratch, "net.d")
	n.cniBin = filepath.Join(n.scratch, "cni-bin")
	n.socket = filepath.Join(n.scratch, "run", "cni.sock")
	n.cgroupRoot = filepath.Join(cgroupV2, n.id)
	for _, d := range []string{n.bin, n.bpffs, n.stateDir, n.cniConf, n.cniBin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(n.cleanup)
	run(t, "mount", "-t", "bpf", "bpf", n.bpffs)
	if err := os.Mkdir(n.cgroupRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "netns", "add", n.netnsName("node"))
	run(t, "ip", "-n", n.netnsName("node"), "link", "set", "lo", "up")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.metrics = l.Addr().String()
	l.Close()
	return n
}

// cleanup ends every process this test started (by PID), then removes
// netns, mounts (with every pin), cgroups.
func (n *node) cleanup() {
	n.mu.Lock()
	procs := append([]*proc(nil), n.procs...)
	n.mu.Unlock()
	for _, p := range procs {
		p.Kill()
		p.Wait()
	}
	n.stopAgent(syscall.SIGKILL)
	for _, f := range n.files {
		f.Close()
	}
	if n.agentLog != nil {
		n.agentLog.Close()
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], n.id+"-") {
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	// Unmounting the private bpffs drops every pin: links detach, maps go.
	unix.Unmount(n.bpffs, unix.MNT_DETACH)
	// Child cgroups first; they are empty once the processes are gone.
	entries, _ := os.ReadDir(n.cgroupRoot)
	for _, e := range entries {
		if e.IsDir() {
			rmdirRetry(filepath.Join(n.cgroupRoot, e.Name()))
		}
	}
	rmdirRetry(n.cgroupRoot)
}

func rmdirRetry(dir string) {
	for range 50 {
		if err := unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startAgent runs nodemesh-agent and waits until it is ready.
func (n *node) startAgent() {
	t := n.t
	t.Helper()
	n.agentN++
	logPath := filepath.Join(n.scratch, fmt.Sprintf("agent-%d.log", n.agentN))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.agentLog = f
	// The agent runs with exactly the capabilities the chart grants it:
	// as root, a capability outside the bounding set is not to be had.
	bounding := "-all"
	for _, c := range api.AgentCapabilities {
		bounding += ",+" + strings.ToLower(c)
	}
	cmd := exec.Command("setpriv", "--bounding-set", bounding, "--no-new-privs", "--", filepath.Join(n.bin, "nodemesh-agent"), "run",
		"--kubeconfig", n.kubeconfig, "--node-name", n.name, "--pod-cidr", n.podCIDR,
		"--bpffs", n.bpffs, "--cgroup-root", n.cgroupRoot, "--state-dir", n.stateDir,
		"--cni-conf-dir", n.cniConf, "--cni-bin-dir", n.cniBin, "--cni-plugin", filepath.Join(n.bin, "nodemesh-cni"),
		"--cni-socket", n.socket, "--metrics-address", n.metrics,
		"--node-netns", n.netnsPath("node"), "--log-format", "text", "--log-level", "debug")
	cmd.Args = append(cmd.Args, n.agentArgs...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited := make(chan error, 1)
	if err := kubetest.StartLocked(cmd, exited); err != nil {
		t.Fatal(err)
	}
	// Set before waiting for readiness, so that a cleanup after a failure
	// below stops this agent (and waits for this one's exit).
	n.agent, n.agentDone = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			n.agent = nil
			t.Fatalf("agent exited: %v\n%s", err, n.logs())
		default:
		}
		if resp, err := http.Get("http://" + n.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				n.agentDone = exited
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("agent not ready after 60s\n%s", n.logs())
}

// stopAgent ends the agent with sig (SIGKILL: a crash).
func (n *node) stopAgent(sig syscall.Signal) {
	if n.agent == nil {
		return
	}
	n.agent.Process.Signal(sig)
	select {
	case <-n.agentDone:
	case <-time.After(30 * time.Second): // the DaemonSet's grace period
		n.agent.Process.Kill()
		<-n.agentDone
	}
	n.agent = nil
}

// lastLog is the log of the agent started last.
func (n *node) lastLog() string {
	data, _ := os.ReadFile(filepath.Join(n.scratch, fmt.Sprintf("agent-%d.log", n.agentN)))
	return string(data)
}

func (n *node) logs() string {
	var b strings.Builder
	for i := 1; i <= n.agentN; i++ {
		data, _ := os.ReadFile(filepath.Join(n.scratch, fmt.Sprintf("agent-%d.log", i)))
		fmt.Fprintf(&b, "--- agent run %d ---\n%s", i, data)
	}
	return b.String()
}

// pod is a pod namespace with a cgroup for its processes.
type pod struct {
	namespace, name string
	containerID     string
	netns           string // name
	cgroup          string
	ip              string
	result          *types100.Result
}

// addPod creates the pod's netns and cgroup and calls the installed
// nodemesh-cni binary's ADD, as a container runtime would.
func (n *node) addPod(namespace, name string) *pod {
	t := n.t
	t.Helper()
	p, out, err := n.tryAddPod(namespace, name)
	if err != nil {
		t.Fatalf("CNI ADD %s/%s: %v\n%s", namespace, name, err, n.logs())
	}
	res, err := types100.NewResult(out)
	if err != nil {
		t.Fatalf("CNI ADD result %q: %v", out, err)
	}
	p.result = res.(*types100.Result)
	if len(p.result.IPs) != 1 {
		t.Fatalf("CNI ADD result has %d addresses: %s", len(p.result.IPs), out)
	}
	p.ip = p.result.IPs[0].Address.IP.String()
	return p
}

// tryAddPod creates the pod's netns and cgroup and calls ADD, returning
// the plugin's output and error.
func (n *node) tryAddPod(namespace, name string) (*pod, []byte, error) {
	t := n.t
	t.Helper()
	p := &pod{namespace: namespace, name: name, containerID: "ctr" + rand.String(20), netns: n.netnsName(name),
		cgroup: filepath.Join(n.cgroupRoot, name)}
	run(t, "ip", "netns", "add", p.netns)
	if err := os.MkdirAll(p.cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := n.cni("ADD", p)
	return p, out, err
}

// cni runs the installed plugin binary with the CNI environment and the
// plugin's entry of the conflist the agent wrote.
func (n *node) cni(command string, p *pod) ([]byte, error) {
	conf, err := n.pluginConf()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(n.cniBin, "nodemesh-cni"))
	cmd.Env = []string{
		"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + p.containerID, "CNI_NETNS=" + n.netnsPath(p.name),
		"CNI_IFNAME=eth0", "CNI_PATH=" + n.cniBin,
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=" + p.namespace + ";K8S_POD_NAME=" + p.name + ";K8S_POD_INFRA_CONTAINER_ID=" + p.containerID,
	}
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("%v: %s %s", err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func (n *node) pluginConf() ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(n.cniConf, agent.CNIConfFile))
	if err != nil {
		return nil, err
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, err
	}
	conf := list.Plugins[0]
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	return json.Marshal(conf)
}

// helper starts the test binary in helper mode inside netns (by name; "" =
// the node's) and cgroup.
func (n *node) helper(netns, cgroup, mode string, args ...string) *exec.Cmd {
	t := n.t
	t.Helper()
	if err := os.MkdirAll(cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	// The descriptor must stay open until the process starts; cleanup
	// closes it.
	n.mu.Lock()
	n.files = append(n.files, cg)
	n.mu.Unlock()
	cmd := exec.Command("ip", "netns", "exec", netns, os.Args[0])
	if n.cpus != "" {
		cmd = exec.Command("taskset", append([]string{"-c", n.cpus}, cmd.Args...)...)
	}
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperArgsEnv+"="+strings.Join(args, " "), "GODEBUG=multipathtcp=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	return cmd
}

// proc is a helper process, started from a thread that lives as long as
// it does (kubetest.StartLocked: the parent-death signal follows the
// thread that started a child, and Go ends threads).
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start starts cmd as a proc that cleanup kills.
func (n *node) start(cmd *exec.Cmd) (*proc, error) {
	exited := make(chan error, 1)
	if err := kubetest.StartLocked(cmd, exited); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = <-exited
		close(p.done)
	}()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	return p, nil
}

// Wait waits for the process to end and returns how it ended.
func (p *proc) Wait() error {
	<-p.done
	return p.err
}

// Kill ends the process unless it has ended.
func (p *proc) Kill() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
	}
}

// daemon starts a long-running helper and waits for its first line.
func (n *node) daemon(netns, cgroup, mode string, args ...string) (*proc, *bufio.Scanner) {
	t := n.t
	t.Helper()
	cmd := n.helper(netns, cgroup, mode, args...)
	// An os.Pipe, not StdoutPipe: the process is reaped as soon as it
	// ends, and Wait would close a StdoutPipe before everything was read.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	p, err := n.start(cmd)
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	n.mu.Lock()
	n.files = append(n.files, r)
	n.mu.Unlock()
	sc := bufio.NewScanner(r)
	first := make(chan string, 1)
	go func() {
		if sc.Scan() {
			first <- sc.Text()
		}
		close(first)
	}()
	select {
	case line := <-first:
		if line != "ready" && line != "connected" {
			t.Fatalf("%s helper: %q", mode, line)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s helper did not start", mode)
	}
	return p, sc
}

// exec runs a short helper to completion in p.
func (n *node) exec(p *pod, mode string, args ...string) (string, error) {
	return n.execIn(p.netns, p.cgroup, mode, args...)
}

// execIn runs a short helper to completion in netns (by name) and cgroup.
func (n *node) execIn(netns, cgroup, mode string, args ...string) (string, error) {
	cmd := n.helper(netns, cgroup, mode, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	pr, err := n.start(cmd)
	if err == nil {
		err = pr.Wait()
	}
	return strings.TrimSpace(out.String()), err
}

// eventually retries check until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// attachment says how p's policy programs are attached to its host veth:
// pinned tcx links and nodemesh cls_bpf filters (0–2 each).
func (n *node) attachment(p *pod) (pins, filters int, err error) {
	veth := agent.HostVethName(p.containerID, "eth0")
	for _, suffix := range []string{"to_pod", "from_pod"} {
		if _, err := os.Stat(filepath.Join(n.bpffs, "nodemesh", "links", veth+"_"+suffix)); err == nil {
			pins++
		}
	}
	ns, err := netns.GetFromPath(n.netnsPath("node"))
	if err != nil {
		return 0, 0, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, 0, err
	}
	defer h.Delete()
	l, err := h.LinkByName(veth)
	if err != nil {
		return 0, 0, err
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := h.FilterList(l, parent)
		if err != nil {
			continue // no clsact qdisc
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, "nodemesh-") {
				filters++
			}
		}
	}
	return pins, filters, nil
}

package kubetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ErrNoBinaries is returned when the control-plane binaries are not built.
var ErrNoBinaries = errors.New("kube-apiserver and etcd are not built (run: make kube-binaries)")

// Options configure Start.
type Options struct {
	// Dir holds the certificates, etcd data, logs, PID file and kubeconfig.
	Dir string
	// BinDir holds kube-apiserver, etcd and kube-controller-manager; BinDir()
	// when empty.
	BinDir string
	// WithKCM also runs kube-controller-manager, so that Deployments get
	// ReplicaSets and Pods, namespaces finish deleting and default
	// ServiceAccounts exist.
	WithKCM bool
	// Detach leaves the processes running after this process exits (make
	// kube-up); Stop, or StopDir, ends them.
	Detach bool
	// ServiceCIDR is the Service ClusterIP range (default 10.96.0.0/16).
	ServiceCIDR string
	// Cluster, when set, makes the control plane one that real kubelets
	// join (make cluster-up): see ClusterOptions.
	Cluster *ClusterOptions
}

// ClusterOptions turn the test API into the control plane of a cluster
// with real nodes: the API server listens on Address (reachable from the
// nodes' network namespaces) on a fixed port, the kubernetes Service has
// endpoints, ServiceAccount admission mounts tokens, kube-controller-manager
// allocates node pod CIDRs and runs every controller (node lifecycle
// included), kube-scheduler runs, and every node gets a client certificate
// and a kubeconfig (kubeconfig-NODE) for its kubelet.
type ClusterOptions struct {
	Address netip.Addr
	// Port of the API server (default 6443).
	Port int
	// PodCIDR is the cluster's pod range, cut into a /24 per node.
	PodCIDR string
	Nodes   []string
}

// Env is a reachable Kubernetes API.
type Env struct {
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	Istio      istioclient.Interface

	dir string // set when this Env was started from a directory
}

// BinDir is where hack/kube-build.sh puts the binaries:
// $NODEMESH_KUBE_BIN, or $NODEMESH_CACHE/kube/v<version> (NODEMESH_CACHE
// defaults to ~/.cache/nodemesh), where the version is read from
// hack/kube/go.mod.
func BinDir() (string, error) {
	if d := os.Getenv("NODEMESH_KUBE_BIN"); d != "" {
		return d, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	mod, err := os.ReadFile(filepath.Join(root, "hack/kube/go.mod"))
	if err != nil {
		return "", fmt.Errorf("read wrapper module: %w", err)
	}
	version := ""
	for _, line := range strings.Split(string(mod), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "k8s.io/kubernetes v"); ok {
			version = v
		}
	}
	if version == "" {
		return "", errors.New("hack/kube/go.mod does not require k8s.io/kubernetes")
	}
	cache := os.Getenv("NODEMESH_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "nodemesh")
	}
	return filepath.Join(cache, "kube", "v"+version), nil
}

// repoRoot finds the nodemesh checkout from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack/kube/go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the nodemesh repository")
		}
		dir = parent
	}
}

// Start runs etcd and kube-apiserver (and kube-controller-manager) on
// 127.0.0.1 and waits until the API server is ready.
func Start(ctx context.Context, o Options) (*Env, error) {
	if o.BinDir == "" {
		d, err := BinDir()
		if err != nil {
			return nil, err
		}
		o.BinDir = d
	}
	need := []string{"kube-apiserver", "etcd"}
	if o.WithKCM {
		need = append(need, "kube-controller-manager")
	}
	for _, b := range need {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%w: %s missing in %s", ErrNoBinaries, b, o.BinDir)
		}
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = "10.96.0.0/16"
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "pids")); err == nil {
		return nil, fmt.Errorf("%s/pids exists: an environment is already running there (stop it first)", o.Dir)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	var extraIPs []net.IP
	var nodes []string
	if c := o.Cluster; c != nil {
		if !c.Address.IsValid() || c.PodCIDR == "" {
			return nil, errors.New("a cluster control plane needs an address and a pod CIDR")
		}
		if c.Port == 0 {
			c.Port = 6443
		}
		extraIPs, nodes = []net.IP{c.Address.AsSlice()}, c.Nodes
		need = append(need, "kube-controller-manager", "kube-scheduler")
		for _, b := range need {
			if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
				return nil, fmt.Errorf("%w: %s missing in %s", ErrNoBinaries, b, o.BinDir)
			}
		}
	}
	p := pki{dir: filepath.Join(o.Dir, "pki")}
	if err := p.generate(extraIPs, nodes); err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]
	e := &Env{dir: o.Dir}
	run := func(name string, args ...string) error {
		logf, err := os.Create(filepath.Join(o.Dir, name+".log"))
		if err != nil {
			return err
		}
		defer logf.Close()
		cmd := exec.Command(filepath.Join(o.BinDir, name), args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// Own process group: Stop signals exactly what was started here. A
		// detached environment also gets its own session so that it outlives
		// the terminal; one that is not dies with this process, even when it
		// is killed (a test binary hitting its timeout).
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !o.Detach, Setsid: o.Detach}
		if !o.Detach {
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}
		if o.Detach {
			if err := cmd.Start(); err != nil {
				return fmt.Errorf("start %s: %w", name, err)
			}
		} else if err := StartLocked(cmd, nil); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		// The PID is read before a detached process is released: Release
		// sets it to -1 (the PID file then held "-1" and kube-down stopped
		// nothing).
		pid := cmd.Process.Pid
		if o.Detach {
			cmd.Process.Release()
		}
		f, err := os.OpenFile(filepath.Join(o.Dir, "pids"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = fmt.Fprintf(f, "%s %d\n", name, pid)
		return err
	}
	fail := func(err error) (*Env, error) {
		StopDir(o.Dir)
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	if err := run("etcd", "--name=nodemesh-test", "--data-dir="+filepath.Join(o.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=nodemesh-test="+peerURL, "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return fail(err)
	}
	if err := waitHTTP(ctx, http.DefaultClient, etcdURL+"/health", 30*time.Second); err != nil {
		return fail(fmt.Errorf("etcd did not become healthy (see %s): %w", filepath.Join(o.Dir, "etcd.log"), err))
	}
	bind, advertise := "127.0.0.1", "127.0.0.1"
	apiArgs := []string{"--endpoint-reconciler-type=none", "--disable-admission-plugins=ServiceAccount"}
	if c := o.Cluster; c != nil {
		// Nodes reach the API server on Address; pods through the
		// kubernetes Service, whose endpoint the lease reconciler keeps.
		bind, advertise, apiPort = "0.0.0.0", c.Address.String(), c.Port
		apiArgs = []string{"--endpoint-reconciler-type=lease",
			"--kubelet-client-certificate=" + p.path("apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + p.path("apiserver-kubelet-client.key"),
			"--kubelet-preferred-address-types=InternalIP"}
	}
	if err := run("kube-apiserver", append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + bind, "--advertise-address=" + advertise, "--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + p.path("apiserver.crt"), "--tls-private-key-file=" + p.path("apiserver.key"),
		"--client-ca-file=" + p.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.path("sa.pub"), "--service-account-signing-key-file=" + p.path("sa.key"),
		"--service-cluster-ip-range=" + o.ServiceCIDR,
		"--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--profiling=false", "--v=1"}, apiArgs...)...); err != nil {
		return fail(err)
	}
	e.Kubeconfig = filepath.Join(o.Dir, "kubeconfig")
	server := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := writeKubeconfig(e.Kubeconfig, server, p); err != nil {
		return fail(err)
	}
	client, err := adminHTTPClient(p)
	if err != nil {
		return fail(err)
	}
	if err := waitHTTP(ctx, client, server+"/readyz", 60*time.Second); err != nil {
		return fail(fmt.Errorf("kube-apiserver did not become ready (see %s): %w", filepath.Join(o.Dir, "kube-apiserver.log"), err))
	}
	if o.WithKCM || o.Cluster != nil {
		// Without nodes, the controllers that manage nodes and volumes
		// have nothing to do (and node lifecycle would taint the test
		// Nodes some suites create).
		controllers := []string{"--controllers=*,-nodeipam,-nodelifecycle,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-cloud-node-lifecycle,-ttl"}
		if c := o.Cluster; c != nil {
			controllers = []string{"--controllers=*,-cloud-node-lifecycle,-persistentvolume-binder,-persistentvolume-expander",
				"--allocate-node-cidrs", "--cluster-cidr=" + c.PodCIDR, "--node-cidr-mask-size=24",
				"--service-cluster-ip-range=" + o.ServiceCIDR, "--node-monitor-grace-period=20s"}
		}
		if err := run("kube-controller-manager", append([]string{
			"--kubeconfig=" + e.Kubeconfig, "--authentication-kubeconfig=" + e.Kubeconfig, "--authorization-kubeconfig=" + e.Kubeconfig,
			"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false",
			"--service-account-private-key-file=" + p.path("sa.key"), "--root-ca-file=" + p.path("ca.crt"),
			"--use-service-account-credentials=false", "--v=1"}, controllers...)...); err != nil {
			return fail(err)
		}
	}
	if c := o.Cluster; c != nil {
		if err := run("kube-scheduler",
			"--kubeconfig="+e.Kubeconfig, "--authentication-kubeconfig="+e.Kubeconfig, "--authorization-kubeconfig="+e.Kubeconfig,
			"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false", "--v=1"); err != nil {
			return fail(err)
		}
		nodeServer := "https://" + netip.AddrPortFrom(c.Address, uint16(c.Port)).String()
		for _, n := range c.Nodes {
			if err := writeClientKubeconfig(filepath.Join(o.Dir, "kubeconfig-"+n), nodeServer, p, "node-"+n); err != nil {
				return fail(err)
			}
		}
	}
	if err := e.connect(); err != nil {
		return fail(err)
	}
	return e, nil
}

// Connect returns an Env for an existing kubeconfig, checking that the API
// server answers.
func Connect(ctx context.Context, kubeconfig string) (*Env, error) {
	e := &Env{Kubeconfig: kubeconfig}
	if err := e.connect(); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := e.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(cctx); err != nil {
		return nil, fmt.Errorf("API server of %s is not ready: %w", kubeconfig, err)
	}
	return e, nil
}

func (e *Env) connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load %s: %w", e.Kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	e.Config = cfg
	if e.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	e.Istio, err = istioclient.NewForConfig(cfg)
	return err
}

// Stop ends the processes of an environment this process started.
func (e *Env) Stop() error {
	if e.dir == "" {
		return nil
	}
	return StopDir(e.dir)
}

// StopDir ends the processes recorded in dir/pids (TERM, then KILL after
// 10 s) and removes the PID file. It signals only those PIDs.
func StopDir(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "pids"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var procs []*os.Process
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	// Stop in reverse start order: controller manager, API server, etcd.
	for i := len(lines) - 1; i >= 0; i-- {
		fields := strings.Fields(lines[i])
		if len(fields) != 2 {
			continue
		}
		pid, err := strconv.Atoi(fields[1])
		if err != nil || pid <= 0 || !runs(pid, fields[0]) {
			// Not a PID, or no longer the process started here (it
			// ended, and the number may belong to another one now).
			continue
		}
		p, err := os.FindProcess(pid)
		if err != nil {
			continue
		}
		if p.Signal(syscall.SIGTERM) == nil {
			procs = append(procs, p)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range procs {
		for time.Now().Before(deadline) && p.Signal(syscall.Signal(0)) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		p.Signal(syscall.SIGKILL) // already gone is fine
	}
	return os.Remove(filepath.Join(dir, "pids"))
}

// runs says whether process pid runs the binary named name (its
// executable's base name), so that a PID recorded by an environment that
// has since ended is never signalled after being reused.
func runs(pid int, name string) bool {
	exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	if err != nil {
		return false
	}
	return filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == name
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func waitHTTP(ctx context.Context, c *http.Client, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func adminHTTPClient(p pki) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(p.path("admin.crt"), p.path("admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(p.path("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}, nil
}

func writeKubeconfig(path, server string, p pki) error {
	return writeClientKubeconfig(path, server, p, "admin")
}

// writeClientKubeconfig writes a kubeconfig for the client certificate
// p.path(user+".crt").
func writeClientKubeconfig(path, server string, p pki, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["nodemesh-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: p.path("ca.crt")}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificate: p.path(user + ".crt"), ClientKey: p.path(user + ".key")}
	cfg.Contexts["nodemesh-test"] = &clientcmdapi.Context{Cluster: "nodemesh-test", AuthInfo: user}
	cfg.CurrentContext = "nodemesh-test"
	return clientcmd.WriteToFile(*cfg, path)
}

// StartLocked starts cmd from an OS thread that lives exactly as long as
// the process, then reaps it, sending Wait's result to exited (if not nil).
// The parent-death signal (SysProcAttr.Pdeathsig) is sent when the thread
// that started a child exits, not the process: Go ends threads — a thread a
// goroutine locked (network namespace work) and left locked is destroyed —
// so a child started from an arbitrary thread can be killed at any moment
// while the test runs.
func StartLocked(cmd *exec.Cmd, exited chan<- error) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		if exited != nil {
			exited <- err
		}
	}()
	return <-started
}

//go:build linux

package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/agent/ipam"
	"github.com/nodemesh/nodemesh/bpf"
)

var _ cni.Handler = (*Agent)(nil)

// readyWait bounds how long a CNI call waits for the agent's first sync.
const readyWait = 20 * time.Second

func (a *Agent) waitReady(ctx context.Context) error {
	t := time.NewTimer(readyWait)
	defer t.Stop()
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return types.NewError(types.ErrTryAgainLater, "nodemesh agent is starting", ctx.Err().Error())
	case <-t.C:
		return types.NewError(types.ErrTryAgainLater, "nodemesh agent has not synced with the API server yet", "")
	}
}

func (a *Agent) countCNI(cmd string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	a.metrics.cniRequests.WithLabelValues(cmd, result).Inc()
}

// getPod reads the pod from the node's informer, or from the API when the
// informer has not seen it yet (the runtime may call ADD right after the
// kubelet saw the pod) or has an older pod of that name than the one the
// runtime names by UID.
func (a *Agent) getPod(ctx context.Context, ref cni.PodRef) (*corev1.Pod, error) {
	if pod, err := a.informers.pods.Pods(ref.Namespace).Get(ref.Name); err == nil && (ref.UID == "" || string(pod.UID) == ref.UID) {
		return pod, nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	pod, err := a.cfg.Kube.CoreV1().Pods(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, types.NewError(types.ErrTryAgainLater, "pod not found", ref.Namespace+"/"+ref.Name)
	}
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "read pod from the API server", err.Error())
	}
	if ref.UID != "" && string(pod.UID) != ref.UID {
		return nil, types.NewError(types.ErrTryAgainLater, "pod not found",
			fmt.Sprintf("%s/%s has UID %s, the runtime asks for %s", ref.Namespace, ref.Name, pod.UID, ref.UID))
	}
	return pod, nil
}

// onThisNode refuses a pod the API server does not schedule to this node:
// its identity (labels, service account) would be given to a network
// namespace on the wrong node — what a caller of the plugin could ask for
// to have a netns of its own pass as any pod of the cluster.
func (a *Agent) onThisNode(pod *corev1.Pod) error {
	if pod.Spec.NodeName == a.cfg.NodeName {
		return nil
	}
	where := "is not scheduled to any node"
	if pod.Spec.NodeName != "" {
		where = "is scheduled to node " + pod.Spec.NodeName
	}
	return types.NewError(types.ErrInvalidEnvironmentVariables, "pod is not on this node",
		fmt.Sprintf("pod %s/%s %s, not to this node (%s): its network is not set up here", pod.Namespace, pod.Name, where, a.cfg.NodeName))
}

// Add sets up a pod's network and its datapath state before returning:
// address, veth, routes, identity, policy entries, endpoint, programs and
// (for opted-in pods) redirection.
func (a *Agent) Add(ctx context.Context, req *cni.Request) (res *types100.Result, err error) {
	defer func() { a.countCNI(cni.CommandAdd, err) }()
	defer a.upgrades.cniCall()()
	start := time.Now()
	st := stepTimer{last: start}
	if err := a.waitReady(ctx); err != nil {
		return nil, err
	}
	if _, err := os.Stat(req.Netns); err != nil {
		return nil, types.NewError(types.ErrInvalidNetNS, "pod network namespace", err.Error())
	}
	if req.Pod.Namespace == "" || req.Pod.Name == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "no pod in CNI_ARGS", "")
	}
	pod, err := a.getPod(ctx, req.Pod)
	if err != nil {
		return nil, err
	}
	st.step("pod")
	if err := a.onThisNode(pod); err != nil {
		return nil, err
	}
	if pod.Spec.HostNetwork {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "pod uses the host network", req.Pod.Namespace+"/"+req.Pod.Name)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cleaned.Load() {
		return nil, types.NewError(types.ErrInternal, "nodemesh was removed from this node (uninstall)", "")
	}
	if a.cfg.CNIMode == CNIChained {
		return a.addChained(ctx, req, pod, start)
	}
	key := recordKey(req.ContainerID, req.IfName)
	if r, ok := a.endpoints[key]; ok && !r.gone && r.Netns == req.Netns {
		// A repeated ADD: answer from what is there if it is intact.
		if err := a.checkLocked(r); err == nil {
			return a.result(r), nil
		}
	}
	if r, ok := a.endpoints[key]; ok {
		a.teardownLocked(r)
	}

	r := &endpointRecord{ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns,
		Namespace: req.Pod.Namespace, Name: req.Pod.Name, HostIfName: HostVethName(req.ContainerID, req.IfName)}
	podFacts(r, pod)
	ip, err := a.ipam.Allocate(ipam.Owner{ContainerID: req.ContainerID, IfName: req.IfName, Namespace: r.Namespace, Name: r.Name})
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "allocate pod address", err.Error())
	}
	st.step("ipam")
	r.IP = ip
	fail := func(err error) (*types100.Result, error) {
		a.teardownLocked(r)
		if _, _, rerr := a.ipam.Release(req.ContainerID, req.IfName); rerr != nil {
			a.log.Error("release address after failed ADD", "error", rerr)
		}
		_ = a.syncPolicy()
		return nil, err
	}
	if err := a.refreshRecord(ctx, r); err != nil {
		return fail(types.NewError(types.ErrTryAgainLater, "allocate identity", err.Error()))
	}
	st.step("identity")
	pl := &podLink{hostName: r.HostIfName, podIfName: req.IfName, podAddr: ip, gateway: a.ipam.Gateway(),
		netnsPath: req.Netns, mtu: a.cfg.MTU, ipv6Off: a.sysctls.disableIPv6, nodeNetns: a.cfg.NodeNetns}
	if err := createVeth(a.node, pl); err != nil {
		return fail(types.NewError(types.ErrInternal, "create pod interface", err.Error()))
	}
	st.step("veth")
	r.HostIfindex = pl.hostIndex
	if r.NetnsCookie, err = bpf.NetnsCookie(req.Netns); err != nil {
		return fail(types.NewError(types.ErrInvalidNetNS, "netns cookie", err.Error()))
	}
	st.step("cookie")
	a.endpoints[key] = r
	if err := a.records.save(r); err != nil {
		return fail(err)
	}
	st.step("record")
	// Maps first (the programs drop everything of an interface without an
	// endpoint entry), then programs, then the link goes up.
	if err := a.syncPolicy(); err != nil {
		return fail(fmt.Errorf("write policy: %w", err))
	}
	st.step("policy")
	if err := a.syncRedirect(); err != nil {
		return fail(fmt.Errorf("write redirection: %w", err))
	}
	st.step("redirect")
	a.removePins(r.HostIfName) // a new veth: any pin of that name is stale
	if err := a.attachClsBPF(r); err != nil {
		return fail(types.NewError(types.ErrInternal, "attach policy programs", err.Error()))
	}
	st.step("attach")
	if err := upHost(a.node, pl); err != nil {
		return fail(types.NewError(types.ErrInternal, "configure host interface", err.Error()))
	}
	st.step("up")
	a.upgrades.queue(key)
	a.metrics.cniAddSeconds.Observe(time.Since(start).Seconds())
	a.log.Info("pod added", "pod", r.Namespace+"/"+r.Name, "ip", r.IP, "identity", r.Identity, "veth", r.HostIfName,
		"redirected", a.redirected(r), "took", time.Since(start), "steps", st.String())
	return a.result(r), nil
}

func (a *Agent) result(r *endpointRecord) *types100.Result {
	gw := a.ipam.Gateway()
	res := &types100.Result{
		CNIVersion: "1.0.0",
		Interfaces: []*types100.Interface{{Name: r.HostIfName}, {Name: r.IfName, Sandbox: r.Netns}},
		IPs:        []*types100.IPConfig{{Interface: types100.Int(1), Address: *prefix32(r.IP), Gateway: gw.AsSlice()}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw.AsSlice()}},
	}
	if l, err := a.node.LinkByIndex(r.HostIfindex); err == nil {
		res.Interfaces[0].Mac = l.Attrs().HardwareAddr.String()
	}
	if h, err := netlinkAt(r.Netns); err == nil {
		if l, err := h.LinkByName(r.IfName); err == nil {
			res.Interfaces[1].Mac = l.Attrs().HardwareAddr.String()
		}
		h.Delete()
	}
	return res
}

// teardownLocked removes everything of a record except its address lease:
// veth (with the pod side, its addresses and routes), pins, endpoint and
// identity entries, opt-in, record file. Errors are logged: teardown goes as
// far as it can.
func (a *Agent) teardownLocked(r *endpointRecord) {
	if r.Chained {
		// The veth is the previous plugin's (its DEL deletes it): only
		// the programs come off it.
		if r.HostIfindex != 0 {
			if err := inNetns(a.cfg.NodeNetns, func() error {
				_, err := bpf.RemoveClsBPFFilters(r.HostIfindex)
				return err
			}); err != nil {
				a.log.Debug("remove cls_bpf filters", "veth", r.HostIfName, "error", err)
			}
		}
	} else if err := deleteVeth(a.node, r.HostIfName); err != nil {
		a.log.Error("delete veth", "veth", r.HostIfName, "error", err)
	}
	a.removePins(r.HostIfName)
	if r.HostIfindex != 0 {
		if err := a.pol.DeleteEndpoint(r.HostIfindex); err != nil {
			a.log.Error("delete endpoint entry", "error", err)
		}
	}
	if r.IP.IsValid() {
		if err := a.pol.DeleteIdentity(netipPrefix32(r)); err != nil {
			a.log.Error("delete identity entry", "error", err)
		}
	}
	if r.IP.IsValid() {
		if err := a.pol.DeleteLocalEndpoint(r.IP.As4()); err != nil {
			a.log.Error("delete local endpoint entry", "error", err)
		}
	}
	if r.NetnsCookie != 0 {
		if err := a.red.OptOut(r.NetnsCookie); err != nil {
			a.log.Error("opt out", "error", err)
		}
	}
	if err := a.records.remove(r); err != nil {
		a.log.Error("remove record", "error", err)
	}
	delete(a.endpoints, r.key())
	a.upgrades.drop(r.key())
}

// Del removes everything ADD created. It succeeds when there is nothing to
// remove, also for containers the agent never saw.
func (a *Agent) Del(ctx context.Context, req *cni.Request) (err error) {
	defer func() { a.countCNI(cni.CommandDel, err) }()
	defer a.upgrades.cniCall()()
	if err := a.waitReady(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cleaned.Load() {
		return nil // the datapath is gone; the veth goes with the pod's netns
	}
	r, ok := a.endpoints[recordKey(req.ContainerID, req.IfName)]
	if !ok {
		r = &endpointRecord{ContainerID: req.ContainerID, IfName: req.IfName, HostIfName: HostVethName(req.ContainerID, req.IfName),
			Chained: a.cfg.CNIMode == CNIChained}
	}
	a.teardownLocked(r)
	if _, _, err := a.ipam.Release(req.ContainerID, req.IfName); err != nil {
		return types.NewError(types.ErrIOFailure, "release pod address", err.Error())
	}
	// Policy entries of an identity no local pod has any more go now.
	if err := a.syncPolicy(); err != nil {
		a.log.Error("sync after DEL", "error", err)
	}
	if ok {
		a.log.Info("pod deleted", "pod", r.Namespace+"/"+r.Name, "ip", r.IP, "veth", r.HostIfName)
	}
	return nil
}

// Check verifies that a pod's network and datapath state are intact.
func (a *Agent) Check(ctx context.Context, req *cni.Request) (err error) {
	defer func() { a.countCNI(cni.CommandCheck, err) }()
	defer a.upgrades.cniCall()()
	if err := a.waitReady(ctx); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cleaned.Load() {
		return types.NewError(types.ErrInternal, "nodemesh was removed from this node (uninstall)", "")
	}
	r, ok := a.endpoints[recordKey(req.ContainerID, req.IfName)]
	if !ok || r.gone {
		return types.NewError(types.ErrUnknownContainer, "the nodemesh agent has no such pod interface", req.ContainerID+"/"+req.IfName)
	}
	if err := a.checkLocked(r); err != nil {
		return types.NewError(types.ErrInternal, "pod network is not intact", err.Error())
	}
	return nil
}

func (a *Agent) checkLocked(r *endpointRecord) error {
	if !r.Chained {
		ip, ok, err := a.ipam.Lookup(r.ContainerID, r.IfName)
		if err != nil {
			return err
		}
		if !ok || ip != r.IP {
			return fmt.Errorf("address lease of %s is %v, want %s", r.key(), ip, r.IP)
		}
	}
	pl := &podLink{hostName: r.HostIfName, hostIndex: r.HostIfindex, podIfName: r.IfName, podAddr: r.IP, netnsPath: r.Netns}
	if err := checkVeth(a.node, pl); err != nil {
		return err
	}
	ep, err := a.pol.Endpoint(r.HostIfindex)
	if err != nil {
		return err
	}
	// Its entries are under its identity or its own endpoint key.
	if ep.IP != r.IP.As4() || ep.Identity != r.Identity && ep.Identity != bpf.EndpointKey(r.HostIfindex) {
		return fmt.Errorf("endpoint entry of ifindex %d is %+v, want ip %s identity %d or endpoint key %#x", r.HostIfindex, ep, r.IP,
			r.Identity, bpf.EndpointKey(r.HostIfindex))
	}
	return a.checkAttached(r)
}

// stepTimer records how long each step of a CNI call took, for its log
// line ("pod=1ms ipam=3ms …"): what an operator needs when ADD is slow.
type stepTimer struct {
	last  time.Time
	steps []string
}

func (s *stepTimer) step(name string) {
	now := time.Now()
	s.steps = append(s.steps, name+"="+now.Sub(s.last).Round(10*time.Microsecond).String())
	s.last = now
}

func (s *stepTimer) String() string { return strings.Join(s.steps, " ") }

//go:build linux

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodemesh/nodemesh/agent/cni"
	"github.com/nodemesh/nodemesh/bpf"
)

// CNI modes (docs/design/datapath.md, "CNI modes").
const (
	// CNIStandalone: nodemesh is the node's CNI. The agent writes its own
	// conflist, which sorts first; ADD creates the pod's veth, address and
	// routes.
	CNIStandalone = "standalone"
	// CNIChained: another CNI (the first conflist of the conf dir) creates
	// the pod's interface; the agent appends nodemesh-cni to that conflist,
	// and ADD takes the pod's address and interface from prevResult,
	// attaches the policy programs to the host end of the pod's veth and
	// registers the endpoint, as Istio's CNI plugin and Cilium's chaining
	// mode do.
	CNIChained = "chained"
)

// chainCheckPeriod is how often the agent checks that nodemesh-cni is
// still in the primary conflist.
const chainCheckPeriod = 2 * time.Second

// CNIModes are the accepted --cni-mode values.
var CNIModes = []string{CNIStandalone, CNIChained}

// addChained is ADD in chained mode, with the agent's lock held: the
// previous plugin made the pod's interface and gave it its address.
func (a *Agent) addChained(ctx context.Context, req *cni.Request, pod *corev1.Pod, start time.Time) (*types100.Result, error) {
	prev, err := chainedPrevResult(req.Config)
	if err != nil {
		return nil, err
	}
	ip, err := podAddress(prev, req.IfName, req.Netns)
	if err != nil {
		return nil, err
	}
	hostIndex, hostName, err := hostPeer(a.node, a.cfg.NodeNetns, req.Netns, req.IfName)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "chained mode: the pod's interface", err.Error())
	}
	key := recordKey(req.ContainerID, req.IfName)
	if r, ok := a.endpoints[key]; ok {
		a.teardownLocked(r) // a repeated ADD: registered again
	}
	r := &endpointRecord{ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns, Namespace: req.Pod.Namespace,
		Name: req.Pod.Name, HostIfName: hostName, HostIfindex: hostIndex, IP: ip, Chained: true}
	podFacts(r, pod)
	fail := func(err error) (*types100.Result, error) {
		a.teardownLocked(r)
		_ = a.syncPolicy()
		return nil, err
	}
	if err := a.refreshRecord(ctx, r); err != nil {
		return fail(types.NewError(types.ErrTryAgainLater, "allocate identity", err.Error()))
	}
	if r.NetnsCookie, err = bpf.NetnsCookie(req.Netns); err != nil {
		return fail(types.NewError(types.ErrInvalidNetNS, "netns cookie", err.Error()))
	}
	a.endpoints[key] = r
	if err := a.records.save(r); err != nil {
		return fail(err)
	}
	if err := a.syncPolicy(); err != nil {
		return fail(fmt.Errorf("write policy: %w", err))
	}
	if err := a.syncRedirect(); err != nil {
		return fail(fmt.Errorf("write redirection: %w", err))
	}
	a.removePins(r.HostIfName)
	if err := a.attachClsBPF(r); err != nil {
		return fail(types.NewError(types.ErrInternal, "attach policy programs", err.Error()))
	}
	if err := a.podIPv6Off(r.HostIfName, r.Netns, r.IfName); err != nil {
		return fail(types.NewError(types.ErrInternal, "turn IPv6 off on the pod's veth (it is not policed)", err.Error()))
	}
	a.upgrades.queue(key)
	a.metrics.cniAddSeconds.Observe(time.Since(start).Seconds())
	a.log.Info("pod added (chained)", "pod", r.Namespace+"/"+r.Name, "ip", r.IP, "identity", r.Identity, "veth", r.HostIfName,
		"redirected", a.redirected(r), "took", time.Since(start))
	return prev, nil
}

// chainedPrevResult is the previous plugin's result from the network
// configuration the runtime passed.
func chainedPrevResult(config []byte) (*types100.Result, error) {
	conf, cerr := cni.ParseConfig(config)
	if cerr != nil {
		return nil, cerr
	}
	if conf.PrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "chained mode: no prevResult",
			"nodemesh-cni must come after the plugin that creates the pod's interface in the conflist")
	}
	prev, err := types100.GetResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "chained mode: prevResult", err.Error())
	}
	return prev, nil
}

// podAddress is the pod interface's IPv4 address in prevResult: one whose
// interface is ifName in the pod's netns (or that names no interface).
// Exactly one is accepted: two would need two identities' anti-spoofing.
func podAddress(prev *types100.Result, ifName, netns string) (netip.Addr, error) {
	var found []netip.Addr
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(prev.Interfaces) || prev.Interfaces[i].Name != ifName || prev.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok && ipc.Address.IP.To4() != nil {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return netip.Addr{}, types.NewError(types.ErrInvalidNetworkConfig, "chained mode: prevResult has no IPv4 address for "+ifName, netns)
	default:
		return netip.Addr{}, types.NewError(types.ErrInvalidNetworkConfig, "chained mode: prevResult has several IPv4 addresses for "+ifName,
			fmt.Sprint(found))
	}
}

// hostPeer finds the node's end of the pod's veth: the pod side's peer
// index, checked from the node side too (an index alone names a device
// only within one namespace).
func hostPeer(node *netlink.Handle, nodeNetns, netnsPath, ifName string) (int, string, error) {
	h, err := netlinkAt(netnsPath)
	if err != nil {
		return 0, "", err
	}
	defer h.Delete()
	podLink, err := h.LinkByName(ifName)
	if err != nil {
		return 0, "", fmt.Errorf("%s in the pod: %w", ifName, err)
	}
	veth, ok := podLink.(*netlink.Veth)
	if !ok {
		return 0, "", fmt.Errorf("%s in the pod is a %s, not a veth: nodemesh polices veths", ifName, podLink.Type())
	}
	var peer int
	if err := inNetns(netnsPath, func() error {
		var err error
		peer, err = netlink.VethPeerIndex(veth)
		return err
	}); err != nil {
		return 0, "", fmt.Errorf("peer of %s: %w", ifName, err)
	}
	host, err := node.LinkByIndex(peer)
	if err != nil {
		return 0, "", fmt.Errorf("the peer of %s (ifindex %d) is not in the node's namespace: %w", ifName, peer, err)
	}
	hv, ok := host.(*netlink.Veth)
	if !ok {
		return 0, "", fmt.Errorf("ifindex %d of the node is not the pod's veth", peer)
	}
	var back int
	err = inNetns(nodeNetns, func() error {
		var err error
		back, err = netlink.VethPeerIndex(hv)
		return err
	})
	if err == nil && back != podLink.Attrs().Index {
		err = fmt.Errorf("ifindex %d of the node is another veth", peer)
	}
	if err != nil {
		return 0, "", err
	}
	return peer, host.Attrs().Name, nil
}

// chainedEntry is nodemesh's entry in another CNI's conflist.
func chainedEntry(socket string) map[string]any {
	return map[string]any{"type": cni.PluginType, "agentSocket": socket}
}

// primaryConfList is the conflist the runtime uses: the first
// configuration file of dir in lexical order, other than nodemesh's own.
// A single-plugin .conf cannot be chained onto.
func primaryConfList(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == CNIConfFile || strings.HasPrefix(n, ".") || slices.Contains(legacyCNIConfFiles, n) {
			continue
		}
		if ext := filepath.Ext(n); ext == ".conflist" || ext == ".conf" || ext == ".json" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "", errors.New("no CNI configuration to chain onto yet (chained mode: the primary CNI writes one)")
	}
	if filepath.Ext(names[0]) != ".conflist" {
		return "", fmt.Errorf("%s is a single-plugin configuration: chained mode needs the primary CNI to write a .conflist", names[0])
	}
	return filepath.Join(dir, names[0]), nil
}

// chainInto appends nodemesh's entry to the conflist at path (or updates
// its socket), atomically; it reports whether it changed the file.
func chainInto(path, socket string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	plugins, ok := list["plugins"].([]any)
	if !ok || len(plugins) == 0 {
		return false, fmt.Errorf("%s has no plugins", path)
	}
	want := chainedEntry(socket)
	var kept []any
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok && m["type"] == cni.PluginType {
			continue
		}
		kept = append(kept, p)
	}
	// Last: after the plugins that make and configure the interface.
	kept = append(kept, want)
	if equalJSON(kept, plugins) {
		return false, nil
	}
	list["plugins"] = kept
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return false, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return true, writeFileAtomic(path, out, st.Mode().Perm())
}

// unchain removes nodemesh's entries from every conflist of dir; it
// returns the files it changed.
func unchain(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var changed []string
	var errs []error
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".conflist" || e.Name() == CNIConfFile {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var list map[string]any
		if json.Unmarshal(data, &list) != nil {
			continue // not ours to judge
		}
		plugins, _ := list["plugins"].([]any)
		var kept []any
		for _, p := range plugins {
			if m, ok := p.(map[string]any); ok && m["type"] == cni.PluginType {
				continue
			}
			kept = append(kept, p)
		}
		if len(kept) == len(plugins) {
			continue
		}
		list["plugins"] = kept
		out, err := json.MarshalIndent(list, "", "  ")
		if err == nil {
			var st os.FileInfo
			if st, err = os.Stat(path); err == nil {
				err = writeFileAtomic(path, out, st.Mode().Perm())
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove nodemesh from %s: %w", path, err))
			continue
		}
		changed = append(changed, path)
	}
	return changed, errors.Join(errs...)
}

func equalJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// keepChained keeps nodemesh in the primary conflist until ctx ends: the
// primary CNI may write its file again (at its own restart or upgrade),
// dropping the entry. Checked every period.
func (a *Agent) keepChained(ctx context.Context, period time.Duration) {
	var lastErr string
	for {
		path, err := primaryConfList(a.cfg.CNIConfDir)
		var changed bool
		if err == nil {
			changed, err = chainInto(path, a.cfg.CNISocket)
		}
		switch {
		case err != nil && err.Error() != lastErr:
			a.log.Warn("cannot chain nodemesh-cni into the primary CNI configuration; pods set up meanwhile get no policy", "error", err)
			lastErr = err.Error()
		case err == nil && changed:
			a.log.Info("nodemesh-cni chained into the primary CNI configuration", "file", path)
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
	}
}

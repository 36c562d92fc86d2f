//go:build linux

package agent

import (
	"fmt"
	"net/netip"

	"github.com/nodemesh/nodemesh/agent/lbsync"
	"github.com/nodemesh/nodemesh/bpf"
)

// syncSocketLB writes the socket load balancing maps from the Services and
// EndpointSlices (agent/lbsync: the ordered plan writes a backend before
// the slot that names it and deletes it after). Disabled, the wanted
// content is empty, so maps left by an agent that had it enabled are
// emptied and connections to Services are left to kube-proxy.
func (a *Agent) syncSocketLB() error {
	want := lbsync.Want{}
	var diags []lbsync.Diagnostic
	if !a.cfg.DisableSocketLB {
		svcs, err := a.informers.services.List(everything())
		if err != nil {
			return err
		}
		slices, err := a.informers.slices.List(everything())
		if err != nil {
			return err
		}
		in := lbsync.Input{Services: svcs, Slices: slices, NodeName: a.cfg.NodeName,
			NodeIPs: append([]netip.Addr{a.ipam.Gateway()}, a.cfg.NodeIPs...)}
		want, diags = lbsync.Frontends(in)
		var fit []lbsync.Diagnostic
		want, fit = lbsync.Fit(want, bpf.MaxLBServiceEntries, bpf.MaxLBBackends)
		diags = append(diags, fit...)
	}
	a.reportLB(diags)
	have, err := lbsync.Read(a.red)
	if err != nil {
		return err
	}
	plan := lbsync.NewPlan(have, want)
	if err := lbsync.Apply(a.red, plan); err != nil {
		return fmt.Errorf("write the socket load balancing maps: %w", err)
	}
	if len(plan.Ops) > 0 {
		a.log.Debug("socket load balancing maps updated", "writes", len(plan.Ops), "frontends", len(want))
	}
	a.metrics.lbFrontends.Set(float64(len(want)))
	return nil
}

// reportLB logs each diagnostic once, while it lasts.
func (a *Agent) reportLB(diags []lbsync.Diagnostic) {
	now := map[string]bool{}
	for _, d := range diags {
		s := d.String()
		now[s] = true
		if !a.lastLBDiags[s] {
			a.log.Warn("service not load balanced as asked", "diagnostic", s)
		}
	}
	a.lastLBDiags = now
	a.metrics.lbDiagnostics.Set(float64(len(now)))
}

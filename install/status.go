package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/debugclient"
)

// Status is what 'nodemesh status' reports; its JSON is the -o json output.
type Status struct {
	Healthy bool `json:"healthy"`
	// Problems say why it is not healthy, one per line.
	Problems   []string       `json:"problems"`
	Release    *ReleaseStatus `json:"release"`
	Components []Component    `json:"components"`
	Nodes      []NodeStatus   `json:"nodes"`
	// XDS are the clients connected to the controller (node Envoys and
	// proxyless gRPC clients), as its /debug/nodes reports them.
	XDS      []XDSClient `json:"xdsClients"`
	XDSError string      `json:"xdsError,omitempty"`
	// OptedIn are the namespaces labelled istio.io/dataplane-mode=nodemesh.
	OptedIn []string `json:"optedInNamespaces"`
}

// ReleaseStatus is the Helm release.
type ReleaseStatus struct {
	Name       string    `json:"name"`
	Namespace  string    `json:"namespace"`
	Revision   int       `json:"revision"`
	Chart      string    `json:"chart"`
	AppVersion string    `json:"appVersion"`
	Status     string    `json:"status"`
	Updated    time.Time `json:"updated"`
}

// NodeStatus is one node: its agent, its Envoy and the Envoy's xDS stream.
type NodeStatus struct {
	Node  string `json:"node"`
	Agent string `json:"agent"`
	Envoy string `json:"envoy"`
	XDS   string `json:"xds"`
}

// XDSClient is an entry of the controller's /debug/nodes.
type XDSClient struct {
	Node      string            `json:"node"`
	Kind      string            `json:"kind"`
	Connected bool              `json:"connected"`
	Acked     map[string]string `json:"acked"`
	Rejected  map[string]string `json:"rejected"`
}

// Status reads the release, the components, each node's agent and Envoy,
// the controller's xDS clients (through the API server's service proxy)
// and the opted-in namespaces. Errors reading one part become problems;
// only ErrNotInstalled-free failures to talk to the API are returned.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	s := &Status{Problems: []string{}, Nodes: []NodeStatus{}, XDS: []XDSClient{}, OptedIn: []string{}}
	rel, err := c.Current()
	switch {
	case errors.Is(err, ErrNotInstalled):
		s.Problems = append(s.Problems, err.Error())
	case err != nil:
		return nil, err
	default:
		s.Release = &ReleaseStatus{Name: rel.Name, Namespace: rel.Namespace, Revision: rel.Version,
			Chart: rel.Chart.Metadata.Name + "-" + rel.Chart.Metadata.Version, AppVersion: rel.Chart.Metadata.AppVersion,
			Status: string(rel.Info.Status), Updated: rel.Info.LastDeployed.Time}
		if rel.Info.Status != "deployed" {
			s.Problems = append(s.Problems, fmt.Sprintf("release %s is %s", rel.Name, rel.Info.Status))
		}
	}
	if s.Components, err = c.Components(ctx); err != nil {
		return nil, err
	}
	for _, comp := range s.Components {
		if !comp.IsReady() {
			s.Problems = append(s.Problems, comp.Line())
		}
	}
	if s.Release != nil {
		if s.XDS, err = c.xdsClients(ctx); err != nil {
			s.XDSError = err.Error()
			s.Problems = append(s.Problems, "controller: "+err.Error())
		}
	}
	if err := c.nodeStates(ctx, s); err != nil {
		return nil, err
	}
	nss, err := c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: api.DataplaneModeLabel + "=" + api.DataplaneModeNodemesh})
	if err != nil {
		return nil, fmt.Errorf("list opted-in namespaces: %w", err)
	}
	for _, ns := range nss.Items {
		s.OptedIn = append(s.OptedIn, ns.Name)
	}
	sort.Strings(s.OptedIn)
	s.Healthy = len(s.Problems) == 0
	return s, nil
}

// nodeStates fills in one row per node with an agent or Envoy pod, or
// that their DaemonSets should cover.
func (c *Client) nodeStates(ctx context.Context, s *Status) error {
	rows := map[string]*NodeStatus{}
	row := func(n string) *NodeStatus {
		if rows[n] == nil {
			rows[n] = &NodeStatus{Node: n, Agent: "missing", Envoy: "missing", XDS: "not connected"}
		}
		return rows[n]
	}
	for _, comp := range []string{api.AgentName, api.EnvoyName} {
		pods, err := c.podStates(ctx, comp)
		if err != nil {
			return err
		}
		for _, p := range pods {
			if p.Node == "" {
				continue
			}
			state := "ready"
			if !p.Ready {
				state = p.Reason
			}
			if comp == api.AgentName {
				row(p.Node).Agent = state
			} else {
				row(p.Node).Envoy = state
			}
		}
	}
	for _, x := range s.XDS {
		if x.Kind != "" && x.Kind != "envoy" {
			continue // proxyless gRPC clients are not nodes
		}
		r, ok := rows[x.Node]
		if !ok {
			continue
		}
		switch {
		case len(x.Rejected) > 0:
			r.XDS = "rejected " + strings.Join(sortedKeys(x.Rejected), ", ")
		case x.Connected:
			r.XDS = "connected"
		}
	}
	noProxy, standIn := false, c.NodeProxy() == NodeProxyStandIn
	for _, comp := range s.Components {
		noProxy = noProxy || comp.Name == api.EnvoyName && comp.Disabled
	}
	for _, r := range rows {
		switch {
		case noProxy:
			r.Envoy, r.XDS = "disabled", "none (no node proxy)"
		case standIn:
			// The stand-in takes no xDS: L4 only, said on every row.
			r.Envoy, r.XDS = r.Envoy+" (L4 stand-in)", "none (stand-in takes no xDS)"
		}
		s.Nodes = append(s.Nodes, *r)
		proxyOK := noProxy || standIn && strings.HasPrefix(r.Envoy, "ready") || r.Envoy == "ready" && r.XDS == "connected"
		if r.Agent != "ready" || !proxyOK {
			s.Problems = append(s.Problems, fmt.Sprintf("node %s: agent %s, envoy %s, xDS %s", r.Node, r.Agent, r.Envoy, r.XDS))
		}
	}
	sort.Slice(s.Nodes, func(i, j int) bool { return s.Nodes[i].Node < s.Nodes[j].Node })
	sort.Strings(s.Problems)
	return nil
}

// xdsClients reads the controller's /debug/nodes through the API server's
// service proxy, with a token of the debug ServiceAccount (the caller needs
// the nodemesh-debug-client Role: services/proxy and that account's
// tokens).
func (c *Client) xdsClients(ctx context.Context) ([]XDSClient, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dc := &debugclient.Client{Kube: c.Kube, Namespace: c.Namespace, Service: api.ControllerName, Port: api.MonitoringPort}
	body, err := dc.Get(ctx, "debug/nodes", nil)
	if err != nil {
		return []XDSClient{}, fmt.Errorf("cannot read /debug/nodes through the service proxy: %v", err)
	}
	var out []XDSClient
	if err := json.Unmarshal(body, &out); err != nil {
		return []XDSClient{}, fmt.Errorf("/debug/nodes: %w", err)
	}
	if out == nil {
		out = []XDSClient{}
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k[strings.LastIndex(k, ".")+1:])
	}
	sort.Strings(out)
	return out
}

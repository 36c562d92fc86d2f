package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/authz"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// AuthzCheck is what 'nodemesh authz check' reports for one pod: the
// AuthorizationPolicies that apply to its inbound traffic, in Istio's
// evaluation order, and where each rule is enforced. JSON is a stable
// contract (fields may be added).
type AuthzCheck struct {
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	Node      string `json:"node,omitempty"`
	// EnforcedBy is who authorizes the pod's inbound requests: "nodemesh"
	// (an opted-in namespace, no sidecar), "sidecar" (the pod has Istio's
	// proxy: nodemesh leaves its authorization to it) or "none" (outside
	// the mesh: Istio authorizes no request to it).
	EnforcedBy string `json:"enforcedBy"`
	// Isolated: an ALLOW policy applies, so only what an ALLOW rule
	// admits passes (after the DENY rules).
	Isolated bool           `json:"isolated"`
	Policies []AuthzPolicy  `json:"policies"`
	Problems ir.Diagnostics `json:"problems,omitempty"`
	// PeerAuthentication is the pod's effective mutual TLS mode per port
	// (Istio checks it before authorization).
	PeerAuthentication PeerAuthnCheck `json:"peerAuthentication"`
	// CapturedPorts are the pod's ports the agent captures into its node
	// Envoy's inbound listener (HTTP ports under a policy with request
	// facts or a RequestAuthentication), where the Envoy's RBAC enforces
	// every rule; elsewhere rules run in eBPF.
	CapturedPorts []uint32 `json:"capturedPorts,omitempty"`
}

// PeerAuthnCheck is a pod's effective PeerAuthentication with istiod's
// precedence (workload > namespace > mesh, the oldest of a level).
type PeerAuthnCheck struct {
	// Default is the mode of every port not listed in Ports.
	Default PeerAuthnMode `json:"default"`
	// Ports are the ports a workload-level policy sets apart and the
	// pod's named container ports.
	Ports []PeerAuthnMode `json:"ports,omitempty"`
	// EnforcedAt says who enforces STRICT for this pod, and how.
	EnforcedAt string `json:"enforcedAt"`
}

// PeerAuthnMode is one effective mode and the policy that decided it.
type PeerAuthnMode struct {
	Port uint32 `json:"port,omitempty"`
	// Name is the container port's name, when it has one.
	Name string `json:"name,omitempty"`
	// Mode is STRICT, PERMISSIVE or DISABLE.
	Mode string `json:"mode"`
	// Level is default (no policy), mesh, namespace, workload or port.
	Level  string `json:"level"`
	Policy string `json:"policy,omitempty"`
}

func peerAuthnMode(port uint32, name string, s authz.PeerAuthnSetting) PeerAuthnMode {
	m := PeerAuthnMode{Port: port, Name: name, Mode: string(s.Mode), Level: string(s.Level)}
	if s.From.Name != "" {
		m.Policy = s.From.Namespace + "/" + s.From.Name
	}
	return m
}

// peerAuthnCheck is a pod's effective peer authentication.
func peerAuthnCheck(pod *input.Pod, pas *authz.PeerAuthentications, enforcedBy string) PeerAuthnCheck {
	eff := pas.For(pod.Namespace, pod.Labels)
	out := PeerAuthnCheck{Default: peerAuthnMode(0, "", eff.Workload)}
	names := map[uint32]string{}
	for _, p := range pod.Ports {
		names[uint32(p.Port)] = p.Name
	}
	ports := eff.SortedPorts()
	for p := range names {
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	slices.Sort(ports)
	for _, p := range ports {
		out.Ports = append(out.Ports, peerAuthnMode(p, names[p], eff.Port(p)))
	}
	switch enforcedBy {
	case "nodemesh":
		out.EnforcedAt = "eBPF at the pod's veth: a STRICT port refuses every peer that is not a pod of the cluster (attested identity, no mTLS on the wire); PERMISSIVE and DISABLE add nothing"
	case "sidecar":
		out.EnforcedAt = "the pod's sidecar (Istio mTLS)"
	default:
		out.EnforcedAt = "nowhere: the pod is not in the mesh"
	}
	return out
}

// AuthzPolicy is one applying policy.
type AuthzPolicy struct {
	Name      string      `json:"name"`
	Namespace string      `json:"namespace"`
	Action    string      `json:"action"`
	DryRun    bool        `json:"dryRun,omitempty"`
	Rules     []AuthzRule `json:"rules"`
}

// AuthzRule is one rule and where it runs.
type AuthzRule struct {
	Field string `json:"field"`
	// Layer is L4 (peer identity, namespace, address, port) or L7
	// (request facts: method, path, host, headers, JWT).
	Layer ir.PolicyLayer `json:"layer"`
	// EnforcedAt says which back end decides it, and what it does.
	EnforcedAt string `json:"enforcedAt"`
	// DeniesMore lists what the back end cannot evaluate exactly and how
	// it errs towards denying.
	DeniesMore []string `json:"deniesMore,omitempty"`
}

// actionOrder is Istio's evaluation order: CUSTOM, DENY, ALLOW (AUDIT
// decides nothing).
func actionOrder(p *ir.Policy) int {
	switch {
	case p.Custom != "":
		return 0
	case p.Action == ir.PolicyDeny:
		return 1
	case p.Action == ir.PolicyAllow:
		return 2
	}
	return 3
}

// authzCheck works out a pod's AuthzCheck from an inventory's objects.
func authzCheck(bag *input.Bag, pols []ir.Policy, authn []ir.PolicyScope, diags ir.Diagnostics, pas *authz.PeerAuthentications, ns, name string) (*AuthzCheck, error) {
	var pod *input.Pod
	for _, p := range bag.Pods {
		if p.Namespace == ns && p.Name == name {
			pod = p
		}
	}
	if pod == nil {
		return nil, fmt.Errorf("pod %s/%s not found", ns, name)
	}
	out := &AuthzCheck{Pod: name, Namespace: ns, Node: pod.NodeName, Policies: []AuthzPolicy{}, EnforcedBy: "none"}
	var nsLabels map[string]string
	for _, n := range bag.Namespaces {
		if n.Name == ns {
			nsLabels = n.Labels
		}
	}
	out.EnforcedBy = string(translate.AuthorizerOf(pod, nsLabels))
	out.PeerAuthentication = peerAuthnCheck(pod, pas, out.EnforcedBy)
	for _, d := range pas.Diagnostics {
		if d.Resource.Namespace == ns || d.Resource.Namespace == pas.RootNamespace() {
			out.Problems = append(out.Problems, d)
		}
	}
	var mine []*ir.Policy
	for i := range pols {
		if pols[i].Gate == ir.GateAuthorization && translate.AppliesTo(&pols[i], pod, bag.Services) {
			mine = append(mine, &pols[i])
		}
	}
	slices.SortStableFunc(mine, func(a, b *ir.Policy) int {
		if d := actionOrder(a) - actionOrder(b); d != 0 {
			return d
		}
		return strings.Compare(a.Source.Namespace+"/"+a.Source.Name, b.Source.Namespace+"/"+b.Source.Name)
	})
	where := "eBPF at the pod's veth"
	if pod.NodeName != "" {
		where += " on node " + pod.NodeName
	}
	switch out.EnforcedBy {
	case "sidecar":
		where = "the pod's sidecar (nodemesh leaves it to Istio until the pod moves)"
	case "none":
		where = "nowhere: the pod is not in the mesh (its namespace is not labelled " + api.DataplaneModeLabel + "=" + api.DataplaneModeNodemesh + ")"
	}
	// The pod's captured ports: the controller's and the agent's decision.
	var captured []string
	if out.EnforcedBy == "nodemesh" {
		// (Capture.Ports, not CapturedPorts: a pod read from manifests has
		// no address yet, and the question is which ports would be.)
		for _, cp := range translate.NewCapture(pols, bag.Services).WithAuthn(authn, bag.Services).Ports(translate.Workload(pod), nsLabels) {
			out.CapturedPorts = append(out.CapturedPorts, cp.Port)
			captured = append(captured, strconv.FormatUint(uint64(cp.Port), 10))
		}
	}
	envoyAt := "the node Envoy's inbound RBAC"
	if pod.NodeName != "" {
		envoyAt += " on node " + pod.NodeName
	}
	envoyAt += " for port(s) " + strings.Join(captured, ", ") + " (captured into it)"
	for _, p := range mine {
		action := string(p.Action)
		if p.Custom != "" {
			action = "Custom (" + p.Custom + ": no external authorizer, enforced as Deny)"
		}
		if p.Action == ir.PolicyAllow && !p.DryRun {
			out.Isolated = true
		}
		ap := AuthzPolicy{Name: p.Source.Name, Namespace: p.Source.Namespace, Action: action, DryRun: p.DryRun, Rules: []AuthzRule{}}
		for _, d := range p.Degradations {
			out.Problems = append(out.Problems, d.Diagnostic)
		}
		for _, r := range translate.AuthzRules(p, translate.Authorizer(out.EnforcedBy)) {
			ar := AuthzRule{Field: r.Field, Layer: r.Layer}
			switch {
			case p.Action == ir.PolicyAudit:
				ar.EnforcedAt = "nowhere: AUDIT decides nothing, and nodemesh logs no audit records yet"
			case p.DryRun:
				ar.EnforcedAt = "nowhere: dry run (istio.io/dry-run)"
			case r.Projected && len(captured) > 0:
				// Request facts: the node Envoy on the captured (HTTP)
				// ports, the L4 projection — Istio's TCP behaviour — on
				// the others.
				ar.EnforcedAt = envoyAt + "; on other ports " + where + ", as its L4 projection (Istio's TCP semantics)"
			case r.Projected:
				// No port of the pod is declared HTTP by a Service: the
				// rule runs as its L4 projection, Istio's TCP behaviour.
				ar.EnforcedAt = where + ", as its L4 projection (Istio's TCP semantics: no Service declares a port of the pod HTTP, so none is captured into the node Envoy)"
			default:
				ar.EnforcedAt = where
			}
			for _, d := range r.DeniesMore {
				ar.DeniesMore = append(ar.DeniesMore, d.Message)
			}
			ap.Rules = append(ap.Rules, ar)
		}
		out.Policies = append(out.Policies, ap)
	}
	for _, d := range diags {
		if slices.ContainsFunc(mine, func(p *ir.Policy) bool { return p.Source == d.Resource }) {
			out.Problems = append(out.Problems, d)
		}
	}
	return out, nil
}

func writeAuthzCheck(w io.Writer, c *AuthzCheck, format string) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(c)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	node := c.Node
	if node == "" {
		node = "(not scheduled)"
	}
	fmt.Fprintf(w, "Pod %s/%s on %s, authorized by %s\n", c.Namespace, c.Pod, node, c.EnforcedBy)
	writePeerAuthn(w, c.PeerAuthentication)
	if len(c.CapturedPorts) > 0 {
		ports := make([]string, len(c.CapturedPorts))
		for i, p := range c.CapturedPorts {
			ports[i] = strconv.FormatUint(uint64(p), 10)
		}
		fmt.Fprintf(w, "Captured into the node Envoy's inbound listener (HTTP rules by its RBAC, JWTs by its jwt_authn): port(s) %s\n", strings.Join(ports, ", "))
	}
	switch {
	case len(c.Policies) == 0:
		fmt.Fprintln(w, "No AuthorizationPolicy applies: every request is allowed (as far as Istio authorization goes; NetworkPolicy and TrafficPolicy decide separately).")
		for _, d := range c.Problems {
			fmt.Fprintf(w, "⚠️  %s\n", d)
		}
		return nil
	case c.Isolated:
		fmt.Fprintln(w, "An ALLOW policy applies: a request passes only if no DENY rule matches it and an ALLOW rule does.")
	default:
		fmt.Fprintln(w, "No ALLOW policy applies: a request passes unless a DENY rule matches it.")
	}
	t := NewTable(w, "POLICY", "ACTION", "RULE", "LAYER", "ENFORCED AT")
	for _, p := range c.Policies {
		action := p.Action
		if p.DryRun {
			action += " (dry run)"
		}
		if len(p.Rules) == 0 {
			effect := "no rules: allows nothing by itself"
			if !strings.HasPrefix(p.Action, "Allow") {
				effect = "no rules: matches nothing"
			}
			t.Row(p.Namespace+"/"+p.Name, action, "-", "-", effect)
		}
		for _, r := range p.Rules {
			t.Row(p.Namespace+"/"+p.Name, action, r.Field, string(r.Layer), r.EnforcedAt)
		}
	}
	t.Flush()
	for _, p := range c.Policies {
		for _, r := range p.Rules {
			for _, d := range r.DeniesMore {
				fmt.Fprintf(w, "⚠️  %s/%s %s: %s\n", p.Namespace, p.Name, r.Field, d)
			}
		}
	}
	for _, d := range c.Problems {
		fmt.Fprintf(w, "⚠️  %s\n", d)
	}
	return nil
}

// writePeerAuthn is the table form of a pod's peer authentication.
func writePeerAuthn(w io.Writer, p PeerAuthnCheck) {
	desc := func(m PeerAuthnMode) string {
		if m.Policy == "" {
			return m.Mode + " (" + m.Level + ")"
		}
		return m.Mode + " (" + m.Level + ": " + m.Policy + ")"
	}
	fmt.Fprintf(w, "Peer authentication: %s by default", desc(p.Default))
	if len(p.Ports) == 0 {
		fmt.Fprintln(w, ".")
	} else {
		fmt.Fprintln(w, "; per port:")
		t := NewTable(w, "PORT", "NAME", "MODE")
		for _, m := range p.Ports {
			name := m.Name
			if name == "" {
				name = "-"
			}
			t.Row(fmt.Sprint(m.Port), name, desc(m))
		}
		t.Flush()
	}
	fmt.Fprintf(w, "Enforced by %s.\n", p.EnforcedAt)
}

type authzOptions struct {
	migrateOptions
	namespace    string
	trustDomain  string
	tdAliases    []string
	outputFormat string
}

func newAuthzCommand(streams IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "authz",
		Short: "Istio authorization as nodemesh enforces it",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAuthzCheckCommand(streams))
	return cmd
}

func newAuthzCheckCommand(streams IO) *cobra.Command {
	o := &authzOptions{}
	cmd := &cobra.Command{
		Use:   "check POD [-n NS] [-f PATH ... | --kubeconfig ...] [-o table|json|yaml]",
		Short: "Show a pod's effective PeerAuthentication and the AuthorizationPolicies that apply to it, in Istio's order, and where each is enforced",
		Long: `check lists, for one pod, the AuthorizationPolicies that apply to its inbound traffic
(mesh-wide ones from the root namespace, its namespace's, selector and targetRefs), in
Istio's evaluation order (CUSTOM, DENY, ALLOW; AUDIT decides nothing), and for every
rule where nodemesh enforces it: peer identity, namespace, address and port facts (L4)
in eBPF at the pod's veth on its node; request facts (L7: methods, paths, hosts,
headers, JWT) by the node Envoy's inbound RBAC on the pod's HTTP ports, which the agent
captures into it (listed as captured ports); on its other ports such a rule runs as its
L4 projection, Istio's TCP semantics — an ALLOW rule with a request fact matches
nothing, a DENY rule ignores its request facts — and check says what that denies more.
Before them, the pod's effective PeerAuthentication (Istio checks it first): the mTLS
mode of every port with istiod's precedence (workload > namespace > mesh, the oldest
of a level, UNSET inheriting), the policy that decides it, and who enforces it — for a
migrated pod, eBPF refuses every peer that is not a pod of the cluster on a STRICT port.
Like 'istioctl x authz check', from the cluster or from manifests (-f).

Exit status: 0 the pod was found; 1 it was not (or the cluster cannot be read); 2 wrong
flags.`,
		Example: `  nodemesh authz check productpage-v1-7d9c7b8f5-abcde -n bookinfo
  nodemesh authz check ratings-v1 -n bookinfo -f bookinfo.yaml -f policies.yaml -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(o.outputFormat); err != nil {
				return err
			}
			inv, err := o.inventory(cmd.Context(), streams)
			if err != nil {
				return err
			}
			ns := o.namespace
			if ns == "" {
				ns = "default"
				if len(o.files) == 0 {
					if n, _, err := o.kube.Loader().Namespace(); err == nil && n != "" {
						ns = n
					}
				}
			}
			pols, diags := istio.AuthorizationPolicies(inv.AuthorizationPolicies, istio.AuthzOptions{
				RootNamespace: o.rootNamespace, TrustDomain: o.trustDomain, TrustDomainAliases: o.tdAliases})
			pas := authz.NewPeerAuthentications(inv.PeerAuthentications, o.rootNamespace, nil)
			// RequestAuthentications capture a pod's HTTP ports too (their
			// JWT validation runs in the node Envoy): only their scopes
			// matter here.
			ras, _ := istio.RequestAuthentications(inv.RequestAuthentications, istio.AuthzOptions{
				RootNamespace: o.rootNamespace, TrustDomain: o.trustDomain, TrustDomainAliases: o.tdAliases})
			scopes := make([]ir.PolicyScope, len(ras))
			for i := range ras {
				scopes[i] = ras[i].Scope
			}
			c, err := authzCheck(inv.Bag, pols, scopes, diags, pas, ns, args[0])
			if err != nil {
				return &ExitError{Code: ExitFindings, Err: err}
			}
			return writeAuthzCheck(streams.Out, c, o.outputFormat)
		},
	}
	o.addInputFlags(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", "", "the pod's namespace (default: the kubeconfig context's, or default with -f)")
	f.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "the mesh's trust domain (meshConfig.trustDomain)")
	f.StringSliceVar(&o.tdAliases, "trust-domain-alias", nil, "trust domains the mesh also answers to (meshConfig.trustDomainAliases); repeatable")
	f.StringVarP(&o.outputFormat, "output", "o", "table", "table, json or yaml")
	return cmd
}

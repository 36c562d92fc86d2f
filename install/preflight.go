package install

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	authv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
)

// CheckStatus is a preflight check's verdict.
type CheckStatus string

const (
	Pass CheckStatus = "pass"
	Warn CheckStatus = "warn"
	Fail CheckStatus = "fail"
)

// CheckResult is one preflight check: one line, and for a warning or a
// failure what to do about it.
type CheckResult struct {
	Name    string      `json:"name"`
	Status  CheckStatus `json:"status"`
	Message string      `json:"message"`
	Fix     string      `json:"fix,omitempty"`
}

// MinKernel is the oldest node kernel the agent supports: tcx attachment
// of the TC programs needs Linux 6.6.
var MinKernel = [2]int{6, 6}

// Preflight runs every check against the cluster, for the chart with the
// user's values vals (nil: the chart's defaults). Checks never stop each
// other: a check that cannot read what it needs says so in its line.
func (c *Client) Preflight(ctx context.Context, ch *chart.Chart, vals map[string]any) []CheckResult {
	mode := cniMode(ch, vals)
	checks := []func(context.Context, *chart.Chart) CheckResult{
		c.checkKubeVersion, c.checkPermissions, c.checkRelease, c.checkNamespace,
		c.checkIstio, c.checkInjection, c.checkAmbient,
		func(ctx context.Context, _ *chart.Chart) CheckResult { return c.checkCNI(ctx, mode) },
		c.checkNodes,
	}
	var out []CheckResult
	for _, check := range checks {
		out = append(out, check(ctx, ch))
	}
	return out
}

func (c *Client) checkKubeVersion(_ context.Context, ch *chart.Chart) CheckResult {
	r := CheckResult{Name: "kubernetes-version"}
	v, err := c.Kube.Discovery().ServerVersion()
	if err != nil {
		return fail(r, "cannot read the server version: "+err.Error(), "check the API server and your kubeconfig")
	}
	want := ch.Metadata.KubeVersion
	if want != "" && !chartutil.IsCompatibleRange(want, v.GitVersion) {
		return fail(r, fmt.Sprintf("Kubernetes %s; nodemesh needs %s", v.GitVersion, want), "upgrade the cluster")
	}
	return pass(r, fmt.Sprintf("Kubernetes %s (nodemesh needs %s)", v.GitVersion, want))
}

// checkPermissions asks the API server whether the caller may create what
// an install creates.
func (c *Client) checkPermissions(ctx context.Context, _ *chart.Chart) CheckResult {
	r := CheckResult{Name: "permissions"}
	need := []authv1.ResourceAttributes{
		{Verb: "create", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"},
		{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
		{Verb: "create", Resource: "namespaces"},
		{Verb: "create", Group: "apps", Resource: "daemonsets", Namespace: c.Namespace},
		{Verb: "create", Group: "apps", Resource: "deployments", Namespace: c.Namespace},
		{Verb: "create", Resource: "secrets", Namespace: c.Namespace},
	}
	var missing []string
	for _, ra := range need {
		rev, err := c.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{
			Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			return warn(r, "cannot check permissions: "+err.Error(), "")
		}
		if !rev.Status.Allowed {
			what := ra.Resource
			if ra.Namespace != "" {
				what += " in " + ra.Namespace
			}
			missing = append(missing, ra.Verb+" "+what)
		}
	}
	if len(missing) > 0 {
		return fail(r, "you may not "+strings.Join(missing, ", "),
			"installing creates CRDs and ClusterRoles: run it as a cluster administrator")
	}
	return pass(r, "you may create CRDs, ClusterRoles, DaemonSets and the release Secrets")
}

func (c *Client) checkRelease(_ context.Context, _ *chart.Chart) CheckResult {
	r := CheckResult{Name: "existing-release"}
	rel, err := c.Current()
	if err == nil {
		return fail(r, "nodemesh is already installed ("+describe(rel)+")", "use 'nodemesh upgrade' to change it")
	}
	return pass(r, fmt.Sprintf("no release %q in %s", c.Release, c.Namespace))
}

// checkNamespace: Pod Security Admission must admit the privileged agent.
func (c *Client) checkNamespace(ctx context.Context, _ *chart.Chart) CheckResult {
	r := CheckResult{Name: "namespace"}
	ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, c.Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return pass(r, fmt.Sprintf("%s will be created (Pod Security: privileged)", c.Namespace))
	}
	if err != nil {
		return warn(r, "cannot read namespace "+c.Namespace+": "+err.Error(), "")
	}
	if lvl := ns.Labels[psaEnforce]; lvl == "baseline" || lvl == "restricted" {
		return fail(r, fmt.Sprintf("namespace %s enforces Pod Security %q; the agent and node Envoy need host networking and privileges", c.Namespace, lvl),
			fmt.Sprintf("kubectl label namespace %s %s=privileged --overwrite", c.Namespace, psaEnforce))
	}
	return pass(r, fmt.Sprintf("%s exists and admits privileged pods", c.Namespace))
}

var istioTag = regexp.MustCompile(`:([0-9]+\.[0-9]+[^@]*)`)

func (c *Client) checkIstio(ctx context.Context, _ *chart.Chart) CheckResult {
	r := CheckResult{Name: "istio"}
	var missing []string
	for _, crd := range []string{"virtualservices.networking.istio.io", "destinationrules.networking.istio.io", "serviceentries.networking.istio.io"} {
		if _, err := c.CRDs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			missing = append(missing, crd)
		} else if err != nil {
			return warn(r, "cannot read CRDs: "+err.Error(), "")
		}
	}
	if len(missing) > 0 {
		return fail(r, "Istio's CRDs are missing ("+strings.Join(missing, ", ")+"); the controller watches them",
			"install Istio, or at least its CRDs: helm install istio-base istio/base -n istio-system --create-namespace")
	}
	deps, err := c.Kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: "app=istiod"})
	if err != nil {
		return warn(r, "Istio's CRDs are present; cannot look for istiod: "+err.Error(), "")
	}
	if len(deps.Items) == 0 {
		return pass(r, "Istio's CRDs are present; no istiod (nodemesh works without it; sidecars need it)")
	}
	var found []string
	for _, d := range deps.Items {
		v := "unknown version"
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if m := istioTag.FindStringSubmatch(ctr.Image); m != nil {
				v = m[1]
			}
		}
		found = append(found, fmt.Sprintf("istiod %s in %s", v, d.Namespace))
	}
	sort.Strings(found)
	return pass(r, "Istio present: "+strings.Join(found, ", "))
}

func (c *Client) checkInjection(ctx context.Context, _ *chart.Chart) CheckResult {
	r := CheckResult{Name: "sidecar-injection"}
	nss, err := c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return warn(r, "cannot list namespaces: "+err.Error(), "")
	}
	var injected, both []string
	for _, ns := range nss.Items {
		inj := ns.Labels[api.IstioInjectionLabel] == api.IstioInjectionEnabled || ns.Labels[api.IstioRevisionLabel] != ""
		if inj {
			injected = append(injected, ns.Name)
			if ns.Labels[api.DataplaneModeLabel] == api.DataplaneModeNodemesh {
				both = append(both, ns.Name)
			}
		}
	}
	if len(both) > 0 {
		return warn(r, "opted in and still injecting sidecars: "+strings.Join(both, ", ")+"; pods with an istio-proxy stay on their sidecar",
			"remove the injection label once the namespace has moved: kubectl label namespace NAME istio-injection- istio.io/rev-")
	}
	if len(injected) > 0 {
		return pass(r, fmt.Sprintf("%d namespaces use sidecar injection (%s); they stay on sidecars until opted in", len(injected), strings.Join(injected, ", ")))
	}
	return pass(r, "no namespace uses sidecar injection")
}

func (c *Client) checkAmbient(ctx context.Context, _ *chart.Chart) CheckResult {
	r := CheckResult{Name: "istio-ambient"}
	dss, err := c.Kube.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return warn(r, "cannot list DaemonSets: "+err.Error(), "")
	}
	for _, ds := range dss.Items {
		if ds.Name == "ztunnel" {
			return warn(r, fmt.Sprintf("Istio ambient's ztunnel runs (%s/%s); nodemesh leaves namespaces with %s=%s alone", ds.Namespace, ds.Name, api.DataplaneModeLabel, api.DataplaneModeAmbient),
				"opt each namespace into one data plane only")
		}
	}
	return pass(r, "Istio ambient is not installed")
}

// knownCNIs maps DaemonSet names to CNI plugins.
var knownCNIs = map[string]string{
	"cilium": "Cilium", "calico-node": "Calico", "kube-flannel-ds": "Flannel", "kube-flannel": "Flannel",
	"weave-net": "Weave Net", "aws-node": "Amazon VPC CNI", "antrea-agent": "Antrea", "kube-router": "kube-router",
	"canal": "Canal", "kindnet": "kindnet", "azure-cns": "Azure CNI",
}

// chainedCNIs are plugins that insert themselves into the first CNI
// configuration of a node, which would be nodemesh's.
var chainedCNIs = map[string]string{"istio-cni-node": "Istio CNI"}

// CNI modes of the chart's agent.cni.mode.
const (
	CNIStandalone = "standalone"
	CNIChained    = "chained"
)

// cniMode is agent.cni.mode from vals, else the chart's default.
func cniMode(ch *chart.Chart, vals map[string]any) string {
	get := func(m map[string]any) string {
		a, _ := m["agent"].(map[string]any)
		c, _ := a["cni"].(map[string]any)
		s, _ := c["mode"].(string)
		return s
	}
	if s := get(vals); s != "" {
		return s
	}
	if ch != nil {
		if s := get(ch.Values); s != "" {
			return s
		}
	}
	return CNIStandalone
}

// checkCNI says what nodemesh will be on the nodes, by agent.cni.mode.
// Standalone, nodemesh is their CNI: the agent's 00-nodemesh.conflist sorts
// before every other CNI's configuration, so the runtime would give new
// pods nodemesh's network while pods already running keep another CNI's —
// two networks on one node, with no route between them; another CNI found
// is a failure. Chained, nodemesh-cni is appended to the nodes' first
// conflist: a primary CNI is needed.
func (c *Client) checkCNI(ctx context.Context, mode string) CheckResult {
	if mode == CNIChained {
		return c.checkChained(ctx)
	}
	r := CheckResult{Name: "cni"}
	dss, err := c.Kube.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return warn(r, "cannot list DaemonSets: "+err.Error(), "")
	}
	var found, chained []string
	for _, ds := range dss.Items {
		if name, ok := knownCNIs[ds.Name]; ok {
			found = append(found, fmt.Sprintf("%s (%s/%s)", name, ds.Namespace, ds.Name))
		}
		if name, ok := chainedCNIs[ds.Name]; ok {
			chained = append(chained, fmt.Sprintf("%s (%s/%s)", name, ds.Namespace, ds.Name))
		}
	}
	sort.Strings(found)
	sort.Strings(chained)
	if len(found) > 0 {
		return fail(r, "another CNI runs: "+strings.Join(found, ", ")+"; with agent.cni.mode=standalone nodemesh is the nodes' CNI: its "+api.CNIConfFile+
			" sorts first, so new pods would get nodemesh's network and running pods keep the other's",
			"chain nodemesh after it (--set agent.cni.mode=chained --set agent.routingMode=none), or install nodemesh on a cluster without another CNI")
	}
	if len(chained) > 0 {
		return fail(r, strings.Join(chained, ", ")+" inserts itself into the nodes' first CNI configuration, which would be nodemesh's "+api.CNIConfFile,
			"remove it: nodemesh takes the place of Istio's CNI plugin for opted-in namespaces")
	}
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return warn(r, "no known CNI DaemonSet; cannot list nodes: "+err.Error(), "")
	}
	var ready []string
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				ready = append(ready, n.Name)
			}
		}
	}
	if len(ready) > 0 {
		// A kubelet reports Ready only once its runtime has a CNI
		// configuration: some CNI not run by a known DaemonSet is there.
		sort.Strings(ready)
		return warn(r, fmt.Sprintf("no known CNI DaemonSet, but %d nodes are Ready (%s): their runtime already has a CNI configuration, which nodemesh's %s will take precedence over for new pods",
			len(ready), strings.Join(ready, ", "), api.CNIConfFile),
			"make sure no other CNI manages these nodes (managed clusters install theirs outside DaemonSets); nodemesh is a standalone CNI")
	}
	return pass(r, "no other CNI: nodemesh will be the nodes' CNI (standalone, "+api.CNIConfFile+")")
}

// checkChained: chained mode needs a primary CNI whose conflist
// nodemesh-cni is appended to.
func (c *Client) checkChained(ctx context.Context) CheckResult {
	r := CheckResult{Name: "cni"}
	dss, err := c.Kube.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return warn(r, "cannot list DaemonSets: "+err.Error(), "")
	}
	var found, chained []string
	for _, ds := range dss.Items {
		if name, ok := knownCNIs[ds.Name]; ok {
			found = append(found, name)
		}
		if name, ok := chainedCNIs[ds.Name]; ok {
			chained = append(chained, name)
		}
	}
	sort.Strings(found)
	if len(chained) > 0 {
		return warn(r, "nodemesh chains after the primary CNI (agent.cni.mode=chained), and so does "+strings.Join(chained, ", ")+": both police the same pods",
			"opt each namespace into one data plane only")
	}
	if len(found) > 0 {
		return pass(r, "nodemesh chains after "+strings.Join(found, ", ")+" (agent.cni.mode=chained): nodemesh-cni is appended to the nodes' first conflist")
	}
	return warn(r, "agent.cni.mode=chained and no known CNI DaemonSet: nodemesh-cni is appended to whatever conflist sorts first on each node, and the agent waits for one",
		"make sure the nodes have a primary CNI that writes a .conflist")
}

func (c *Client) checkNodes(ctx context.Context, _ *chart.Chart) CheckResult {
	r := CheckResult{Name: "nodes"}
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return warn(r, "cannot list nodes: "+err.Error(), "")
	}
	if len(nodes.Items) == 0 {
		return warn(r, "no nodes are registered; the DaemonSets will have nothing to run on", "")
	}
	var old, unknown []string
	linux := 0
	for _, n := range nodes.Items {
		if n.Status.NodeInfo.OperatingSystem != "" && n.Status.NodeInfo.OperatingSystem != "linux" {
			continue
		}
		linux++
		maj, min, ok := kernelVersion(n.Status.NodeInfo.KernelVersion)
		switch {
		case !ok:
			unknown = append(unknown, n.Name)
		case maj < MinKernel[0] || (maj == MinKernel[0] && min < MinKernel[1]):
			old = append(old, fmt.Sprintf("%s (%s)", n.Name, n.Status.NodeInfo.KernelVersion))
		}
	}
	if len(old) > 0 {
		return fail(r, fmt.Sprintf("kernel older than %d.%d on %s", MinKernel[0], MinKernel[1], strings.Join(old, ", ")),
			"upgrade those nodes' OS image, or keep nodemesh off them with --set agent.nodeSelector.KEY=VALUE --set envoy.nodeSelector.KEY=VALUE")
	}
	msg := fmt.Sprintf("%d Linux nodes with kernel ≥ %d.%d", linux-len(unknown), MinKernel[0], MinKernel[1])
	if len(unknown) > 0 {
		return warn(r, msg+fmt.Sprintf("; %d report no kernel version (%s)", len(unknown), strings.Join(unknown, ", ")), "check their kernel is at least 6.6")
	}
	return pass(r, msg)
}

// kernelVersion reads "6.8.0-1017-aws" as 6, 8.
func kernelVersion(s string) (int, int, bool) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	minStr := parts[1]
	if i := strings.IndexFunc(minStr, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minStr = minStr[:i]
	}
	min, err2 := strconv.Atoi(minStr)
	return maj, min, err1 == nil && err2 == nil
}

func pass(r CheckResult, msg string) CheckResult { r.Status, r.Message = Pass, msg; return r }
func warn(r CheckResult, msg, fix string) CheckResult {
	r.Status, r.Message, r.Fix = Warn, msg, fix
	return r
}
func fail(r CheckResult, msg, fix string) CheckResult {
	r.Status, r.Message, r.Fix = Fail, msg, fix
	return r
}

// Failed reports whether any check failed.
func Failed(rs []CheckResult) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

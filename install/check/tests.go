package check

import (
	"github.com/nodemesh/nodemesh/api"

	"fmt"
	"strconv"
	"strings"
)

// CheckHeader is the request header the header-match test routes on.
const CheckHeader = "x-nodemesh-check"

// DefaultTests are the tests 'nodemesh check' runs, in order.
func DefaultTests() []Test {
	return []Test{
		podToPod(), podToService(), weightedSplit(), headerMatch(), faultAbort(),
		networkPolicyDeny(), trafficPolicyDeny(), dnsUnderEgressPolicy(), podToNode(),
		notOptedInUntouched(), notOptedInUntouchedL4(), sidecarInterop(),
	}
}

func podToPod() Test {
	return Test{Name: "pod-to-pod", Scenarios: []Scenario{{Name: "pod-to-pod", Actions: func(e *Env) []Action {
		var out []Action
		for _, to := range []string{"echo-same-node", "echo-other-node"} {
			out = append(out, Action{Name: "client → " + to, From: e.Pods["client"],
				Command: curlStatus(fmt.Sprintf("http://%s:%d/hostname", e.Pods[to].IP, EchoPort)), Expect: expectStatus(200)})
		}
		return out
	}}}}
}

func podToService() Test {
	return Test{Name: "pod-to-service", Scenarios: []Scenario{{Name: "pod-to-service", Actions: func(e *Env) []Action {
		var out []Action
		for _, to := range []string{"echo-same-node", "echo-other-node"} {
			out = append(out, Action{Name: "client → service " + to, From: e.Pods["client"],
				Command: curlStatus(serviceURL(to, e.Namespace)), Expect: expectStatus(200)})
		}
		return out
	}}}}
}

const echoSubsets = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: "{{.Namespace}}"}
spec:
  host: echo
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
`

func weightedSplit() Test {
	return Test{
		Name: "vs-weighted-split", Requires: needsEnvoy,
		Resources: echoSubsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: "{{.Namespace}}"}
spec:
  hosts: [echo]
  http:
    - route:
        - {destination: {host: echo, subset: v1}, weight: 80}
        - {destination: {host: echo, subset: v2}, weight: 20}
`,
		Scenarios: []Scenario{{Name: "weighted-80-20", Actions: func(e *Env) []Action {
			n := e.Opts.Requests
			return []Action{{Name: fmt.Sprintf("client → echo ×%d", n), From: e.Pods["client"],
				Command: curlLoop(serviceURL("echo", e.Namespace), n),
				Expect:  expectShare("echo-same-node", 0.8, e.Opts.Tolerance, n)}}
		}}},
	}
}

func headerMatch() Test {
	return Test{
		Name: "vs-header-match", Requires: needsEnvoy,
		Resources: echoSubsets + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: "{{.Namespace}}"}
spec:
  hosts: [echo]
  http:
    - match: [{headers: {` + CheckHeader + `: {exact: v2}}}]
      route: [{destination: {host: echo, subset: v2}}]
    - route: [{destination: {host: echo, subset: v1}}]
`,
		Scenarios: []Scenario{{Name: "header-match", Actions: func(e *Env) []Action {
			return []Action{
				{Name: "with the header → v2", From: e.Pods["client"],
					Command: curlLoop(serviceURL("echo", e.Namespace), 10, "-H", CheckHeader+": v2"),
					Expect:  expectShare("echo-other-node", 1, 0, 10)},
				{Name: "without it → v1", From: e.Pods["client"],
					Command: curlLoop(serviceURL("echo", e.Namespace), 10),
					Expect:  expectShare("echo-same-node", 1, 0, 10)},
			}
		}}},
	}
}

const faultVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-same-node, namespace: "{{.Namespace}}"}
spec:
  hosts: [echo-same-node]
  http:
    - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
      route: [{destination: {host: echo-same-node}}]
`

func faultAbort() Test {
	return Test{Name: "vs-fault-abort", Resources: faultVS, Requires: needsEnvoy,
		Scenarios: []Scenario{{Name: "fault-abort", Actions: func(e *Env) []Action {
			return []Action{{Name: "client → echo-same-node aborted with 418", From: e.Pods["client"],
				Command: curlStatus(serviceURL("echo-same-node", e.Namespace)), Expect: expectStatus(418)}}
		}}}}
}

func networkPolicyDeny() Test {
	return Test{
		Name: "networkpolicy-deny",
		Resources: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-echo-other-node, namespace: "{{.Namespace}}"}
spec:
  podSelector: {matchLabels: {` + workloadLabel + `: echo-other-node}}
  policyTypes: [Ingress]
`,
		Scenarios: []Scenario{{Name: "ingress-deny", Actions: func(e *Env) []Action {
			return []Action{
				{Name: "client → echo-other-node denied", From: e.Pods["client"],
					Command: curlStatus(fmt.Sprintf("http://%s:%d/hostname", e.Pods["echo-other-node"].IP, EchoPort)), Expect: expectBlocked},
				{Name: "client → echo-same-node still allowed", From: e.Pods["client"],
					Command: curlStatus(serviceURL("echo-same-node", e.Namespace)), Expect: expectStatus(200)},
			}
		}}},
	}
}

// notOptedInUntouched: a VirtualService that aborts every request applies
// to opted-in clients only; a client in a namespace that is not opted in
// reaches the server directly, and its own echo server is reachable too.
func notOptedInUntouched() Test {
	return Test{Name: "not-opted-in-untouched", Resources: faultVS, Requires: needsEnvoy,
		Scenarios: []Scenario{{Name: "plain-namespace", Actions: func(e *Env) []Action {
			return []Action{
				{Name: "client-plain → echo-same-node not redirected", From: e.Pods["client-plain"],
					Command: curlStatus(serviceURL("echo-same-node", e.Namespace)), Expect: expectStatus(200)},
				{Name: "client → echo-same-node redirected (control)", From: e.Pods["client"],
					Command: curlStatus(serviceURL("echo-same-node", e.Namespace)), Expect: expectStatus(418)},
				{Name: "client → echo-plain", From: e.Pods["client"],
					Command: curlStatus(serviceURL("echo-plain", e.PlainNamespace)), Expect: expectStatus(200)},
			}
		}}}}
}

// trafficPolicyDeny: a nodemesh TrafficPolicy with action Deny wins over
// everything that allows: the client is denied echo-other-node while every
// other peer still reaches it.
func trafficPolicyDeny() Test {
	return Test{
		Name: "trafficpolicy-deny",
		Resources: `apiVersion: nodemesh.io/v1alpha1
kind: TrafficPolicy
metadata: {name: deny-client-to-echo-other-node, namespace: "{{.Namespace}}"}
spec:
  selector: {matchLabels: {` + workloadLabel + `: echo-other-node}}
  action: Deny
  ingress:
  - peers: [{podSelector: {matchLabels: {` + workloadLabel + `: client}}}]
  egress: []
`,
		Scenarios: []Scenario{{Name: "deny", Actions: func(e *Env) []Action {
			return []Action{
				{Name: "client → echo-other-node denied", From: e.Pods["client"],
					Command: curlStatus(fmt.Sprintf("http://%s:%d/hostname", e.Pods["echo-other-node"].IP, EchoPort)), Expect: expectBlocked},
				{Name: "client-plain → echo-other-node still allowed", From: e.Pods["client-plain"],
					Command: curlStatus(fmt.Sprintf("http://%s:%d/hostname", e.Pods["echo-other-node"].IP, EchoPort)), Expect: expectStatus(200)},
			}
		}}},
	}
}

// dnsUnderEgressPolicy: the canonical egress rule — allow DNS to kube-dns'
// pods and the echo servers, nothing else — lets a client resolve through
// the kube-dns Service address and reach the echo Service (socket load
// balancing makes the policy see the DNS pod, not the Service address),
// and stops the rest.
func dnsUnderEgressPolicy() Test {
	return Test{
		Name: "dns-egress-policy",
		Resources: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-dns-and-echo, namespace: "{{.Namespace}}"}
spec:
  podSelector: {matchLabels: {` + workloadLabel + `: client}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}, {protocol: UDP, port: 1053}, {protocol: TCP, port: 1053}]
  - to: [{podSelector: {matchLabels: {` + workloadLabel + `: echo-same-node}}}, {podSelector: {matchLabels: {` + workloadLabel + `: echo-other-node}}}]
    ports: [{protocol: TCP, port: ` + fmt.Sprint(EchoPort) + `}]
`,
		Scenarios: []Scenario{{Name: "egress", Actions: func(e *Env) []Action {
			return []Action{
				{Name: "client resolves and reaches service echo-other-node", From: e.Pods["client"],
					Command: curlStatus(serviceURL("echo-other-node", e.Namespace)), Expect: expectStatus(200)},
				{Name: "client → echo-plain denied (not in its egress)", From: e.Pods["client"],
					Command: curlStatus(fmt.Sprintf("http://%s:%d/hostname", e.Pods["echo-plain"].IP, EchoPort)), Expect: expectBlocked},
			}
		}}},
	}
}

// podToNode: pods reach their own node and the other node (the agent's
// metrics port listens on every node's address).
func podToNode() Test {
	return Test{Name: "pod-to-node", Scenarios: []Scenario{{Name: "pod-to-node", Actions: func(e *Env) []Action {
		var out []Action
		seen := map[string]bool{}
		for _, w := range []string{"echo-same-node", "echo-other-node"} {
			ip := e.Pods[w].HostIP
			if ip == "" || seen[ip] {
				continue
			}
			seen[ip] = true
			out = append(out, Action{Name: "client → node " + e.Pods[w].Node, From: e.Pods["client"],
				Command: curlStatus(fmt.Sprintf("http://%s:%d/metrics", ip, api.AgentMetricsPort)), Expect: expectStatus(200)})
		}
		return out
	}}}}
}

// notOptedInUntouchedL4 is not-opted-in-untouched where the node proxy is
// the L4 stand-in: the stand-in's own record shows the opted-in client's
// connection and none of the plain client's, which went straight to the
// server.
func notOptedInUntouchedL4() Test {
	return Test{Name: "not-opted-in-untouched-l4",
		Requires: func(e *Env) string {
			if e.NodeProxy != NodeProxyStandIn {
				return "runs where the node proxy is the L4 stand-in (not-opted-in-untouched covers Envoy)"
			}
			return ""
		},
		Scenarios: []Scenario{{Name: "plain-namespace", Actions: func(e *Env) []Action {
			client, plain := e.Pods["client"], e.Pods["client-plain"]
			return []Action{
				{Name: "client → echo-same-node through the node proxy", From: client,
					Command: curlStatus(serviceURL("echo-same-node", e.Namespace)), Expect: expectStatus(200)},
				{Name: "client-plain → echo-same-node", From: plain,
					Command: curlStatus(serviceURL("echo-same-node", e.Namespace)), Expect: expectStatus(200)},
				{Name: "client → echo-plain", From: client,
					Command: curlStatus(serviceURL("echo-plain", e.PlainNamespace)), Expect: expectStatus(200)},
				{Name: "the node proxy's record has the opted-in client", From: client,
					Command: recordOf(client.HostIP), Expect: expectRecord(client.IP, true)},
				{Name: "the node proxy's record does not have the plain client", From: client,
					Command: recordOf(plain.HostIP), Expect: expectRecord(plain.IP, false)},
			}
		}}}}
}

// recordOf reads the stand-in's record on a node.
func recordOf(hostIP string) []string {
	return []string{"curl", "-sS", "--max-time", "5", fmt.Sprintf("http://%s:15090/stats/prometheus", hostIP)}
}

// expectRecord: the record has (or has not) a connection from ip.
func expectRecord(ip string, has bool) func(Result) error {
	return func(r Result) error {
		if r.Err != nil {
			return fmt.Errorf("read the stand-in's record: %v", r.Err)
		}
		if got := strings.Contains(r.Stdout, `source="`+ip+`"`); got != has {
			if has {
				return fmt.Errorf("no connection from %s in the node proxy's record", ip)
			}
			return fmt.Errorf("%s went through the node proxy", ip)
		}
		return nil
	}
}

func sidecarInterop() Test {
	return Test{
		Name: "sidecar-interop",
		Requires: func(e *Env) string {
			if !e.Istio {
				return "Istio (istiod) is not installed"
			}
			return ""
		},
		Scenarios: []Scenario{{Name: "both-directions", Actions: func(e *Env) []Action {
			return []Action{
				{Name: "client-sidecar → echo-same-node (nodemesh)", From: e.Pods["client-sidecar"],
					Command: curlStatus(serviceURL("echo-same-node", e.Namespace)), Expect: expectStatus(200)},
				{Name: "client (nodemesh) → echo-sidecar", From: e.Pods["client"],
					Command: curlStatus(serviceURL("echo-sidecar", e.SidecarNamespace)), Expect: expectStatus(200)},
			}
		}}},
	}
}

func serviceURL(svc, ns string) string {
	return fmt.Sprintf("http://%s.%s:%d/hostname", svc, ns, EchoPort)
}

// curlStatus prints only the HTTP status ("000" when no response).
func curlStatus(url string, extra ...string) []string {
	cmd := []string{"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--connect-timeout", "2", "--max-time", "10"}
	return append(append(cmd, extra...), url)
}

// curlLoop prints one line per request: the answering pod's name.
func curlLoop(url string, n int, extra ...string) []string {
	args := ""
	for _, e := range extra {
		args += " '" + strings.ReplaceAll(e, "'", `'\''`) + "'"
	}
	return []string{"sh", "-c", fmt.Sprintf("i=0; while [ $i -lt %d ]; do curl -sS --max-time 5%s %s; echo; i=$((i+1)); done", n, args, url)}
}

func expectStatus(code int) func(Result) error {
	return func(r Result) error {
		got := strings.TrimSpace(r.Stdout)
		if r.Err != nil {
			return fmt.Errorf("request failed (want HTTP %d): %v", code, r.Err)
		}
		if got != strconv.Itoa(code) {
			return fmt.Errorf("got HTTP %s, want %d", got, code)
		}
		return nil
	}
}

// expectBlocked: no HTTP response at all (refused, reset or timed out).
func expectBlocked(r Result) error {
	if got := strings.TrimSpace(r.Stdout); r.Err == nil || (got != "" && got != "000") {
		return fmt.Errorf("got HTTP %s, want the connection refused or timed out", got)
	}
	return nil
}

// expectShare: of n answers, the share from pods named prefix* is want ±
// tolerance; every request must be answered.
func expectShare(prefix string, want, tolerance float64, n int) func(Result) error {
	return func(r Result) error {
		lines := strings.Fields(r.Stdout)
		hits := 0
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				hits++
			}
		}
		if len(lines) != n {
			return fmt.Errorf("%d of %d requests answered", len(lines), n)
		}
		share := float64(hits) / float64(n)
		if share < want-tolerance-1e-9 || share > want+tolerance+1e-9 {
			return fmt.Errorf("%s answered %.0f%%, want %.0f%% ±%.0f", prefix, share*100, want*100, tolerance*100)
		}
		return nil
	}
}

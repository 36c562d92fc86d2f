package migration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// DefaultProbeImage is the image of the probe Pod at a nodemesh version:
// nodemesh's curl image (curl and a POSIX shell), which 'make images' builds
// offline. The Pod runs it as a non-root user (uid 100).
func DefaultProbeImage(version string) string { return api.ImageRef(api.CurlImage, version) }

// ProbeLabel marks probe Pods (value ProbeLabelValue); apply deletes any it
// finds left over by an interrupted run before starting one.
const (
	ProbeLabel      = "app.kubernetes.io/name"
	ProbeLabelValue = "nodemesh-probe"
	probeContainer  = "probe"
)

// PodProbe is the default Prober: a short-lived Pod in the migrated
// namespace — so a client of the node Envoy like the namespace's own pods,
// with no sidecar since the namespace's injection labels are gone — that
// requests every HTTP port of the namespace's Services by its cluster name.
// Any HTTP response of the application, whatever its status, is
// connectivity; a failed connection, a reset or a timeout is not, and
// neither is the node Envoy's own answer that it could not reach the
// application (a 502/503/504 whose body is Envoy's "no healthy upstream",
// "upstream connect error …" or "upstream request timeout"). The Pod writes one line per
// target to its termination message, which the kubelet copies into the
// Pod's status, so no log access (and no kubelet port) is needed to read
// the result. The Pod is deleted once read, whatever the outcome.
type PodProbe struct {
	Client kubernetes.Interface
	// Image has curl and /bin/sh (DefaultProbeImage(Version) when empty).
	Image string
	// Version is the nodemesh version of the default image ("dev" when
	// empty).
	Version string
	// Timeout bounds the whole probe, from creating the Pod to its end
	// (2 minutes when zero); the Pod's activeDeadlineSeconds is the same.
	Timeout time.Duration
	// RequestTimeout bounds each request (5 seconds when zero).
	RequestTimeout time.Duration
	// ClusterDomain of the Service names (cluster.local when empty).
	ClusterDomain string

	// poll is the interval between reads of the Pod (500ms when zero).
	poll time.Duration
}

// ProbeTarget is one Service port the probe requests.
type ProbeTarget struct {
	Service string
	Port    int32
	// HTTP2 ports (http2, grpc, h2c) are requested with HTTP/2 prior
	// knowledge.
	HTTP2 bool
}

// Addr is host:port of the target in the namespace ns.
func (t ProbeTarget) Addr(ns, domain string) string {
	return fmt.Sprintf("%s.%s.svc.%s:%d", t.Service, ns, domain, t.Port)
}

func (t ProbeTarget) String() string { return t.Service + ":" + strconv.Itoa(int(t.Port)) }

// httpPort says whether a Service port looks HTTP by Istio's rules
// (appProtocol, then the port name prefix), and whether it is HTTP/2.
func httpPort(p corev1.ServicePort) (isHTTP, http2 bool) {
	pr := istio.PortProtocol(p)
	return pr.IsHTTP(), pr.IsHTTP2()
}

// ProbeTargets lists the HTTP-looking ports of the Services, sorted.
// ExternalName Services are left out: they are not in the namespace.
func ProbeTargets(svcs []corev1.Service) []ProbeTarget {
	var out []ProbeTarget
	for _, s := range svcs {
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		for _, p := range s.Spec.Ports {
			if ok, h2 := httpPort(p); ok {
				out = append(out, ProbeTarget{Service: s.Name, Port: p.Port, HTTP2: h2})
			}
		}
	}
	slices.SortFunc(out, func(a, b ProbeTarget) int {
		if c := strings.Compare(a.Service, b.Service); c != 0 {
			return c
		}
		return int(a.Port - b.Port)
	})
	return out
}

// probeScript runs in the probe Pod with one argument per target,
// "host:port" or "h2:host:port". It prints "<target> <status> <curl exit>"
// per target; to $OUT (the termination message file, of which the kubelet
// keeps 4 KiB) it writes only the failed targets' lines and a last line
// "done <answered> <targets>"; it exits 1 when any target gave no HTTP
// response of the application. Then it reads the record of the node proxy
// on its node ($PROXY, the node's address and port 15090) and writes
// "proxy <kind> <n>": for nodemesh's L4 stand-in ("stand-in"), the
// connections it carried from this pod; for Envoy ("envoy"), how many more
// requests its outbound clusters sent than before the probe; "unreachable"
// or "none" when there is no record to read. An answer is not enough: the
// requests must have gone through the node proxy. curl without --fail exits 0 on any HTTP
// status; its %{http_code} is 000 when there was none. An Envoy local reply
// for an unreachable upstream is reported with a pseudo exit status
// (envoyNoHealthyUpstream and the two after it).
const probeScript = `OUT="${OUT:-/dev/termination-log}"
: > "$OUT"
nl='
'
n=0
rc=0
record() { [ -n "$PROXY" ] && curl -s --connect-timeout 2 -m 5 "http://$PROXY/stats/prometheus"; }
envoy_rq() { awk '/^envoy_cluster_upstream_rq_total[{]envoy_cluster_name="outbound[|]/ {s+=$NF} END {print s+0}'; }
before=$(record | envoy_rq)
for t in "$@"; do
  opt=""
  case "$t" in h2:*) t="${t#h2:}"; opt="--http2-prior-knowledge";; esac
  resp=$(curl -s $opt --connect-timeout "$TIMEOUT" -m "$TIMEOUT" -w "${nl}%{http_code}" "http://$t/")
  e=$?
  code=${resp##*"$nl"}
  [ -n "$code" ] || code=000
  case "$code" in
  502|503|504)
    case "$resp" in
    *"no healthy upstream"*) e=101; code=000;;
    *"upstream connect error"*) e=102; code=000;;
    *"upstream request timeout"*) e=103; code=000;;
    esac;;
  esac
  echo "$t $code $e"
  if [ "$code" = 000 ]; then rc=1; echo "$t $code $e" >> "$OUT"; else n=$((n+1)); fi
done
echo "done $n $#" >> "$OUT"
after=$(record)
if [ -z "$PROXY" ]; then
  echo "proxy none 0" >> "$OUT"
elif [ -z "$after" ]; then
  echo "proxy unreachable 0" >> "$OUT"
else
  standin=$(printf '%s\n' "$after" | awk -v p="nodemesh_standin_proxy_connections_total{source=\"$POD_IP\"," 'index($0, p) == 1 {s+=$NF} END {print s+0}')
  if [ "$standin" -gt 0 ]; then
    echo "proxy stand-in $standin" >> "$OUT"
  else
    echo "proxy envoy $(( $(printf '%s\n' "$after" | envoy_rq) - before ))" >> "$OUT"
  fi
fi
exit $rc
`

// probeOutput is what the probe wrote to its termination message.
type probeOutput struct {
	// failed are the targets without an HTTP response, by address.
	failed map[string]probeResult
	// done: the probe got to its end; answered of targets responded.
	done              bool
	answered, targets int
	// proxy is the node proxy's record of the probe: its kind
	// ("stand-in", "envoy", "unreachable", "none") and the connections or
	// requests it counted.
	proxy      string
	proxyCount int
}

// probeResult is one failed target.
type probeResult struct {
	code string
	exit int
}

// Pseudo exit statuses of the probe script for the node Envoy's local
// replies: the request reached Envoy, which could not reach the application.
const (
	envoyNoHealthyUpstream = 101
	envoyUpstreamConnect   = 102
	envoyUpstreamTimeout   = 103
)

// curlErrors names the curl exit codes a failed probe usually has.
var curlErrors = map[int]string{
	envoyNoHealthyUpstream: "the node Envoy answered: no healthy upstream",
	envoyUpstreamConnect:   "the node Envoy answered: upstream connect error (the application refused or reset the connection)",
	envoyUpstreamTimeout:   "the node Envoy answered: upstream request timeout",
	6:                      "could not resolve the name",
	7:                      "connection failed",
	28:                     "timed out",
	35:                     "TLS handshake failed",
	52:                     "empty reply",
	56:                     "connection reset",
}

func (r probeResult) failure() string {
	why := curlErrors[r.exit]
	if why == "" {
		why = "no HTTP response"
	}
	return fmt.Sprintf("%s (curl exit %d)", why, r.exit)
}

// parseProbeOutput reads the probe's termination message.
func parseProbeOutput(msg string) probeOutput {
	out := probeOutput{failed: map[string]probeResult{}}
	for line := range strings.SplitSeq(msg, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		if f[0] == "proxy" {
			if n, err := strconv.Atoi(f[2]); err == nil {
				out.proxy, out.proxyCount = f[1], n
			}
			continue
		}
		a, errA := strconv.Atoi(f[1])
		b, errB := strconv.Atoi(f[2])
		if errA != nil || errB != nil {
			continue
		}
		if f[0] == "done" {
			out.done, out.answered, out.targets = true, a, b
			continue
		}
		out.failed[f[0]] = probeResult{code: f[1], exit: b}
	}
	return out
}

func (p *PodProbe) image() string {
	if p.Image == "" {
		v := p.Version
		if v == "" {
			v = "dev"
		}
		return DefaultProbeImage(v)
	}
	return p.Image
}

func (p *PodProbe) timeout() time.Duration {
	if p.Timeout == 0 {
		return 2 * time.Minute
	}
	return p.Timeout
}

func (p *PodProbe) requestTimeout() time.Duration {
	if p.RequestTimeout == 0 {
		return 5 * time.Second
	}
	return p.RequestTimeout
}

func (p *PodProbe) domain() string {
	if p.ClusterDomain == "" {
		return ir.DefaultClusterDomain
	}
	return p.ClusterDomain
}

// probePod is the probe Pod for the targets: restartPolicy Never (one
// attempt: a retry would hide a failure), non-root with no privileges and a
// read-only root file system (Pod Security "restricted"), no service
// account token, the result in the termination message.
func (p *PodProbe) probePod(ns string, targets []ProbeTarget) *corev1.Pod {
	args := []string{"-c", probeScript, "nodemesh-probe"}
	for _, t := range targets {
		a := t.Addr(ns, p.domain())
		if t.HTTP2 {
			a = "h2:" + a
		}
		args = append(args, a)
	}
	deadline := int64(p.timeout().Seconds())
	if deadline < 1 {
		deadline = 1
	}
	no, yes := false, true
	uid := int64(100)
	grace := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: ProbeLabelValue + "-", Namespace: ns,
			Labels: map[string]string{ProbeLabel: ProbeLabelValue, "app.kubernetes.io/managed-by": "nodemesh"},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &deadline,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &no,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: probeContainer, Image: p.image(), ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"/bin/sh"}, Args: args,
				Env: []corev1.EnvVar{{Name: "TIMEOUT", Value: strconv.Itoa(int(p.requestTimeout().Seconds()))},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
					// The node proxy (hostNetwork) serves its record there.
					{Name: "PROXY", Value: "$(HOST_IP):" + strconv.Itoa(api.EnvoyStatsPort)}},
				TerminationMessagePath:   corev1.TerminationMessagePathDefault,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
				},
			}},
		},
	}
}

// Probe implements Prober.
func (p *PodProbe) Probe(ctx context.Context, ns string) (string, error) {
	pods := p.Client.CoreV1().Pods(ns)
	if err := p.cleanup(ctx, ns); err != nil {
		return "", err
	}
	svcs, err := p.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("list services: %w", err)
	}
	targets := ProbeTargets(svcs.Items)
	if len(targets) == 0 {
		return "no HTTP Service port to probe (ports are HTTP by appProtocol or an http/http2/grpc name prefix)", nil
	}
	pod, err := pods.Create(ctx, p.probePod(ns, targets), metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create the probe pod: %w", err)
	}
	// Deleted whatever happens, even when ctx has ended.
	defer func() {
		_ = pods.Delete(context.WithoutCancel(ctx), pod.Name, metav1.DeleteOptions{})
	}()
	done, err := p.wait(ctx, ns, pod.Name)
	if err != nil {
		return "", err
	}
	return p.report(ns, targets, done)
}

// cleanup deletes probe Pods an interrupted run left behind.
func (p *PodProbe) cleanup(ctx context.Context, ns string) error {
	pods := p.Client.CoreV1().Pods(ns)
	old, err := pods.List(ctx, metav1.ListOptions{LabelSelector: ProbeLabel + "=" + ProbeLabelValue})
	if err != nil {
		return fmt.Errorf("list probe pods: %w", err)
	}
	for _, o := range old.Items {
		if err := pods.Delete(ctx, o.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete the old probe pod %s: %w", o.Name, err)
		}
	}
	return nil
}

// wait returns the finished Pod.
func (p *PodProbe) wait(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	poll := p.poll
	if poll == 0 {
		poll = 500 * time.Millisecond
	}
	deadline := time.Now().Add(p.timeout())
	for {
		pod, err := p.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("read the probe pod: %w", err)
		}
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return pod, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the probe pod %s/%s did not finish within %s: %s (image %s: --probe-image names another, --probe=false skips the probe)",
				ns, name, p.timeout(), podWaitReason(pod), p.image())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

func podWaitReason(pod *corev1.Pod) string {
	for _, c := range pod.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && w.Reason != "" {
			return fmt.Sprintf("phase %s, container %s: %s %s", pod.Status.Phase, w.Reason, c.Name, w.Message)
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("phase %s, unschedulable: %s", pod.Status.Phase, c.Message)
		}
	}
	return "phase " + string(pod.Status.Phase)
}

// report turns the finished Pod into a summary or an error naming every
// Service:port that failed.
func (p *PodProbe) report(ns string, targets []ProbeTarget, pod *corev1.Pod) (string, error) {
	var term *corev1.ContainerStateTerminated
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name == probeContainer {
			term = c.State.Terminated
		}
	}
	if term == nil {
		return "", fmt.Errorf("the probe pod %s/%s ended (%s: %s) before its container ran", ns, pod.Name, pod.Status.Reason, pod.Status.Message)
	}
	out := parseProbeOutput(term.Message)
	var failed []string
	for _, t := range targets {
		if r, ok := out.failed[t.Addr(ns, p.domain())]; ok {
			failed = append(failed, t.String()+": "+r.failure())
		}
	}
	switch {
	case len(failed) > 0:
		more := ""
		if !out.done {
			more = "\n  (the result was cut short: there may be more)"
		}
		return "", fmt.Errorf("%d of %d Service ports gave no HTTP response to a pod in %s:\n  %s%s", len(failed), len(targets), ns, strings.Join(failed, "\n  "), more)
	case term.ExitCode != 0 || !out.done || out.answered != len(targets):
		return "", fmt.Errorf("the probe pod %s/%s exited with %d (%s) without a complete result: %s", ns, pod.Name, term.ExitCode, term.Reason, strings.TrimSpace(term.Message))
	case out.proxy == "unreachable" || out.proxy == "none" || out.proxy == "":
		return "", fmt.Errorf("%d Service ports answered a pod in %s, but the node proxy's record (port %d on the pod's node) could not be read, so nothing proves the requests went through it: is the node proxy running there, or does an egress NetworkPolicy of %s stop its pods from reaching their node?", len(targets), ns, api.EnvoyStatsPort, ns)
	case out.proxyCount < len(targets):
		return "", fmt.Errorf("%d Service ports answered a pod in %s, but the node proxy (%s) recorded %d of them: the requests did not go through it — is %s redirected (label %s=%s)?", len(targets), ns, out.proxy, out.proxyCount, ns, api.DataplaneModeLabel, api.DataplaneModeNodemesh)
	}
	return fmt.Sprintf("%d Service ports answered over HTTP from a pod in %s, through the node proxy (%s: %d recorded)", len(targets), ns, out.proxy, out.proxyCount), nil
}

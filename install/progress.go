package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemesh/nodemesh/api"
)

// ErrNotReady is returned when a wait ends before every component is ready.
var ErrNotReady = errors.New("nodemesh is not ready")

// Component is the readiness of the controller Deployment or one of the
// DaemonSets.
type Component struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Desired int32  `json:"desired"`
	Ready   int32  `json:"ready"`
	Updated int32  `json:"updated"`
	// Missing: the object does not exist.
	Missing bool `json:"missing,omitempty"`
	// Disabled: the release does not install it (envoy.enabled=false).
	Disabled bool `json:"disabled,omitempty"`
	// Waiting says what the component waits for, when it is not a pod
	// (its controller has not processed it yet, no pods created, …).
	Waiting string `json:"waiting,omitempty"`
	// Pods are the component's pods that are not ready, with why.
	Pods []PodState `json:"notReadyPods,omitempty"`
}

// PodState is one pod's readiness in words.
type PodState struct {
	Pod   string `json:"pod"`
	Node  string `json:"node,omitempty"`
	Ready bool   `json:"ready"`
	// Reason: "image pull failed: …", "crash loop: …", "pending: …".
	Reason string `json:"reason,omitempty"`
}

// IsReady reports whether every desired replica is ready and up to date.
func (c Component) IsReady() bool {
	if c.Disabled {
		return true
	}
	return !c.Missing && c.Waiting == "" && c.Ready >= c.Desired && c.Updated >= c.Desired
}

// Line is the component in one line: "nodemesh-envoy: 1/3 ready — node-2:
// image pull failed: …".
func (c Component) Line() string {
	if c.Disabled {
		return fmt.Sprintf("%s: disabled (envoy.enabled=false: no node proxy; traffic of opted-in namespaces fails closed)", c.Name)
	}
	if c.Missing {
		return fmt.Sprintf("%s: %s missing", c.Name, c.Kind)
	}
	s := fmt.Sprintf("%s: %d/%d ready", c.Name, c.Ready, c.Desired)
	if c.Updated < c.Desired && c.Waiting == "" {
		s += fmt.Sprintf(", %d/%d updated", c.Updated, c.Desired)
	}
	var why []string
	if c.Waiting != "" {
		why = append(why, c.Waiting)
	}
	for i, p := range c.Pods {
		if i == 3 {
			why = append(why, fmt.Sprintf("and %d more pods", len(c.Pods)-3))
			break
		}
		where := p.Pod
		if p.Node != "" {
			where = p.Node
		}
		why = append(why, where+": "+p.Reason)
	}
	if len(why) > 0 {
		s += " — " + strings.Join(why, "; ")
	}
	return s
}

// Components reads the controller Deployment and the agent and Envoy
// DaemonSets, and for each pod that is not ready, why.
func (c *Client) Components(ctx context.Context) ([]Component, error) {
	var out []Component
	dep, err := c.Kube.AppsV1().Deployments(c.Namespace).Get(ctx, api.ControllerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		out = append(out, Component{Name: api.ControllerName, Kind: "Deployment", Missing: true})
	case err != nil:
		return nil, fmt.Errorf("get deployment %s: %w", api.ControllerName, err)
	default:
		out = append(out, deploymentComponent(dep))
	}
	for _, name := range []string{api.AgentName, api.EnvoyName} {
		ds, err := c.Kube.AppsV1().DaemonSets(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) && name == api.EnvoyName && c.envoyDisabled():
			out = append(out, Component{Name: name, Kind: "DaemonSet", Disabled: true})
		case apierrors.IsNotFound(err):
			out = append(out, Component{Name: name, Kind: "DaemonSet", Missing: true})
		case err != nil:
			return nil, fmt.Errorf("get daemonset %s: %w", name, err)
		default:
			out = append(out, daemonSetComponent(ds))
		}
	}
	for i := range out {
		if out[i].Missing || out[i].Disabled {
			continue
		}
		pods, err := c.podStates(ctx, out[i].Name)
		if err != nil {
			return nil, err
		}
		for _, p := range pods {
			if !p.Ready {
				out[i].Pods = append(out[i].Pods, p)
			}
		}
		if out[i].Waiting == "" && out[i].Desired > 0 && len(pods) == 0 {
			out[i].Waiting = "no pods created yet"
		}
	}
	return out, nil
}

func deploymentComponent(d *appsv1.Deployment) Component {
	c := Component{Name: d.Name, Kind: "Deployment", Desired: 1, Ready: d.Status.ReadyReplicas, Updated: d.Status.UpdatedReplicas}
	if d.Spec.Replicas != nil {
		c.Desired = *d.Spec.Replicas
	}
	if d.Status.ObservedGeneration < d.Generation {
		c.Waiting = "not yet processed by the Deployment controller (is kube-controller-manager running?)"
	}
	for _, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentProgressing && cond.Status == corev1.ConditionFalse {
			c.Waiting = "rollout stuck: " + cond.Message
		}
		if cond.Type == appsv1.DeploymentReplicaFailure && cond.Status == corev1.ConditionTrue {
			c.Waiting = "cannot create pods: " + cond.Message
		}
	}
	return c
}

func daemonSetComponent(d *appsv1.DaemonSet) Component {
	c := Component{Name: d.Name, Kind: "DaemonSet", Desired: d.Status.DesiredNumberScheduled, Ready: d.Status.NumberReady, Updated: d.Status.UpdatedNumberScheduled}
	if d.Status.ObservedGeneration < d.Generation {
		c.Waiting = "not yet processed by the DaemonSet controller (is kube-controller-manager running?)"
	} else if c.Desired == 0 {
		c.Waiting = "no node matches its node selector and tolerations"
	}
	return c
}

// podStates lists a component's pods (by its name label) with why each
// is not ready.
func (c *Client) podStates(ctx context.Context, component string) ([]PodState, error) {
	pods, err := c.Kube.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + component})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", component, err)
	}
	var out []PodState
	for i := range pods.Items {
		p := &pods.Items[i]
		ready, reason := PodReadiness(p)
		out = append(out, PodState{Pod: p.Name, Node: p.Spec.NodeName, Ready: ready, Reason: reason})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node+out[i].Pod < out[j].Node+out[j].Pod })
	return out, nil
}

// PodReadiness says whether a pod is ready and, if not, why, in the terms
// a user acts on: image pull, crash loop, unschedulable, probe failing.
func PodReadiness(p *corev1.Pod) (bool, string) {
	if p.DeletionTimestamp != nil {
		return false, "terminating"
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true, ""
		}
	}
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, s := range statuses {
		if w := s.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
				return false, fmt.Sprintf("image pull failed (%s): %s", s.Image, firstLine(w.Message))
			case "CrashLoopBackOff":
				msg := fmt.Sprintf("crash loop: container %s restarted %d times", s.Name, s.RestartCount)
				if t := s.LastTerminationState.Terminated; t != nil {
					msg += fmt.Sprintf(", last exit code %d", t.ExitCode)
					if m := firstLine(t.Message); m != "" {
						msg += ": " + m
					} else if t.Reason != "" {
						msg += " (" + t.Reason + ")"
					}
				}
				return false, msg
			case "CreateContainerConfigError", "CreateContainerError", "RunContainerError":
				return false, fmt.Sprintf("container %s cannot start: %s", s.Name, firstLine(w.Message))
			case "ContainerCreating", "PodInitializing":
			default:
				if w.Reason != "" {
					return false, fmt.Sprintf("container %s waiting: %s", s.Name, w.Reason)
				}
			}
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return false, "pending: cannot be scheduled: " + firstLine(c.Message)
		}
	}
	if p.Spec.NodeName == "" {
		return false, "pending: not scheduled yet"
	}
	if p.Status.Phase == corev1.PodPending {
		return false, "pending: starting containers"
	}
	if p.Status.Phase == corev1.PodRunning {
		return false, "running, not ready yet (readiness probe)"
	}
	return false, strings.ToLower(string(p.Status.Phase))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// WaitOptions configure Wait.
type WaitOptions struct {
	Timeout time.Duration
	// Interval between polls (default 2s).
	Interval time.Duration
	// Out gets a line whenever a component's state changes, and a summary.
	Out io.Writer
}

// Wait polls the components until all are ready, printing what each waits
// for whenever that changes (never the same line twice), then a summary.
// On timeout it returns ErrNotReady naming what is not ready and why.
func (c *Client) Wait(ctx context.Context, o WaitOptions) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, orDuration(o.Timeout, 5*time.Minute))
	defer cancel()
	last := map[string]string{}
	for {
		comps, err := c.Components(ctx)
		ready := err == nil
		var notReady []string
		if err != nil {
			// The API server may be briefly unavailable: keep polling.
			notReady = append(notReady, err.Error())
		}
		for _, comp := range comps {
			line := comp.Line()
			if !comp.IsReady() {
				ready = false
				notReady = append(notReady, line)
			}
			if last[comp.Name] != line {
				mark := "⏳"
				if comp.IsReady() {
					mark = "✅"
				}
				progress(o.Out, "%s %s", mark, line)
				last[comp.Name] = line
			}
		}
		if ready {
			progress(o.Out, "✅ nodemesh is ready (%s)", time.Since(start).Round(time.Second))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %s:\n  %s", ErrNotReady, time.Since(start).Round(time.Second), strings.Join(notReady, "\n  "))
		case <-time.After(orDuration(o.Interval, 2*time.Second)):
		}
	}
}

// envoyDisabled reports whether the installed release says envoy.enabled=false.
func (c *Client) envoyDisabled() bool {
	return c.NodeProxy() == NodeProxyDisabled
}

// The node proxy a release runs.
const (
	NodeProxyEnvoy    = "envoy"
	NodeProxyDisabled = "disabled"
	NodeProxyStandIn  = "stand-in"
)

// NodeProxy says what the installed release runs as the node proxy: Envoy,
// nothing (envoy.enabled=false) or the L4 stand-in (envoy.standIn.enabled).
func (c *Client) NodeProxy() string {
	rel, err := c.Current()
	if err != nil {
		return NodeProxyEnvoy
	}
	e, _ := rel.Config["envoy"].(map[string]any)
	if enabled, ok := e["enabled"].(bool); ok && !enabled {
		return NodeProxyDisabled
	}
	si, _ := e["standIn"].(map[string]any)
	if on, _ := si["enabled"].(bool); on {
		return NodeProxyStandIn
	}
	return NodeProxyEnvoy
}

package cni

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// PluginType is the plugin's binary name and the "type" of its
// configuration.
const PluginType = "nodemesh-cni"

// SupportedVersions are the CNI spec versions the plugin speaks.
var SupportedVersions = []string{"1.0.0"}

// NetConf is the plugin's network configuration (one entry of a conflist's
// "plugins", with the list's name and cniVersion filled in by the runtime).
type NetConf struct {
	types.PluginConf
	// AgentSocket is the agent's unix socket (absolute path).
	AgentSocket string `json:"agentSocket"`
	// TimeoutSeconds bounds one call to the agent; 0 means 30 seconds.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// ParseConfig decodes and validates the network configuration the runtime
// passes on stdin. Errors are *types.Error with the spec's codes.
func ParseConfig(stdin []byte) (*NetConf, *types.Error) {
	var c NetConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration", err.Error())
	}
	if c.CNIVersion == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "network configuration has no cniVersion", "")
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "network configuration has no name", "")
	}
	if c.AgentSocket == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "network configuration has no agentSocket", "the nodemesh agent writes it; reinstall the agent")
	}
	if !filepath.IsAbs(c.AgentSocket) || strings.ContainsRune(c.AgentSocket, 0) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "agentSocket must be an absolute path", c.AgentSocket)
	}
	if c.TimeoutSeconds < 0 || c.TimeoutSeconds > 600 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "timeoutSeconds must be between 0 and 600", fmt.Sprint(c.TimeoutSeconds))
	}
	if c.RawPrevResult != nil {
		raw, err := json.Marshal(c.RawPrevResult)
		if err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "encode prevResult", err.Error())
		}
		prev, err := types100.NewResult(raw)
		if err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
		}
		c.PrevResult = prev
	}
	return &c, nil
}

// K8sArgs are the CNI_ARGS a Kubernetes runtime passes.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // names fixed by the runtimes
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

// PodRef names the pod a CNI call is for.
type PodRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
}

// ParseArgs decodes CNI_ARGS ("K=V;K2=V2"). Unknown keys are ignored, as
// runtimes pass more than any one plugin reads. requirePod makes a missing
// pod namespace or name an error (ADD needs them; DEL must work without).
func ParseArgs(args string, requirePod bool) (PodRef, *types.Error) {
	var a K8sArgs
	a.IgnoreUnknown = true
	if err := types.LoadArgs(args, &a); err != nil {
		return PodRef{}, types.NewError(types.ErrInvalidEnvironmentVariables, "parse CNI_ARGS", err.Error())
	}
	p := PodRef{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME), UID: string(a.K8S_POD_UID)}
	if requirePod && (p.Namespace == "" || p.Name == "") {
		return PodRef{}, types.NewError(types.ErrInvalidEnvironmentVariables,
			"CNI_ARGS has no K8S_POD_NAMESPACE or K8S_POD_NAME", "nodemesh-cni serves Kubernetes pods only")
	}
	for _, s := range []string{p.Namespace, p.Name, p.UID} {
		if len(s) > 253 || strings.ContainsAny(s, "/\x00") {
			return PodRef{}, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid pod reference in CNI_ARGS", s)
		}
	}
	return p, nil
}

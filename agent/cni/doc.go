// Package cni is nodemesh's CNI plugin (CNI spec 1.0) and the wire protocol
// between the plugin and the node agent.
//
// The plugin is a thin client: it parses and validates its network
// configuration and CNI_ARGS, forwards ADD, DEL and CHECK to the agent over
// the unix socket named in the configuration (agentSocket), and prints the
// agent's result or error. Everything that touches the pod's network (veth,
// addresses, routes, eBPF programs and maps, IPAM) happens in the agent, which
// serves the protocol with Serve.
//
// Bad configuration or arguments become CNI error results with the spec's
// codes (ErrDecodingFailure, ErrInvalidNetworkConfig,
// ErrInvalidEnvironmentVariables, ...), never a panic; an unreachable agent is
// ErrTryAgainLater, so the runtime retries.
//
// The package depends only on the standard library and
// github.com/containernetworking/cni, so the plugin binary stays small. It
// must not import the rest of the agent, client-go or the bpf package.
package cni

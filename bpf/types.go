//go:build linux

package bpf

import "fmt"

// Identity is a numeric security identity: every IPv4 address (or prefix) the
// agent knows maps to one; policy entries are keyed by identities.
type Identity uint32

// Reserved identities. The agent allocates pod identities from
// IdentityFirstAllocated up; everything below is reserved for nodemesh.
const (
	// IdentityAny is a wildcard usable only as PolicyKey.Peer: the entry
	// matches every peer. It is never assigned to an address.
	IdentityAny Identity = 0
	// IdentityHost is the node itself: the agent maps the node's addresses
	// (and the host side of pod veths) to it. The programs give it no special
	// treatment: traffic from the host is allowed only by policy entries.
	IdentityHost Identity = 1
	// IdentityWorld is every address that has no entry in the identity map.
	IdentityWorld Identity = 2
	// IdentityFirstAllocated is the first identity the agent may allocate.
	IdentityFirstAllocated Identity = 256
	// EndpointKeyBase marks endpoint keys (EndpointKey): keys of policy
	// entries of one endpoint, never an address's identity. Identities are
	// below it (allocated ones below 2^24, CIDR identities above).
	EndpointKeyBase Identity = 1 << 31
)

// EndpointKey is the key of the policy entries of the endpoint of host
// veth ifindex alone (the Endpoint side of PolicyKey and the value of its
// Endpoint.Identity), for a pod that policies treat differently from other
// pods of its identity. The programs never read identities from it: the
// endpoint's Identity field is only the Endpoint side of its keys.
func EndpointKey(ifindex int) Identity {
	return EndpointKeyBase | Identity(uint32(ifindex)&^uint32(EndpointKeyBase))
}

// Direction is a traffic direction relative to the pod, as in NetworkPolicy.
type Direction uint8

const (
	// Ingress is traffic entering the pod: enforced by the program at the
	// egress hook of the pod's host-side veth.
	Ingress Direction = 0
	// Egress is traffic leaving the pod: enforced by the program at the
	// ingress hook of the pod's host-side veth (with anti-spoofing).
	Egress Direction = 1
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Verdict is the value of a policy entry.
type Verdict uint32

const (
	// Allow lets a new flow through, unless a Deny entry also matches it.
	Allow Verdict = 1
	// Deny drops a new flow, whatever Allow entries also match it.
	Deny Verdict = 2
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("verdict(%d)", uint32(v))
}

// IP protocol numbers for PolicyKey.Proto.
const (
	ProtoAny  uint8 = 0
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// Reason is why the policy program passed or dropped a packet; the counters
// are kept per direction and reason. Values match enum reason in c/policy.c.
type Reason uint32

const (
	ReasonAllowedPolicy     Reason = iota // new flow matched an Allow entry
	ReasonAllowedUnenforced               // new flow, endpoint not isolated in this direction
	ReasonCTEstablished                   // conntrack hit: later packet or reply of an allowed flow
	ReasonDeniedPolicy                    // a Deny entry matched
	ReasonDeniedDefault                   // endpoint isolated and no Allow entry matched
	ReasonDropSpoofed                     // source IPv4 (or ARP sender) is not the pod's
	ReasonDropNoEndpoint                  // the interface has no endpoint entry
	ReasonDropMalformed                   // truncated frame or bad IPv4 / L4 / ARP header
	ReasonPassARP                         // ARP (from the pod: with its own sender address)
	ReasonPassFragment                    // non-first IPv4 fragment: no ports to match
	ReasonPassICMPError                   // ICMP unreachable, time exceeded, parameter problem
	ReasonDropIPv6                        // IPv6: not policed, so dropped both ways
	ReasonDropEthertype                   // VLAN-tagged, or neither IPv4, ARP nor IPv6
	ReasonCaptured                        // TCP to a {pod, port} under L7 policy handed to the node proxy (counted as Ingress, besides the hook's own reason)
	ReasonDropNoListener                  // such TCP with no socket of the proxy's to take it: dropped (Ingress)
	NumReasons                            // number of reasons; not a reason
)

// reasonSlots is REASON_MAX in c/policy.c: the counter array holds this many
// slots per direction.
const reasonSlots = 16

var reasonNames = [NumReasons]string{
	"allowed-policy", "allowed-unenforced", "ct-established",
	"denied-policy", "denied-default",
	"drop-spoofed", "drop-no-endpoint", "drop-malformed",
	"pass-arp", "pass-fragment", "pass-icmp-error",
	"ipv6-unpoliced", "drop-ethertype",
	"captured", "drop-no-listener",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint32(r))
}

// Dropped reports whether packets counted under r are dropped.
func (r Reason) Dropped() bool {
	switch r {
	case ReasonDeniedPolicy, ReasonDeniedDefault, ReasonDropSpoofed, ReasonDropNoEndpoint, ReasonDropMalformed,
		ReasonDropIPv6, ReasonDropEthertype, ReasonDropNoListener:
		return true
	}
	return false
}

// Count is a number of packets and of bytes.
type Count struct {
	Packets uint64
	Bytes   uint64
}

// PolicyCounters are the policy programs' counters summed over CPUs, indexed
// by direction and reason: c[bpf.Ingress][bpf.ReasonDeniedPolicy].
type PolicyCounters [2][NumReasons]Count

// RedirectReason is what a redirection program did; counted per reason.
// Values match enum redir_reason in c/redirect.c.
type RedirectReason uint32

const (
	RedirectRedirected        RedirectReason = iota // connect4 sent a connection to the proxy
	RedirectSkipNotTCP                              // opted-in pod, but not an IPv4 TCP socket
	RedirectSkipUID                                 // UID or GID 1337 (an Istio proxy)
	RedirectSkipHBONE                               // destination port 15008
	RedirectSkipMark                                // socket marked 0x539
	RedirectSkipNotService                          // destination not in the services map
	RedirectSkipNoConfig                            // no proxy address set
	RedirectEstablished                             // sockops recorded a redirected connection
	RedirectOrigDstAnswered                         // getsockopt(SO_ORIGINAL_DST) answered
	RedirectOrigDstMiss                             // SO_ORIGINAL_DST asked for an unknown connection
	RedirectPeernameRewritten                       // getpeername returned the Service address
	RedirectProxyEgressDenied                       // the node proxy connected for a pod its egress policy denies
	RedirectLBConnect                               // connect() to a Service frontend went to a backend (socket LB)
	RedirectLBSendmsg                               // an unconnected UDP datagram to a frontend went to a backend
	RedirectLBNoBackend                             // connect()/sendmsg() to a frontend without backend: ECONNREFUSED
	RedirectLBReplyRewritten                        // recvmsg showed a backend's UDP datagram as the frontend's
	RedirectInboundCaptured                         // the node proxy's upstream to a captured pod port went to its inbound listener
	RedirectInboundSkipMark                         // the inbound listener's own upstream (marked ProxyInboundUpstreamMark) went to the pod
	RedirectInboundRefused                          // the node proxy's upstream to a captured pod port failed: no inbound listener configured
	NumRedirectReasons                              // number of reasons; not a reason
)

var redirectReasonNames = [NumRedirectReasons]string{
	"redirected", "skip-not-tcp", "skip-uid", "skip-hbone", "skip-mark",
	"skip-not-service", "skip-no-config", "established",
	"origdst-answered", "origdst-miss", "peername-rewritten", "proxy-egress-denied",
	"lb-connect", "lb-sendmsg", "lb-no-backend", "lb-reply-rewritten",
	"inbound-captured", "inbound-skip-mark", "inbound-refused",
}

func (r RedirectReason) String() string {
	if r < NumRedirectReasons {
		return redirectReasonNames[r]
	}
	return fmt.Sprintf("redirect-reason(%d)", uint32(r))
}

// RedirectCounters are the redirection programs' counters summed over CPUs,
// indexed by reason.
type RedirectCounters [NumRedirectReasons]uint64

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The policy maps and the policy decision, shared by the TC programs
 * (policy.c) and the redirection programs (redirect.c, for the node proxy's
 * upstream connections). Both objects define these maps with the same
 * names and layouts, so that loaded with the same pin directory they share
 * them. */
#pragma once

#include "common.h"

/* Reserved identities. 0 is the wildcard in policy keys and never assigned. */
#define IDENTITY_ANY 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2

/* Direction relative to the pod, as in NetworkPolicy. */
#define DIR_INGRESS 0 /* into the pod: host veth egress hook */
#define DIR_EGRESS 1  /* out of the pod: host veth ingress hook */

/* endpoint.flags: the pod is selected by some policy in that direction, so
 * whatever no allow entry matches is dropped. */
#define EP_F_ENFORCE_INGRESS (1 << 0)
#define EP_F_ENFORCE_EGRESS (1 << 1)

#define VERDICT_ALLOW 1
#define VERDICT_DENY 2

enum reason {
	REASON_ALLOWED_POLICY = 0,   /* new flow matched an allow entry */
	REASON_ALLOWED_UNENFORCED,   /* new flow, endpoint not isolated in this direction */
	REASON_CT_ESTABLISHED,       /* conntrack hit: later packet or reply of an allowed flow */
	REASON_DENIED_POLICY,        /* a deny entry matched */
	REASON_DENIED_DEFAULT,       /* endpoint isolated and no allow entry matched */
	REASON_DROP_SPOOFED,         /* source IPv4 (or ARP sender) is not the pod's */
	REASON_DROP_NO_ENDPOINT,     /* the interface has no endpoint entry */
	REASON_DROP_MALFORMED,       /* truncated frame or bad IPv4/L4/ARP header */
	REASON_PASS_ARP,             /* ARP (from the pod: with the pod's own sender address) */
	REASON_PASS_FRAGMENT,        /* non-first IPv4 fragment (no ports to match) */
	REASON_PASS_ICMP_ERROR,      /* ICMP unreachable / time exceeded / parameter problem */
	REASON_DROP_IPV6,            /* IPv6: not policed yet, so never passed */
	REASON_DROP_ETHERTYPE,       /* VLAN-tagged frame, or neither IPv4, ARP nor IPv6 */
	REASON_CAPTURED,             /* TCP to a {pod, port} under L7 policy handed to the node proxy */
	REASON_DROP_NO_LISTENER,     /* such TCP, but no socket of the proxy's to hand it to */
	REASON_MAX = 16,
};

struct endpoint {
	__be32 ip;          /* the pod's IPv4 address */
	__u32 identity;     /* the pod's identity: the local side of policy keys */
	__u32 flags;        /* EP_F_* */
	__u32 policy_rev;   /* bumped by the agent to re-check established flows */
};

struct ipcache_key {
	__u32 prefixlen;
	__be32 addr;
};

struct policy_key {
	__u32 ep_identity;   /* the endpoint's identity */
	__u32 peer_identity; /* remote identity, or IDENTITY_ANY */
	__u16 port;          /* destination port of the flow, host order; 0 = any */
	__u8 proto;          /* IP protocol; 0 = any */
	__u8 dir;            /* DIR_* */
};

/* A block of destination ports in the port range trie: NetworkPolicy's
 * endPort ranges are stored exactly as prefix-aligned power-of-two blocks of
 * ports (the agent decomposes [port, endPort]), so that a range of any width
 * costs at most 2 x 15 entries and one lookup per peer. The first 80 bits
 * (endpoint, peer, direction, protocol) are always fixed; the port is in
 * network order so that its leading bits are the trie's next bits. Single
 * ports and "every port" stay in the nm_policy hash. */
struct policy_range_key {
	__u32 prefixlen;     /* POLICY_RANGE_FIXED_BITS + leading port bits */
	__u32 ep_identity;   /* as policy_key */
	__u32 peer_identity; /* as policy_key */
	__u8 dir;
	__u8 proto;
	__be16 port;         /* first port of the block, network order */
};

#define POLICY_RANGE_FIXED_BITS 80

/* A local pod by address: its endpoint and its network namespace's cookie
 * (what the redirection programs need to tell the node proxy's sockets bound
 * to the pod's address from the pod's own). */
struct local_ep {
	struct endpoint ep;
	__u64 netns_cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nm_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, __u32); /* VERDICT_* */
	__uint(max_entries, 65536);
} nm_policy SEC(".maps");

/* The longest block that contains the port decides, so the agent never
 * stores an allow block inside a deny block of the same endpoint, peer,
 * direction and protocol (it would hide the deny): deny still wins. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_range_key);
	__type(value, __u32); /* VERDICT_* */
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nm_policy_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32); /* the pod's IPv4 address */
	__type(value, struct local_ep);
	__uint(max_entries, 1024);
} nm_local_eps SEC(".maps");

/* Inbound capture (docs/design/datapath.md, "Inbound capture"): TCP to a
 * {local pod, port} under L7 (HTTP) AuthorizationPolicy is handed to the
 * node proxy's inbound listener, which enforces it and connects on to the
 * pod with the client's address. Keyed by the destination; the agent writes
 * only this node's pods. The value (flags) is not read yet. The TC programs
 * capture at tc ingress (from_pod, from_uplink); the redirection programs
 * send the node proxy's own upstream connections to these ports to the
 * inbound listener at connect() (redirect.c, inbound4). */
struct inbound_key {
	__be32 addr;  /* the pod's IPv4 address */
	__be16 port;  /* the pod's port, network order */
	__u8 proto;   /* IPPROTO_TCP: nothing else is captured */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct inbound_key);
	__type(value, __u32); /* flags, none yet */
	__uint(max_entries, 65536);
} nm_inbound SEC(".maps");

/* The proxy's inbound listener. Unset (port 0) while nm_inbound has
 * entries: their traffic is dropped, never delivered around the proxy. */
struct inbound_cfg {
	__u32 pkt_mark;  /* set on a captured packet: policy routing delivers it locally */
	__u32 sock_mark; /* SO_MARK of the proxy's inbound listener (its accepted sockets inherit it) */
	__u16 port;      /* the listener's port, host order; 0: not configured */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct inbound_cfg);
	__uint(max_entries, 1);
} nm_inbound_cfg SEC(".maps");

static __always_inline __u32 lookup_identity(__be32 addr)
{
	struct ipcache_key k = { .prefixlen = 32, .addr = addr };
	__u32 *id = bpf_map_lookup_elem(&nm_ipcache, &k);

	if (!id || *id == IDENTITY_ANY)
		return IDENTITY_WORLD;
	return *id;
}

/* One policy lookup; returns the verdict stored for the key, or 0. */
static __always_inline __u32 policy_lookup(__u32 ep, __u32 peer, __u16 port, __u8 proto, __u8 dir)
{
	struct policy_key k = {
		.ep_identity = ep,
		.peer_identity = peer,
		.port = port,
		.proto = proto,
		.dir = dir,
	};
	__u32 *v = bpf_map_lookup_elem(&nm_policy, &k);

	return v ? *v : 0;
}

/* The verdict of the longest port block containing port, or 0. */
static __always_inline __u32 range_lookup(__u32 ep, __u32 peer, __u16 port, __u8 proto, __u8 dir)
{
	struct policy_range_key k = {
		.prefixlen = POLICY_RANGE_FIXED_BITS + 16,
		.ep_identity = ep,
		.peer_identity = peer,
		.dir = dir,
		.proto = proto,
		.port = bpf_htons(port),
	};
	__u32 *v = bpf_map_lookup_elem(&nm_policy_ranges, &k);

	return v ? *v : 0;
}

/*
 * The policy decision for a new flow. Every key that could match is looked up
 * (peer or any peer) x (port+proto, port range+proto, any port, any proto),
 * because a deny in a wider entry must beat an allow in a narrower one.
 */
static __always_inline __u32 decide(const struct endpoint *ep, __u8 dir, __u32 peer, __u16 port, __u8 proto)
{
	__u32 peers[2] = { peer, IDENTITY_ANY };
	int allowed = 0;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		__u32 v;

		if (port) {
			v = policy_lookup(ep->identity, peers[i], port, proto, dir);
			if (v == VERDICT_DENY)
				return REASON_DENIED_POLICY;
			allowed |= v == VERDICT_ALLOW;
			v = range_lookup(ep->identity, peers[i], port, proto, dir);
			if (v == VERDICT_DENY)
				return REASON_DENIED_POLICY;
			allowed |= v == VERDICT_ALLOW;
		}
		v = policy_lookup(ep->identity, peers[i], 0, proto, dir);
		if (v == VERDICT_DENY)
			return REASON_DENIED_POLICY;
		allowed |= v == VERDICT_ALLOW;
		if (proto) {
			v = policy_lookup(ep->identity, peers[i], 0, 0, dir);
			if (v == VERDICT_DENY)
				return REASON_DENIED_POLICY;
			allowed |= v == VERDICT_ALLOW;
		}
	}
	if (allowed)
		return REASON_ALLOWED_POLICY;
	if (ep->flags & (dir == DIR_INGRESS ? EP_F_ENFORCE_INGRESS : EP_F_ENFORCE_EGRESS))
		return REASON_DENIED_DEFAULT;
	return REASON_ALLOWED_UNENFORCED;
}

static __always_inline int is_allowed(__u32 reason)
{
	return reason == REASON_ALLOWED_POLICY || reason == REASON_ALLOWED_UNENFORCED;
}

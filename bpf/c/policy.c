// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Identity-based L3/L4 policy for a pod's host-side veth.
 *
 * from_pod runs at the tcx ingress hook of the host-side veth (packets leaving
 * the pod: the pod's egress direction); to_pod runs at the tcx egress hook
 * (packets entering the pod: its ingress direction). Verdict order for an
 * IPv4 packet, see docs/design/datapath.md:
 *
 *   VLAN-tagged or an ethertype other than IPv4 and ARP (IPv6 included: it
 *   is not policed, so it must not pass) -> drop;
 *   malformed -> drop; no endpoint for the interface -> drop;
 *   from the pod with a source that is not the pod's -> drop (spoofed);
 *   non-first fragment -> pass; ICMP error -> pass;
 *   conntrack entry (not for a TCP SYN): revision changed -> the flow's
 *   origin direction is decided again (denied: the entry becomes a revoked
 *   tombstone); entry carries the packet's direction -> pass; else a policy
 *   decision in the packet's own direction that never re-opens the flow;
 *   otherwise a policy decision: any matching deny -> drop; any matching
 *   allow -> pass and create a conntrack entry; endpoint isolated in this
 *   direction -> drop; else pass and create a conntrack entry. A TCP packet
 *   other than a SYN creates a mid-stream entry that carries its own
 *   direction only;
 *   from_pod, passed: a reply handed to a node proxy's upstream socket goes
 *   there; else TCP to a {pod, port} in nm_inbound is captured into the node
 *   proxy's inbound listener, or dropped when no socket of the proxy's can
 *   take it (from_uplink does the same capture).
 *
 * Passing returns TC_ACT_UNSPEC (TCX_NEXT) so that later programs in the tcx
 * chain or later cls_bpf filters still run; dropping returns TC_ACT_SHOT.
 */
#include "common.h"
#include "policy_maps.h"

#include <stddef.h>

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

char __license[] SEC("license") = "Dual BSD/GPL";



/* Conntrack lifetimes, refreshed by traffic. Set before load to change them. */
volatile const __u64 ct_lifetime_tcp_ns = 21600ULL * 1000000000ULL; /* 6 h, as Cilium */
volatile const __u64 ct_lifetime_other_ns = 60ULL * 1000000000ULL;
#define CT_REFRESH_NS 1000000000ULL /* write the expiry back at most once a second */




struct ct_key {
	__u32 ifindex;   /* host-side veth of the endpoint */
	__be32 local;    /* address on the pod side */
	__be32 remote;   /* address of the peer */
	__u16 lport;     /* host order; ICMP echo: the identifier */
	__u16 rport;
	__u8 proto;
	__u8 pad[3];
};

struct ct_entry {
	__u64 expires;     /* bpf_ktime_get_coarse_ns() deadline */
	__u32 policy_rev;  /* endpoint revision the flow was last allowed at */
	__u8 origin;       /* DIR_* of the packet that opened the flow */
	__u8 flags;        /* CT_F_*; 0: both directions pass (opened flow) */
	__u8 local_origin; /* opened towards the pod by a socket of the node (the node proxy, kubelet) */
	__u8 pad;
};

/* ct_entry.flags. An entry without flags carries its flow both ways: the
 * origin's packets and the replies. */
#define CT_F_REVOKED (1 << 0)    /* origin's policy re-decided as denied: tombstone, carries nothing */
#define CT_F_MIDSTREAM (1 << 1)  /* TCP flow picked up without its SYN: origin unknown */
#define CT_F_OK_INGRESS (1 << 2) /* mid-stream: packets into the pod allowed at policy_rev */
#define CT_F_OK_EGRESS (1 << 3)  /* mid-stream: packets out of the pod allowed at policy_rev */

/* linux/if_arp.h and linux/icmp.h drag in libc headers, so the few things
 * needed from them are spelled out. */
#define IP_OFFSET 0x1fff /* fragment offset bits of frag_off */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
struct icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ARPHRD_ETHER 1
struct arp_eth_ipv4 {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 ar_sha[ETH_ALEN];
	__be32 ar_sip;
	__u8 ar_tha[ETH_ALEN];
	__be32 ar_tip;
} __attribute__((packed));

struct count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex of the host-side veth */
	__type(value, struct endpoint);
	__uint(max_entries, 1024);
} nm_endpoints SEC(".maps");



struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 131072);
} nm_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* dir * REASON_MAX + reason */
	__type(value, struct count);
	__uint(max_entries, 2 * REASON_MAX);
} nm_pol_stats SEC(".maps");

/* The node-proxy return path (docs/design/datapath.md, "The node proxy
 * hop"). The node proxy connects to a pod on behalf of a local client with
 * the client's address as its source (Envoy original_src: a transparent
 * socket in the node's netns bound to the client's address), so that the
 * destination's policy sees the client's identity. The replies are
 * addressed to the client; they must reach that socket, not the client pod:
 * a socket of the node's netns that owns the reply's tuple is assigned to
 * the packet, whose mark then makes policy routing deliver it locally. */
struct proxy_cfg {
	__be32 pod_net;  /* this node's pod CIDR: replies to local pods only */
	__be32 pod_mask;
	__u32 mark;      /* set on a reply handed to a proxy socket */
	__u32 enabled;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct proxy_cfg);
	__uint(max_entries, 1);
} nm_proxy_cfg SEC(".maps");

/* nm_inbound and nm_inbound_cfg are in policy_maps.h: the redirection
 * programs read them too (the node proxy's upstream connections to a pod
 * of this node, cgroup/connect4). */

struct flow {
	__be32 saddr, daddr;
	__u16 sport, dport; /* host order */
	__u8 proto;
	__u8 syn_only;      /* TCP SYN without ACK: always a new flow */
	__u8 handed;        /* proxy_return gave the packet to a proxy socket */
};

static __always_inline int account(struct __sk_buff *skb, __u8 dir, __u32 reason)
{
	__u32 idx = (__u32)dir * REASON_MAX + reason;
	struct count *c = bpf_map_lookup_elem(&nm_pol_stats, &idx);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	switch (reason) {
	case REASON_DENIED_POLICY:
	case REASON_DENIED_DEFAULT:
	case REASON_DROP_SPOOFED:
	case REASON_DROP_NO_ENDPOINT:
	case REASON_DROP_MALFORMED:
	case REASON_DROP_IPV6:
	case REASON_DROP_ETHERTYPE:
	case REASON_DROP_NO_LISTENER:
		return TC_ACT_SHOT;
	}
	return TC_ACT_UNSPEC;
}




/* Ports only count for protocols that have them; ICMP echo identifiers are
 * used for conntrack but never matched against policy ports. */
static __always_inline __u16 policy_port(__u8 proto, __u16 dport)
{
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		return dport;
	}
	return 0;
}

static __always_inline __u8 ct_dir_ok(__u8 dir)
{
	return dir == DIR_EGRESS ? CT_F_OK_EGRESS : CT_F_OK_INGRESS;
}

/* Whether the entry carries a packet in direction dir without a decision. */
static __always_inline int ct_passes(const struct ct_entry *ce, __u8 dir)
{
	if (ce->flags & CT_F_REVOKED)
		return 0;
	if (ce->flags & CT_F_MIDSTREAM)
		return (ce->flags & ct_dir_ok(dir)) != 0;
	return 1;
}

static __always_inline __u64 ct_lifetime(__u8 proto)
{
	return proto == IPPROTO_TCP ? ct_lifetime_tcp_ns : ct_lifetime_other_ns;
}

/* ARP from the pod must be Ethernet/IPv4 ARP naming the pod's address (or
 * 0.0.0.0 for probes): nothing else on a pod's veth needs ARP. ARP into the
 * pod comes from the node and passes. */
static __always_inline int check_arp(struct __sk_buff *skb, void *l3, void *data_end, __u8 dir)
{
	struct arp_eth_ipv4 *arp = l3;

	if (dir != DIR_EGRESS)
		return account(skb, dir, REASON_PASS_ARP);
	if ((void *)(arp + 1) > data_end)
		return account(skb, dir, REASON_DROP_MALFORMED);
	if (arp->ar_hrd != bpf_htons(ARPHRD_ETHER) || arp->ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->ar_hln != ETH_ALEN || arp->ar_pln != 4)
		return account(skb, dir, REASON_DROP_MALFORMED);

	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&nm_endpoints, &ifindex);

	if (!ep)
		return account(skb, dir, REASON_PASS_ARP);
	if (arp->ar_sip != 0 && arp->ar_sip != ep->ip)
		return account(skb, dir, REASON_DROP_SPOOFED);
	return account(skb, dir, REASON_PASS_ARP);
}

static __always_inline int parse_l4(struct flow *f, struct iphdr *ip, void *data_end)
{
	__u32 ihl = (ip->ihl & 0xf) * 4;
	void *l4 = (void *)ip + ihl;

	switch (f->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return -1;
		f->sport = bpf_ntohs(th->source);
		f->dport = bpf_ntohs(th->dest);
		f->syn_only = th->syn && !th->ack;
		return 0;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* SCTP's common header starts with the two ports, as UDP's does. */
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return -1;
		f->sport = bpf_ntohs(uh->source);
		f->dport = bpf_ntohs(uh->dest);
		return 0;
	}
	case IPPROTO_ICMP: {
		struct icmp_echo *ih = l4;

		if ((void *)(ih + 1) > data_end)
			return -1;
		switch (ih->type) {
		case ICMP_DEST_UNREACH:
		case ICMP_TIME_EXCEEDED:
		case ICMP_PARAMETERPROB:
			return 1;
		case ICMP_ECHO:
		case ICMP_ECHOREPLY:
			/* request and reply share the identifier: both ports */
			f->sport = f->dport = bpf_ntohs(ih->id);
			return 0;
		}
		return 0;
	}
	}
	return 0;
}

/* The socket of the node's network namespace that owns the tuple of a TCP
 * packet, as if the packet arrived for it (NULL if none, or a listener).
 * Release it with bpf_sk_release. */
static __always_inline struct bpf_sock *owning_socket(struct __sk_buff *skb, const struct flow *f)
{
	struct bpf_sock_tuple t = {};

	t.ipv4.saddr = f->saddr;
	t.ipv4.daddr = f->daddr;
	t.ipv4.sport = bpf_htons(f->sport);
	t.ipv4.dport = bpf_htons(f->dport);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);

	if (sk && sk->state == BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		return NULL;
	}
	return sk;
}

/* Hands a TCP packet to the node-netns socket that owns its tuple, if there
 * is one (a proxy's transparent upstream socket). any_dst: the packet is a
 * reply of a flow a socket of the node opened towards a local pod, so its
 * destination may be a pod of another node (the inbound proxy connects with
 * a remote client's address); otherwise only packets to this node's pods
 * are looked up. */
static __always_inline void proxy_return(struct __sk_buff *skb, struct flow *f, int any_dst)
{
	__u32 zero = 0;
	struct proxy_cfg *cfg = bpf_map_lookup_elem(&nm_proxy_cfg, &zero);

	if (!cfg || !cfg->enabled || f->proto != IPPROTO_TCP)
		return;
	if (!any_dst && (f->daddr & cfg->pod_mask) != cfg->pod_net)
		return;

	struct bpf_sock *sk = owning_socket(skb, f);

	if (!sk)
		return;
	if (bpf_sk_assign(skb, sk, 0) == 0) {
		skb->mark = cfg->mark;
		f->handed = 1;
	}
	bpf_sk_release(sk);
}

#define LOOPBACK_IFINDEX 1 /* lo, in every network namespace */

/* A reply the node itself sends to a connection the node proxy opened from
 * a pod's address to a server on the node (a host-network endpoint): the
 * route to the pod's address sends it towards the pod, but it belongs to
 * the proxy's socket. It goes back in through lo, marked, so that policy
 * routing delivers it locally. Returns -1 when the packet is not such a
 * reply. */
static __always_inline int proxy_local_return(struct __sk_buff *skb, const struct flow *f)
{
	__u32 zero = 0;
	struct proxy_cfg *cfg = bpf_map_lookup_elem(&nm_proxy_cfg, &zero);

	if (!cfg || !cfg->enabled)
		return -1;

	struct bpf_sock *sk = owning_socket(skb, f);

	if (!sk)
		return -1;
	bpf_sk_release(sk);
	/* lo's address is all zeroes: a frame for another MAC would be
	 * PACKET_OTHERHOST there, which IP drops. */
	__u8 lo_mac[ETH_ALEN] = {};

	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), lo_mac, ETH_ALEN, 0) < 0)
		return -1;
	skb->mark = cfg->mark;
	return bpf_redirect(LOOPBACK_IFINDEX, BPF_F_INGRESS);
}

/* Whether sk, found for a captured packet, is the node proxy's: a socket
 * carrying the proxy's socket mark — its listener, or a connection the
 * listener accepted (which inherits the mark) — or a request socket (a
 * handshake in progress) of such a listener. SO_MARK needs CAP_NET_ADMIN
 * (or CAP_NET_RAW), so a process of the node or of a host-network pod that
 * binds the inbound port, or a pod's address with IP_FREEBIND, gets
 * nothing. */
static __always_inline int proxy_owned(struct bpf_sock *sk, const struct inbound_cfg *cfg)
{
	struct bpf_sock *owner;

	if (sk->state == BPF_TCP_NEW_SYN_RECV)
		owner = bpf_get_listener_sock(sk); /* no reference to release */
	else
		owner = bpf_sk_fullsock(sk);
	return owner && owner->mark == cfg->sock_mark;
}

/* Inbound capture of a TCP packet already allowed by the hook's own checks.
 * Returns -1 when the packet is not captured, else the tc verdict: handed
 * to the proxy's socket for its exact tuple (the connection the proxy
 * accepted) or to the proxy's listener, and marked for policy routing to
 * deliver it locally; dropped when there is no such socket. */
static __always_inline int inbound_capture(struct __sk_buff *skb, const struct flow *f)
{
	if (f->proto != IPPROTO_TCP)
		return -1;

	struct inbound_key k = { .addr = f->daddr, .port = bpf_htons(f->dport), .proto = IPPROTO_TCP };

	if (!bpf_map_lookup_elem(&nm_inbound, &k))
		return -1;

	__u32 zero = 0;
	struct inbound_cfg *cfg = bpf_map_lookup_elem(&nm_inbound_cfg, &zero);

	/* Not configured: the pod is under L7 policy that nothing enforces. */
	if (!cfg || !cfg->port || !cfg->pkt_mark || !cfg->sock_mark)
		return account(skb, DIR_INGRESS, REASON_DROP_NO_LISTENER);

	struct bpf_sock_tuple t = {};

	t.ipv4.saddr = f->saddr;
	t.ipv4.daddr = f->daddr;
	t.ipv4.sport = bpf_htons(f->sport);
	t.ipv4.dport = bpf_htons(f->dport);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);

	/* The exact tuple finds a listener of the node on the pod's port (never
	 * the proxy's) when no connection owns it, and a TIME_WAIT socket of an
	 * earlier connection on the same ports, which would pass a new SYN to a
	 * listener on the pod's port: both are left for the proxy's listener. */
	if (sk && (sk->state == BPF_TCP_LISTEN || sk->state == BPF_TCP_TIME_WAIT)) {
		bpf_sk_release(sk);
		sk = NULL;
	}
	if (!sk) {
		t.ipv4.dport = bpf_htons(cfg->port);
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return account(skb, DIR_INGRESS, REASON_DROP_NO_LISTENER);
		if (sk->state != BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			return account(skb, DIR_INGRESS, REASON_DROP_NO_LISTENER);
		}
	}
	if (!proxy_owned(sk, cfg)) {
		bpf_sk_release(sk);
		return account(skb, DIR_INGRESS, REASON_DROP_NO_LISTENER);
	}
	long err = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (err)
		return account(skb, DIR_INGRESS, REASON_DROP_NO_LISTENER);
	skb->mark = cfg->pkt_mark;
	return account(skb, DIR_INGRESS, REASON_CAPTURED);
}

/* The policy verdict; f is filled in once the packet is parsed (proto stays 0
 * when it is not, as for ARP and non-first fragments). */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return account(skb, dir, REASON_DROP_MALFORMED);
	/* Only IPv4 is policed (and ARP checked), so only they pass: what the
	 * parser below does not understand must not reach the pod or the node
	 * unpoliced. A VLAN tag is the way around a parser that reads the
	 * outer ethertype only: the kernel moves the first tag of a frame from
	 * the pod into skb metadata before this hook (vlan_present), and a
	 * frame tagged twice with VLAN 0 shows this program an 802.1Q ethertype
	 * yet is delivered to the node's IP stack once both tags are stripped
	 * after it. Pods have no VLANs: every tagged frame is dropped. */
	if (skb->vlan_present)
		return account(skb, dir, REASON_DROP_ETHERTYPE);
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		break;
	case bpf_htons(ETH_P_ARP):
		return check_arp(skb, eth + 1, data_end, dir);
	case bpf_htons(ETH_P_IPV6):
		/* Not policed (no IPv6 identities, policy or conntrack yet):
		 * a pod isolated by policy would be reachable, and could
		 * reach out, over IPv6 (link-local addresses exist on every
		 * veth where IPv6 is enabled). The agent also disables IPv6 on
		 * pods' veths; this holds wherever it was not. */
		return account(skb, dir, REASON_DROP_IPV6);
	default:
		return account(skb, dir, REASON_DROP_ETHERTYPE);
	}

	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
		return account(skb, dir, REASON_DROP_MALFORMED);

	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&nm_endpoints, &ifindex);

	if (!ep)
		return account(skb, dir, REASON_DROP_NO_ENDPOINT);
	if (dir == DIR_EGRESS && ip->saddr != ep->ip)
		return account(skb, dir, REASON_DROP_SPOOFED);
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return account(skb, dir, REASON_PASS_FRAGMENT);

	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->proto = ip->protocol;
	int rc = parse_l4(f, ip, data_end);

	if (rc < 0)
		return account(skb, dir, REASON_DROP_MALFORMED);
	if (rc > 0)
		return account(skb, dir, REASON_PASS_ICMP_ERROR);

	/* Conntrack from the endpoint's point of view: one key serves both the
	 * packets of a flow and its replies. */
	struct ct_key ck = {
		.ifindex = ifindex,
		.proto = f->proto,
	};
	if (dir == DIR_EGRESS) {
		ck.local = f->saddr;
		ck.remote = f->daddr;
		ck.lport = f->sport;
		ck.rport = f->dport;
	} else {
		ck.local = f->daddr;
		ck.remote = f->saddr;
		ck.lport = f->dport;
		ck.rport = f->sport;
	}

	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 lifetime = ct_lifetime(f->proto);
	__u32 peer = lookup_identity(ck.remote);
	__u32 reason = REASON_MAX; /* not decided yet */

	if (dir == DIR_INGRESS && peer == IDENTITY_HOST && f->proto == IPPROTO_TCP) {
		int rc = proxy_local_return(skb, f);

		if (rc >= 0)
			return rc;
	}

	/* A SYN always opens a new flow, so a reused tuple is checked again. */
	struct ct_entry *ce = f->syn_only ? NULL : bpf_map_lookup_elem(&nm_ct, &ck);

	if (ce && ce->expires > now) {
		__u8 origin = ce->origin == DIR_EGRESS ? DIR_EGRESS : DIR_INGRESS;

		if (ce->policy_rev != ep->policy_rev) {
			if (ce->flags & CT_F_MIDSTREAM) {
				/* No origin to re-check: each direction is decided
				 * again by its own policy. */
				ce->flags = CT_F_MIDSTREAM;
			} else {
				/* Policy changed since the flow was allowed: decide
				 * again for the flow as it was opened (its origin
				 * direction and its dport), whichever direction this
				 * packet goes. Denied: the entry becomes a tombstone
				 * so that no packet of the flow re-opens it. */
				__u16 odport = origin == DIR_EGRESS ? ck.rport : ck.lport;

				reason = decide(ep, origin, peer, policy_port(f->proto, odport), f->proto);
				ce->flags = is_allowed(reason) ? 0 : CT_F_REVOKED;
				if (dir != origin)
					reason = REASON_MAX;
			}
			ce->policy_rev = ep->policy_rev;
		}
		if (ce->expires < now + lifetime - CT_REFRESH_NS)
			ce->expires = now + lifetime;
		if (ct_passes(ce, dir)) {
			/* A reply of a flow a socket of the node opened towards
			 * the pod: the node proxy's, perhaps. */
			if (dir == DIR_EGRESS && origin == DIR_INGRESS && ce->local_origin)
				proxy_return(skb, f, 1);
			return account(skb, dir, REASON_CT_ESTABLISHED);
		}

		/* Not carried by the entry (revoked flow, or a mid-stream flow
		 * in a direction not allowed yet): decided in the packet's own
		 * direction, as a packet, never as the opening of a flow — so a
		 * reply of a revoked flow cannot legitimise it again. */
		if (reason == REASON_MAX)
			reason = decide(ep, dir, peer, policy_port(f->proto, f->dport), f->proto);
		if (is_allowed(reason)) {
			if (ce->flags & CT_F_MIDSTREAM)
				ce->flags |= ct_dir_ok(dir);
			else if (dir == origin)
				ce->flags = 0; /* the origin is allowed again */
		}
		return account(skb, dir, reason);
	}

	reason = decide(ep, dir, peer, policy_port(f->proto, f->dport), f->proto);
	if (is_allowed(reason)) {
		struct ct_entry ne = {
			.expires = now + lifetime,
			.policy_rev = ep->policy_rev,
			.origin = dir,
			/* Sent by a socket of the node, not forwarded: only such a
			 * flow's replies may belong to the node proxy. */
			.local_origin = dir == DIR_INGRESS && skb->sk,
		};
		/* TCP flows are opened by a SYN. A TCP packet without one and
		 * without an entry belongs to a flow whose origin is unknown (it
		 * predates the agent, or its entry was flushed, evicted or
		 * expired): the entry carries this direction only, the other
		 * one needs its own policy. Otherwise the reply of a revoked
		 * flow would re-open it in the reply's direction. */
		if (f->proto == IPPROTO_TCP && !f->syn_only)
			ne.flags = CT_F_MIDSTREAM | ct_dir_ok(dir);
		bpf_map_update_elem(&nm_ct, &ck, &ne, BPF_ANY);
	}
	return account(skb, dir, reason);
}

/* Leaving a pod: its egress policy (and anti-spoofing) first, then the
 * inbound capture of the destination, unless the packet is a reply handed
 * to one of the proxy's upstream sockets. */
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct flow f = {};
	int rc = handle(skb, DIR_EGRESS, &f);

	if (rc != TC_ACT_UNSPEC || f.handed)
		return rc;

	int c = inbound_capture(skb, &f);

	return c < 0 ? rc : c;
}

/* Entering a pod. No capture here: sk_assign is for ingress hooks only, and
 * what reaches this hook without passing from_pod or from_uplink comes from
 * the node itself: the inbound listener's own upstream connections (to the
 * pod, as they must), the node's processes with a node address (L4 policy
 * only). The node proxy's outbound upstream to a captured pod port was sent
 * to the inbound listener at connect() (redirect.c, inbound4). */
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct flow f = {};

	return handle(skb, DIR_INGRESS, &f);
}

/* At the ingress of the node's uplinks (Ethernet): connections from other
 * nodes to a {pod, port} under L7 policy go to the node proxy (inbound
 * capture); replies from pods on other nodes to a connection the node proxy
 * opened for a local client go to its socket. No policy here: the
 * destination pod's to_pod polices what goes on to it. */
SEC("tc")
int from_uplink(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;

	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5 || ip->protocol != IPPROTO_TCP ||
	    (ip->frag_off & bpf_htons(IP_OFFSET)))
		return TC_ACT_UNSPEC;

	struct flow f = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.proto = ip->protocol,
	};

	if (parse_l4(&f, ip, data_end) != 0)
		return TC_ACT_UNSPEC;

	int c = inbound_capture(skb, &f);

	if (c >= 0)
		return c;
	proxy_return(skb, &f, 0);
	return TC_ACT_UNSPEC;
}

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Masquerading of pod traffic leaving the cluster, on the node's uplinks
 * (docs/design/datapath.md, "Masquerading").
 *
 * masq_out runs at the tcx egress hook of an uplink: an IPv4 packet whose
 * source is in this node's pod CIDR and whose destination is not in
 * nm_masq_skip (pod CIDRs, node addresses, the user's exclusions,
 * link-local) leaves with the uplink's address (nm_masq_addrs) as source
 * and a port of the NAT range (TCP, UDP; ICMP echo: the identifier).
 * Everything else passes untouched.
 *
 * masq_in runs at the tcx ingress hook of an uplink, before from_uplink
 * (policy.c): a TCP or UDP packet or ICMP echo reply addressed to the
 * uplink's address whose tuple matches a live entry of nm_masq_in gets the
 * pod's address and port back. Nothing else is changed: what matches no
 * live entry goes to the node's own stack as it came, never to a pod. A
 * packet addressed to a pod itself (a network that routes pod CIDRs to the
 * nodes) is recorded in nm_masq_direct, so that the pod's replies are not
 * masqueraded: masquerading is for flows pods open.
 *
 * No nf_conntrack: the two LRU maps are the translation state. Passing
 * returns TC_ACT_UNSPEC (TCX_NEXT); dropping returns TC_ACT_SHOT.
 */
#include "common.h"

#include <stddef.h>

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

char __license[] SEC("license") = "Dual BSD/GPL";

/* Lifetimes of a translation, refreshed by its packets in both directions:
 * as Cilium's conntrack (and so its NAT) entries. A TCP flow that saw a FIN
 * or RST keeps its entry for masq_lifetime_closing_ns after its last packet
 * (a TIME_WAIT-like grace for the last ACKs and retransmissions). */
volatile const __u64 masq_lifetime_tcp_ns = 21600ULL * 1000000000ULL; /* 6 h */
volatile const __u64 masq_lifetime_other_ns = 60ULL * 1000000000ULL;
volatile const __u64 masq_lifetime_closing_ns = 10ULL * 1000000000ULL;
#define MASQ_REFRESH_NS 1000000000ULL /* write the expiry back at most once a second */

/* Attempts at finding a free NAT port before the packet is dropped. */
#define MASQ_PORT_TRIES 32

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

struct masq_cfg {
	__be32 pod_net;  /* this node's pod CIDR: the sources masqueraded */
	__be32 pod_mask;
	__u16 port_min;  /* NAT port range, host order, inclusive */
	__u16 port_max;
	__u32 enabled;
};

/* One direction's tuple, as the packet carries it (ports host order; ICMP
 * echo: the identifier in the pod's port slot, 0 in the remote's). */
struct masq_key {
	__be32 saddr;
	__be32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct masq_entry {
	__u64 expires;   /* bpf_ktime_get_coarse_ns() deadline */
	__be32 addr;     /* out: the NAT address; in: the pod's address */
	__u16 port;      /* out: the NAT port; in: the pod's port */
	__u8 closing;    /* TCP FIN or RST seen */
	__u8 pad;
};

struct lpm_v4_key {
	__u32 prefixlen;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct masq_cfg);
} nm_masq_cfg SEC(".maps");

/* Uplink ifindex -> its IPv4 address (the masquerading address). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __be32);
} nm_masq_addrs SEC(".maps");

/* Destinations never masqueraded. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} nm_masq_skip SEC(".maps");

/* Pod's tuple (pod -> remote) -> NAT address and port. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct masq_key);
	__type(value, struct masq_entry);
} nm_masq_out SEC(".maps");

/* Reply tuple (remote -> NAT address and port) -> pod address and port.
 * Its keys are the allocation: a NAT port is taken for a remote while a
 * live entry holds it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct masq_key);
	__type(value, struct masq_entry);
} nm_masq_in SEC(".maps");

/* Flows a remote outside the node opened to one of its pods, untranslated
 * (the network routes the pod CIDR to the node): keyed as the pod's
 * replies leave (pod -> remote), so that masq_out lets them go with the
 * pod's address — as Cilium's SNAT leaves replies of connections opened
 * from outside alone. Value: expiry, the remote's address and port. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct masq_key);
	__type(value, struct masq_entry);
} nm_masq_direct SEC(".maps");

enum masq_reason {
	MASQ_SNAT = 0,       /* out: translated */
	MASQ_RNAT,           /* in: translated back */
	MASQ_EXCLUDED,       /* out: pod source, destination not masqueraded */
	MASQ_IN_NO_ENTRY,    /* in: to the NAT address, no live entry: passed to the host untouched */
	MASQ_DROP_FRAGMENT,  /* out: a fragment that would need masquerading */
	MASQ_DROP_PROTO,     /* out: neither TCP, UDP nor ICMP echo request */
	MASQ_DROP_NO_PORT,   /* out: no free NAT port for that remote */
	MASQ_DROP_NO_ADDR,   /* out: the uplink has no masquerading address */
	MASQ_DROP_MALFORMED, /* out: truncated header */
	MASQ_DIRECT,         /* out: a reply of a flow opened from outside, untouched */
	MASQ_DIRECT_IN,      /* in: a flow from outside to a pod, recorded */
	MASQ_REASON_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} nm_masq_stats SEC(".maps");

static __always_inline int count(__u32 reason, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&nm_masq_stats, &reason);

	if (c)
		*c += 1;
	return verdict;
}

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + offsetof(struct iphdr, daddr))

/* What masq needs of a packet: its IPv4 header and L4 ports. */
struct pkt {
	struct iphdr ip;
	__u32 l4;        /* offset of the L4 header */
	__u16 sport;     /* host order; ICMP echo: see masq_key */
	__u16 dport;
	__u8 icmp_type;
	__u8 tcp_flags;
};

/* Reads the IPv4 header. 0: IPv4 (fragment or not); -1: not IPv4 or
 * truncated. */
static __always_inline int load_ip(struct __sk_buff *skb, struct pkt *p)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(skb, IP_OFF, &p->ip, sizeof(p->ip)) < 0)
		return -1;
	if (p->ip.version != 4 || p->ip.ihl < 5)
		return -1;
	p->l4 = IP_OFF + p->ip.ihl * 4;
	return 0;
}

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_RST 0x04

/* Reads the L4 ports. 0: TCP, UDP or ICMP echo (request or reply);
 * 1: another protocol or ICMP type; -1: truncated. */
static __always_inline int load_l4(struct __sk_buff *skb, struct pkt *p)
{
	__u16 ports[2];
	__u8 b[14];

	switch (p->ip.protocol) {
	case IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, p->l4, b, 14) < 0)
			return -1;
		p->sport = ((__u16)b[0] << 8) | b[1];
		p->dport = ((__u16)b[2] << 8) | b[3];
		p->tcp_flags = b[13];
		return 0;
	case IPPROTO_UDP:
		if (bpf_skb_load_bytes(skb, p->l4, ports, 4) < 0)
			return -1;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
		return 0;
	case IPPROTO_ICMP:
		if (bpf_skb_load_bytes(skb, p->l4, b, 8) < 0)
			return -1;
		p->icmp_type = b[0];
		if (b[0] != ICMP_ECHO && b[0] != ICMP_ECHOREPLY)
			return 1;
		p->sport = ((__u16)b[4] << 8) | b[5]; /* the identifier */
		p->dport = 0;
		return 0;
	}
	return 1;
}

/* Offsets of the port a translation rewrites and of the L4 checksum. */
static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	switch (p->ip.protocol) {
	case IPPROTO_TCP:
		return p->l4 + offsetof(struct tcphdr, check);
	case IPPROTO_UDP:
		return p->l4 + offsetof(struct udphdr, check);
	}
	return p->l4 + 2; /* ICMP */
}

/* Rewrites the address at addr_off and the 16-bit port (or ICMP id) at
 * port_off, with their checksums: the IP header's, and the L4 one (the
 * address is in TCP's and UDP's pseudo header, not in ICMP's; a UDP
 * checksum of zero, "none", stays zero). */
static __always_inline int rewrite(struct __sk_buff *skb, const struct pkt *p, __u32 addr_off, __be32 from_addr,
				   __be32 to_addr, __u32 port_off, __u16 from_port, __u16 to_port)
{
	__u32 csum = l4_csum_off(p);
	__u64 l4flags = p->ip.protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 fp = bpf_htons(from_port), tp = bpf_htons(to_port);

	if (from_addr != to_addr) {
		if (p->ip.protocol != IPPROTO_ICMP &&
		    bpf_l4_csum_replace(skb, csum, from_addr, to_addr, l4flags | BPF_F_PSEUDO_HDR | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from_addr, to_addr, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &to_addr, 4, 0) < 0)
			return -1;
	}
	if (fp != tp) {
		if (bpf_l4_csum_replace(skb, csum, fp, tp, l4flags | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &tp, 2, 0) < 0)
			return -1;
	}
	return 0;
}

static __always_inline __u64 lifetime(const struct pkt *p, const struct masq_entry *e)
{
	if (p->ip.protocol != IPPROTO_TCP)
		return masq_lifetime_other_ns;
	if (e->closing)
		return masq_lifetime_closing_ns;
	return masq_lifetime_tcp_ns;
}

/* Refreshes an entry for a packet: a SYN (re)opens, a FIN or RST closes. */
static __always_inline void refresh(struct masq_entry *e, const struct pkt *p, __u64 now)
{
	if (p->ip.protocol == IPPROTO_TCP) {
		if (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) {
			if (!e->closing) {
				e->closing = 1;
				e->expires = now + masq_lifetime_closing_ns;
				return;
			}
		} else if ((p->tcp_flags & 0x02) && e->closing) { /* SYN: the tuple is reused */
			e->closing = 0;
			e->expires = now + masq_lifetime_tcp_ns;
			return;
		}
	}
	__u64 lt = lifetime(p, e);

	if (e->expires < now + lt - MASQ_REFRESH_NS)
		e->expires = now + lt;
}

/* Takes NAT port `port` for the reply tuple rk (rk->dport is set here). 0:
 * taken; -1: a live translation of another flow holds it. */
static __always_inline int take_port(struct masq_key *rk, __u16 port, const struct masq_entry *back, __u64 now)
{
	rk->dport = port;
	if (bpf_map_update_elem(&nm_masq_in, rk, back, BPF_NOEXIST) == 0)
		return 0;

	struct masq_entry *cur = bpf_map_lookup_elem(&nm_masq_in, rk);

	if (!cur)
		return bpf_map_update_elem(&nm_masq_in, rk, back, BPF_NOEXIST) == 0 ? 0 : -1;
	/* Ours already (the out entry was evicted), or expired: reuse it. */
	if ((cur->addr == back->addr && cur->port == back->port) || cur->expires <= now)
		return bpf_map_update_elem(&nm_masq_in, rk, back, BPF_EXIST) == 0 ? 0 : -1;
	return -1;
}

SEC("tc")
int masq_out(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct masq_cfg *cfg = bpf_map_lookup_elem(&nm_masq_cfg, &zero);
	struct pkt p = {};

	if (!cfg || !cfg->enabled || load_ip(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	/* Only this node's pods: the node's own traffic and other nodes'
	 * pods' traffic forwarded through it are never touched. A pod cannot
	 * pick another source: from_pod drops it before it is routed here. */
	if ((p.ip.saddr & cfg->pod_mask) != cfg->pod_net)
		return TC_ACT_UNSPEC;

	struct lpm_v4_key lk = {.prefixlen = 32, .addr = p.ip.daddr};

	if (bpf_map_lookup_elem(&nm_masq_skip, &lk))
		return count(MASQ_EXCLUDED, TC_ACT_UNSPEC);

	__u32 ifindex = skb->ifindex;
	__be32 *nat = bpf_map_lookup_elem(&nm_masq_addrs, &ifindex);

	if (!nat)
		return count(MASQ_DROP_NO_ADDR, TC_ACT_SHOT);
	__be32 nat_addr = *nat;

	/* A fragment has no ports (or its later fragments would go out
	 * untranslated): deny rather than mis-translate. */
	if (p.ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return count(MASQ_DROP_FRAGMENT, TC_ACT_SHOT);

	int rc = load_l4(skb, &p);

	if (rc < 0)
		return count(MASQ_DROP_MALFORMED, TC_ACT_SHOT);
	if (rc > 0)
		return count(MASQ_DROP_PROTO, TC_ACT_SHOT);

	struct masq_key ok = {
		.saddr = p.ip.saddr, .daddr = p.ip.daddr, .sport = p.sport, .dport = p.dport, .proto = p.ip.protocol};
	struct masq_key rk = {.saddr = p.ip.daddr, .daddr = nat_addr, .sport = p.dport, .proto = p.ip.protocol};
	struct masq_entry back = {.addr = p.ip.saddr, .port = p.sport};
	__u64 now = bpf_ktime_get_coarse_ns();
	__u16 nat_port = 0;
	struct masq_entry *oe = bpf_map_lookup_elem(&nm_masq_out, &ok);

	/* A reply of a flow the remote opened (no live translation of the
	 * tuple): it leaves as it is, from the pod's address, which the
	 * remote sent to. A translation wins: a forged "opening" from outside
	 * cannot take a pod's translated flow away from it. */
	if (!(oe && oe->expires > now)) {
		struct masq_entry *de = bpf_map_lookup_elem(&nm_masq_direct, &ok);

		if (de && de->expires > now) {
			refresh(de, &p, now);
			return count(MASQ_DIRECT, TC_ACT_UNSPEC);
		}
	}
	/* Only what can be translated back leaves: an ICMP echo reply or
	 * error from a pod would need the reverse of a translation that never
	 * happened. */
	if (p.ip.protocol == IPPROTO_ICMP && p.icmp_type != ICMP_ECHO)
		return count(MASQ_DROP_PROTO, TC_ACT_SHOT);

	if (oe && oe->addr == nat_addr) {
		/* Still ours if the reply side holds it for this pod (LRU may
		 * have evicted it, or another flow taken it once expired). */
		rk.dport = oe->port;
		struct masq_entry *ie = bpf_map_lookup_elem(&nm_masq_in, &rk);

		if (ie && ie->addr == back.addr && ie->port == back.port && (ie->expires > now || oe->expires > now)) {
			refresh(oe, &p, now);
			refresh(ie, &p, now);
			nat_port = oe->port;
		} else if (!ie || ie->expires <= now) {
			back.expires = now + masq_lifetime_other_ns;
			if (take_port(&rk, oe->port, &back, now) == 0)
				nat_port = oe->port;
		}
	}
	if (!nat_port) {
		__u32 span = (__u32)cfg->port_max - cfg->port_min + 1;

		if (cfg->port_min == 0 || cfg->port_max < cfg->port_min)
			return count(MASQ_DROP_NO_PORT, TC_ACT_SHOT);
		back.closing = 0;
		back.expires = now + (p.ip.protocol == IPPROTO_TCP ? masq_lifetime_tcp_ns : masq_lifetime_other_ns);
		/* Keep the pod's port when it is in the range and free; else
		 * start at a random port of the range and walk it. */
		__u32 start = p.sport >= cfg->port_min && p.sport <= cfg->port_max ? p.sport - cfg->port_min
										   : bpf_get_prandom_u32() % span;

		for (int i = 0; i < MASQ_PORT_TRIES; i++) {
			__u16 cand = cfg->port_min + (i == 0 ? start : bpf_get_prandom_u32() % span);

			if (take_port(&rk, cand, &back, now) == 0) {
				nat_port = cand;
				break;
			}
		}
		if (!nat_port)
			return count(MASQ_DROP_NO_PORT, TC_ACT_SHOT);
		struct masq_entry ne = {.expires = back.expires, .addr = nat_addr, .port = nat_port};

		if (bpf_map_update_elem(&nm_masq_out, &ok, &ne, BPF_ANY) < 0) {
			bpf_map_delete_elem(&nm_masq_in, &rk);
			return count(MASQ_DROP_NO_PORT, TC_ACT_SHOT);
		}
	}

	__u32 port_off = p.ip.protocol == IPPROTO_ICMP ? p.l4 + 4 : p.l4; /* the source port, or the id */

	if (rewrite(skb, &p, IP_SRC_OFF, p.ip.saddr, nat_addr, port_off, p.sport, nat_port) < 0)
		return count(MASQ_DROP_MALFORMED, TC_ACT_SHOT);
	return count(MASQ_SNAT, TC_ACT_UNSPEC);
}

/* Records a packet from outside the node to one of its pods (addressed to
 * the pod itself, so not a translated reply) in nm_masq_direct: the remote
 * may have opened a flow, whose replies must keep the pod's address. Only
 * remotes masq_out would translate for (not in nm_masq_skip) and whole
 * TCP, UDP packets and echo requests are recorded. */
static __always_inline void track_direct(struct __sk_buff *skb, struct pkt *p)
{
	if (p->ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return;

	struct lpm_v4_key lk = {.prefixlen = 32, .addr = p->ip.saddr};

	if (bpf_map_lookup_elem(&nm_masq_skip, &lk))
		return;
	if (load_l4(skb, p) != 0)
		return;

	struct masq_key dk = {.saddr = p->ip.daddr, .daddr = p->ip.saddr, .proto = p->ip.protocol};

	if (p->ip.protocol == IPPROTO_ICMP) {
		if (p->icmp_type != ICMP_ECHO)
			return;
		dk.sport = p->sport; /* the identifier, where masq_out reads it from the reply */
	} else {
		dk.sport = p->dport;
		dk.dport = p->sport;
	}

	__u64 now = bpf_ktime_get_coarse_ns();
	struct masq_entry *de = bpf_map_lookup_elem(&nm_masq_direct, &dk);

	if (de && de->expires > now) {
		refresh(de, p, now);
		return;
	}

	struct masq_entry ne = {.addr = p->ip.saddr, .port = p->sport};

	ne.expires = now + (p->ip.protocol == IPPROTO_TCP ? masq_lifetime_tcp_ns : masq_lifetime_other_ns);
	bpf_map_update_elem(&nm_masq_direct, &dk, &ne, BPF_ANY);
	count(MASQ_DIRECT_IN, 0);
}

SEC("tc")
int masq_in(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct masq_cfg *cfg = bpf_map_lookup_elem(&nm_masq_cfg, &zero);
	struct pkt p = {};

	if (!cfg || !cfg->enabled || load_ip(skb, &p) < 0)
		return TC_ACT_UNSPEC;

	__u32 ifindex = skb->ifindex;
	__be32 *nat = bpf_map_lookup_elem(&nm_masq_addrs, &ifindex);

	if (!nat)
		return TC_ACT_UNSPEC;
	if ((p.ip.daddr & cfg->pod_mask) == cfg->pod_net) {
		track_direct(skb, &p);
		return TC_ACT_UNSPEC;
	}
	if (p.ip.daddr != *nat)
		return TC_ACT_UNSPEC;
	/* Fragments go to the node's stack as they came: only a whole packet
	 * is matched against a translation (docs: "Masquerading"). */
	if (p.ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return count(MASQ_IN_NO_ENTRY, TC_ACT_UNSPEC);
	if (load_l4(skb, &p) != 0 || (p.ip.protocol == IPPROTO_ICMP && p.icmp_type != ICMP_ECHOREPLY))
		return TC_ACT_UNSPEC;

	struct masq_key rk = {.saddr = p.ip.saddr, .daddr = p.ip.daddr, .sport = p.sport, .dport = p.dport,
			      .proto = p.ip.protocol};
	__u16 nat_port = p.dport;

	if (p.ip.protocol == IPPROTO_ICMP) {
		/* An echo reply carries the (translated) identifier. */
		rk.sport = 0;
		rk.dport = p.sport;
		nat_port = p.sport;
	}

	struct masq_entry *ie = bpf_map_lookup_elem(&nm_masq_in, &rk);
	__u64 now = bpf_ktime_get_coarse_ns();

	if (!ie || ie->expires <= now)
		return count(MASQ_IN_NO_ENTRY, TC_ACT_UNSPEC);
	/* Only this node's pods are ever restored (the map is the agent's,
	 * but a stale entry from another pod CIDR must not route anywhere). */
	if ((ie->addr & cfg->pod_mask) != cfg->pod_net)
		return count(MASQ_IN_NO_ENTRY, TC_ACT_UNSPEC);

	__be32 pod_addr = ie->addr;
	__u16 pod_port = ie->port;

	refresh(ie, &p, now);

	struct masq_key ok = {.saddr = pod_addr, .daddr = p.ip.saddr, .sport = pod_port, .dport = rk.sport,
			      .proto = p.ip.protocol};
	struct masq_entry *oe = bpf_map_lookup_elem(&nm_masq_out, &ok);

	if (oe)
		refresh(oe, &p, now);

	__u32 port_off = p.ip.protocol == IPPROTO_ICMP ? p.l4 + 4 : p.l4 + 2; /* the destination port, or the id */

	if (rewrite(skb, &p, IP_DST_OFF, p.ip.daddr, pod_addr, port_off, nat_port, pod_port) < 0)
		return TC_ACT_SHOT;
	return count(MASQ_RNAT, TC_ACT_UNSPEC);
}

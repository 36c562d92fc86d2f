// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level service load balancing (kube-proxy replacement), included by
 * redirect.c: the cgroup programs there call these helpers, so that the
 * redirection to the node proxy and the load balancing are decided by one
 * connect4 program in a fixed order (redirection first; see
 * docs/design/datapath.md, "Socket load balancing").
 *
 * Modelled on Cilium's bpf_sock.c: a service frontend {address, port, proto}
 * has a master entry (slot 0: the number of backend slots) and slots
 * 1..count, each naming a backend by id; backends are {address, port}. A
 * connect() (TCP, connected UDP) or a sendmsg() (unconnected UDP) to a
 * frontend picks a slot at random and goes to that backend instead:
 *
 *   connect4     TCP and UDP: rewrite the destination; remember the frontend
 *                in the socket's storage (getpeername) and, for UDP, in
 *                nm_lb_revnat (recvmsg)
 *   sendmsg4     unconnected UDP: the same per datagram (nm_lb_revnat)
 *   recvmsg4     UDP: a datagram from a backend this socket sent to appears
 *                to come from the frontend
 *   getpeername4 the frontend, not the backend
 *
 * A frontend with no backend slot refuses: connect() and sendmsg() fail with
 * ECONNREFUSED, as kube-proxy's REJECT rule makes them. Everything after the
 * rewrite (the TC policy programs in particular) sees the real backend.
 */
#pragma once

#include "common.h"

#include <linux/in.h>

#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef SOCK_DGRAM
#define SOCK_DGRAM 2
#endif

#define LB_ECONNREFUSED 111

/* Outcome of a translation attempt. */
#define LB_NOT_SERVICE 0 /* not a frontend: leave the socket alone */
#define LB_TRANSLATED 1  /* the destination is now a backend */
#define LB_REFUSED 2     /* a frontend without a (reachable) backend */

struct lb4_key {
	__be32 address; /* frontend: ClusterIP, node address (NodePort), external IP */
	__u16 dport;    /* host order */
	__u16 slot;     /* 0: the master entry; 1..count: backend slots */
	__u8 proto;     /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];
};

struct lb4_service {
	__u32 backend_id; /* slots: the backend; master: 0 */
	__u16 count;      /* master: number of backend slots (0: refuse) */
	__u16 flags;      /* none defined yet */
};

struct lb4_backend {
	__be32 address;
	__u16 port; /* host order */
	__u8 proto;
	__u8 flags; /* none defined yet */
};

/* A UDP socket's datagrams to a backend, by socket cookie: replies from that
 * backend are shown as coming from the frontend. Socket cookies are never
 * reused, so a stale entry only wastes a slot until LRU eviction. */
struct lb4_revnat_key {
	__u64 cookie;
	__be32 address; /* backend */
	__u16 port;     /* backend, host order */
	__u16 pad;
};

struct lb4_revnat {
	__be32 address; /* frontend */
	__u16 port;     /* frontend, host order */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, 131072);
} nm_lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* backend id, >= 1 */
	__type(value, struct lb4_backend);
	__uint(max_entries, 65536);
} nm_lb_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_revnat_key);
	__type(value, struct lb4_revnat);
	__uint(max_entries, 65536);
} nm_lb_revnat SEC(".maps");

/* lb4_pick finds the frontend ctx connects or sends to and picks one of its
 * backends at random. Returns LB_NOT_SERVICE, LB_REFUSED, or LB_TRANSLATED
 * with *be set. */
static __always_inline int lb4_pick(struct bpf_sock_addr *ctx, __u8 proto, struct lb4_backend **be)
{
	struct lb4_key k = {
		.address = ctx->user_ip4,
		.dport = bpf_ntohs(ctx->user_port),
		.proto = proto,
	};
	struct lb4_service *svc = bpf_map_lookup_elem(&nm_lb_services, &k);

	if (!svc)
		return LB_NOT_SERVICE;
	__u16 count = svc->count;

	if (!count)
		return LB_REFUSED;
	k.slot = (__u16)(bpf_get_prandom_u32() % count) + 1;

	struct lb4_service *slot = bpf_map_lookup_elem(&nm_lb_services, &k);

	/* A slot can be missing only for an instant while the agent shrinks
	 * the service (the master's count is lowered first): try the first. */
	if (!slot) {
		k.slot = 1;
		slot = bpf_map_lookup_elem(&nm_lb_services, &k);
		if (!slot)
			return LB_REFUSED;
	}
	__u32 id = slot->backend_id;

	*be = bpf_map_lookup_elem(&nm_lb_backends, &id);
	if (!*be)
		return LB_REFUSED;
	return LB_TRANSLATED;
}

static __always_inline void lb4_remember_udp(struct bpf_sock_addr *ctx, const struct lb4_backend *be,
					      __be32 vip, __u16 vport)
{
	struct lb4_revnat_key k = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = be->address,
		.port = be->port,
	};
	struct lb4_revnat v = { .address = vip, .port = vport };

	/* Written only when missing or different: a DNS client sending many
	 * queries to one backend costs one lookup per datagram, not a write. */
	struct lb4_revnat *cur = bpf_map_lookup_elem(&nm_lb_revnat, &k);

	if (cur && cur->address == vip && cur->port == vport)
		return;
	bpf_map_update_elem(&nm_lb_revnat, &k, &v, BPF_ANY);
}

static __always_inline __u8 lb4_proto(struct bpf_sock_addr *ctx)
{
	/* MPTCP's first subflow connects where its socket connected. */
	if (ctx->type == SOCK_STREAM && (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_MPTCP))
		return IPPROTO_TCP;
	if (ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP)
		return IPPROTO_UDP;
	return 0;
}

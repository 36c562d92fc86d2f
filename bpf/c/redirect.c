// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level redirection of opted-in pods' TCP connections to the node proxy.
 *
 *   cgroup/connect4    an opted-in pod (its netns cookie is in nm_netns) connects
 *                      to a Service address in nm_services: remember the
 *                      destination in the socket's storage and connect to the
 *                      proxy (nm_redir_cfg) instead.
 *   sockops            the client socket is established: record
 *                      {client ip:port, proxy ip:port} -> original destination;
 *                      when the proxy's accepted socket is established, move the
 *                      record into that socket's storage.
 *   cgroup/getsockopt  getsockopt(SOL_IP, SO_ORIGINAL_DST) on the proxy's socket
 *                      answers from that record, as netfilter would after a
 *                      REDIRECT, so an unmodified proxy (Envoy original_dst) works.
 *   cgroup/getpeername4 the app sees the Service address, not the proxy's.
 *
 * The same connect4 program sends the node proxy's own upstream connection
 * to a pod port under L7 policy on this node (nm_inbound) to the proxy's
 * inbound listener (inbound4): the connection never passes a tc ingress
 * hook, where inbound capture happens for every other client. The record,
 * sockops and SO_ORIGINAL_DST work as for a redirected pod's connection.
 *
 * The redirection acts only on sockets of opted-in network namespaces, and
 * never on port 15008, UID/GID 1337, sockets marked 0x539 or anything but
 * IPv4 TCP. Every other connection to a Service is load balanced at the
 * socket (socklb.h: connect4, sendmsg4, recvmsg4, getpeername4). All the
 * programs attach to a cgroup v2 directory (the root in production).
 */
#include "common.h"
#include "policy_maps.h"
#include "socklb.h"

#include <linux/in.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#define SOL_IP 0
#define SO_ORIGINAL_DST 80

/* Istio's constants: HBONE port, proxy UID/GID and the "skip capture" mark. */
#define HBONE_PORT 15008
#define ISTIO_PROXY_UID 1337
#define ISTIO_PROXY_GID 1337
#define ISTIO_SKIP_MARK 0x539

enum redir_reason {
	RR_REDIRECTED = 0,      /* connect4 sent the connection to the proxy */
	RR_SKIP_NOT_TCP,        /* opted-in pod, but not an IPv4 TCP socket */
	RR_SKIP_UID,            /* UID or GID 1337 */
	RR_SKIP_HBONE,          /* destination port 15008 */
	RR_SKIP_MARK,           /* socket marked 0x539 */
	RR_SKIP_NOT_SERVICE,    /* destination not in nm_services */
	RR_SKIP_NO_CONFIG,      /* no proxy address configured */
	RR_ESTABLISHED,         /* sockops recorded a redirected connection */
	RR_ORIGDST_ANSWERED,    /* getsockopt(SO_ORIGINAL_DST) answered */
	RR_ORIGDST_MISS,        /* SO_ORIGINAL_DST asked for an unknown connection */
	RR_PEERNAME_REWRITTEN,  /* getpeername showed the Service address */
	RR_PROXY_EGRESS_DENIED, /* the node proxy connected for a pod its egress policy denies */
	RR_LB_CONNECT,          /* connect() to a Service went to a backend (socket LB) */
	RR_LB_SENDMSG,          /* an unconnected UDP datagram to a Service went to a backend */
	RR_LB_NO_BACKEND,       /* connect()/sendmsg() to a Service without backend: ECONNREFUSED */
	RR_LB_REPLY_REWRITTEN,  /* recvmsg showed a backend's datagram as the Service's */
	RR_INBOUND_CAPTURED,    /* the node proxy's upstream to a captured pod port went to its inbound listener */
	RR_INBOUND_SKIP_MARK,   /* ... but it is the inbound listener's own upstream (marked 0x539): to the pod */
	RR_INBOUND_REFUSED,     /* ... and it cannot go to the listener (not configured, no storage): EPERM */
	RR_MAX = 32,
};

#define ROLE_CLIENT 1 /* the app's socket: getpeername is rewritten */
#define ROLE_PROXY 2  /* the proxy's accepted socket: SO_ORIGINAL_DST is answered */
#define ROLE_LB 3     /* a socket load balanced to a backend: getpeername is rewritten */
#define ROLE_INBOUND 4 /* the node proxy's upstream sent to its inbound listener: as ROLE_CLIENT */

struct redirect_config {
	__be32 proxy_ip;
	__u16 proxy_port; /* host order */
	__u16 pad;
};

struct netns_config {
	__u32 flags; /* none defined yet */
};

struct service_key {
	__be32 ip;
	__u16 port; /* host order; 0 = every port of the address */
	__u16 pad;
};

struct orig_dst {
	__be32 ip;
	__u16 port; /* host order */
	__u16 role; /* ROLE_* */
};

struct tuple_key {
	__be32 client_ip;
	__be32 proxy_ip;
	__u16 client_port; /* host order */
	__u16 proxy_port;  /* host order */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct redirect_config);
	__uint(max_entries, 1);
} nm_redir_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64); /* netns cookie */
	__type(value, struct netns_config);
	__uint(max_entries, 4096);
} nm_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct service_key);
	__type(value, __u32); /* flags, none defined yet */
	__uint(max_entries, 65536);
} nm_services SEC(".maps");

/* Per-socket original destination; freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct orig_dst);
} nm_sk_dst SEC(".maps");

/* Hand-over from the client's socket to the proxy's accepted socket. An entry
 * lives from the client's ESTABLISHED to the proxy side's ESTABLISHED. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tuple_key);
	__type(value, struct orig_dst);
	__uint(max_entries, 65536);
} nm_orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, RR_MAX);
} nm_redir_stats SEC(".maps");

static __always_inline void count(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&nm_redir_stats, &reason);

	if (c)
		(*c)++;
}

static __always_inline int is_service(__be32 ip, __u16 port)
{
	struct service_key k = { .ip = ip, .port = port };

	if (bpf_map_lookup_elem(&nm_services, &k))
		return 1;
	k.port = 0;
	return bpf_map_lookup_elem(&nm_services, &k) != NULL;
}

/* The local pod on whose behalf a socket connects, when it is an upstream
 * connection of the node proxy: a TCP socket of another network namespace
 * than the pod's (the node's) bound to the pod's address (Envoy
 * original_src). NULL otherwise: a pod's own socket, a socket of the node
 * with a node address. Binding another pod's address from a pod's netns
 * (IP_FREEBIND) makes such a socket too, but its packets leave through the
 * pod's veth, where from_pod drops them as spoofed. */
static __always_inline struct local_ep *proxy_upstream_of(struct bpf_sock_addr *ctx, __u64 netns)
{
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return NULL;

	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return NULL;

	__be32 src = sk->src_ip4;

	if (!src)
		return NULL;

	struct local_ep *lep = bpf_map_lookup_elem(&nm_local_eps, &src);

	if (!lep || lep->netns_cookie == netns)
		return NULL;
	return lep;
}

/* The pod's egress policy decides the node proxy's upstream connection on
 * its behalf, as if the pod connected itself; denied, the connect fails
 * with EPERM. */
static __always_inline int proxy_egress_denied(struct bpf_sock_addr *ctx, const struct local_ep *lep)
{
	__u32 reason = decide(&lep->ep, DIR_EGRESS, lookup_identity(ctx->user_ip4), bpf_ntohs(ctx->user_port), IPPROTO_TCP);

	return !is_allowed(reason);
}

/* Whether the socket listening where inbound4 would send sk is the node
 * proxy's: it carries the proxy's socket mark (as inbound_capture checks in
 * policy.c). Any process of the node may listen on the inbound port while
 * the proxy is down; it must not be handed the proxy's upstream connections
 * with their original destination. */
static __always_inline int inbound_listener_is_proxys(struct bpf_sock_addr *ctx, struct bpf_sock *sk, __be32 proxy_ip,
						      const struct inbound_cfg *cfg)
{
	struct bpf_sock_tuple t = {};

	t.ipv4.saddr = sk->src_ip4;
	t.ipv4.sport = bpf_htons((__u16)sk->src_port);
	t.ipv4.daddr = proxy_ip;
	t.ipv4.dport = bpf_htons(cfg->port);

	struct bpf_sock *l = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);

	if (!l)
		return 0;

	int ok = l->state == BPF_TCP_LISTEN && l->mark == cfg->sock_mark;

	bpf_sk_release(l);
	return ok;
}

/*
 * inbound4: the node proxy's upstream connection (proxy_upstream_of) to a
 * {pod, port} of this node under L7 policy (nm_inbound) goes to the proxy's
 * inbound listener instead — node proxy address (nm_redir_cfg, SetProxy) :
 * inbound port (nm_inbound_cfg) — with the pod:port recorded as the
 * original destination (role inbound: sockops hands it to the accepted
 * socket, cgroup/getsockopt answers SO_ORIGINAL_DST with it). The socket
 * stays bound to the client pod's address, so the listener sees the client
 * as its peer; the replies of the node's own address to that address are
 * routed towards the pod and come back through lo (to_pod,
 * proxy_local_return), as for a host-network server.
 *
 * Not for the inbound listener's own upstream connection to the pod, which
 * must reach it: the inbound cluster marks it 0x539 (Envoy original_src
 * mark, Istio's "do not capture again"; SO_MARK needs CAP_NET_ADMIN).
 *
 * Returns 1 when rewritten, 0 when the connection goes where it was going,
 * -1 when it must fail (EPERM: Envoy answers 503): a pod under L7 policy
 * with no inbound listener of the proxy's to enforce it (not configured,
 * not listening, or a listener without the proxy's socket mark), or no room
 * to record the original destination, is not reached around it.
 */
static __always_inline int inbound4(struct bpf_sock_addr *ctx)
{
	__be32 dip = ctx->user_ip4;
	__u16 dport = bpf_ntohs(ctx->user_port);
	struct inbound_key k = { .addr = dip, .port = bpf_htons(dport), .proto = IPPROTO_TCP };

	if (!bpf_map_lookup_elem(&nm_inbound, &k))
		return 0;

	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return -1;
	if (sk->mark == ISTIO_SKIP_MARK) {
		count(RR_INBOUND_SKIP_MARK);
		return 0;
	}

	__u32 zero = 0;
	struct inbound_cfg *icfg = bpf_map_lookup_elem(&nm_inbound_cfg, &zero);
	struct redirect_config *rcfg = bpf_map_lookup_elem(&nm_redir_cfg, &zero);

	if (!icfg || !icfg->port || !icfg->sock_mark || !rcfg || !rcfg->proxy_ip) {
		count(RR_INBOUND_REFUSED);
		return -1;
	}
	if (!inbound_listener_is_proxys(ctx, sk, rcfg->proxy_ip, icfg)) {
		count(RR_INBOUND_REFUSED);
		return -1;
	}

	struct orig_dst *od = bpf_sk_storage_get(&nm_sk_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!od) {
		count(RR_INBOUND_REFUSED);
		return -1;
	}
	od->ip = dip;
	od->port = dport;
	od->role = ROLE_INBOUND;

	ctx->user_ip4 = rcfg->proxy_ip;
	ctx->user_port = bpf_htons(icfg->port);
	count(RR_INBOUND_CAPTURED);
	return 1;
}

/* redirect4 sends an opted-in pod's TCP connection to a Service to the node
 * proxy. Returns 1 when it did. */
static __always_inline int redirect4(struct bpf_sock_addr *ctx, __u64 netns)
{
	/* Not opted in: namespaces without the label, pods with a sidecar or
	 * dataplane-mode=none, the host netns and so the node proxy itself. */
	if (!bpf_map_lookup_elem(&nm_netns, &netns))
		return 0;
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP) {
		count(RR_SKIP_NOT_TCP);
		return 0;
	}

	__u64 uidgid = bpf_get_current_uid_gid();

	if ((__u32)uidgid == ISTIO_PROXY_UID || (__u32)(uidgid >> 32) == ISTIO_PROXY_GID) {
		count(RR_SKIP_UID);
		return 0;
	}

	__u16 dport = bpf_ntohs(ctx->user_port);

	if (dport == HBONE_PORT) {
		count(RR_SKIP_HBONE);
		return 0;
	}

	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 0;
	if (sk->mark == ISTIO_SKIP_MARK) {
		count(RR_SKIP_MARK);
		return 0;
	}

	__u32 zero = 0;
	struct redirect_config *cfg = bpf_map_lookup_elem(&nm_redir_cfg, &zero);

	if (!cfg || !cfg->proxy_ip || !cfg->proxy_port) {
		count(RR_SKIP_NO_CONFIG);
		return 0;
	}

	__be32 dip = ctx->user_ip4;

	if (dip == cfg->proxy_ip && dport == cfg->proxy_port)
		return 0;
	if (!is_service(dip, dport)) {
		count(RR_SKIP_NOT_SERVICE);
		return 0;
	}

	struct orig_dst *od = bpf_sk_storage_get(&nm_sk_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!od)
		return 0; /* cannot remember the destination: do not redirect */
	od->ip = dip;
	od->port = dport;
	od->role = ROLE_CLIENT;

	ctx->user_ip4 = cfg->proxy_ip;
	ctx->user_port = bpf_htons(cfg->proxy_port);
	count(RR_REDIRECTED);
	return 1;
}

static __always_inline void lb4_forget(struct bpf_sock *sk)
{
	struct orig_dst *od = bpf_sk_storage_get(&nm_sk_dst, sk, 0, 0);

	if (od && od->role == ROLE_LB)
		bpf_sk_storage_delete(&nm_sk_dst, sk);
}

/* lb4_connect load balances a connect() to a Service frontend. Returns 0
 * when the connect must fail (ECONNREFUSED set), 1 otherwise. */
static __always_inline int lb4_connect(struct bpf_sock_addr *ctx)
{
	__u8 proto = lb4_proto(ctx);
	struct lb4_backend *be = NULL;

	if (!proto)
		return 1;

	__be32 vip = ctx->user_ip4;
	__u16 vport = bpf_ntohs(ctx->user_port);

	struct bpf_sock *sk = ctx->sk;

	switch (lb4_pick(ctx, proto, &be)) {
	case LB_NOT_SERVICE:
		/* A UDP socket connected to a Service before and now elsewhere
		 * must not keep showing the Service as its peer. */
		if (sk)
			lb4_forget(sk);
		return 1;
	case LB_REFUSED:
		count(RR_LB_NO_BACKEND);
		bpf_set_retval(-LB_ECONNREFUSED);
		return 0;
	}
	if (!be)
		return 1;

	/* getpeername shows the frontend. Without storage (out of memory)
	 * the connection still goes to the backend: only getpeername differs. */
	if (sk) {
		struct orig_dst *od = bpf_sk_storage_get(&nm_sk_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

		if (od) {
			od->ip = vip;
			od->port = vport;
			od->role = ROLE_LB;
		}
	}
	if (proto == IPPROTO_UDP)
		lb4_remember_udp(ctx, be, vip, vport);
	ctx->user_ip4 = be->address;
	ctx->user_port = bpf_htons(be->port);
	count(RR_LB_CONNECT);
	return 1;
}

/*
 * One connect4 program, in this order:
 *   1. an opted-in pod's TCP connection to a Service goes to the node proxy,
 *      which does the L7 load balancing (redirect4);
 *   2. every other connection to a Service frontend goes to one of its
 *      backends (lb4_connect), or fails with ECONNREFUSED without one;
 *   3. the node proxy's upstream connection on behalf of a local pod (now
 *      towards a backend, if it connected to a frontend) is decided by the
 *      pod's egress policy;
 *   4. allowed, and to a pod port of this node under L7 policy, it goes to
 *      the proxy's inbound listener (inbound4), or fails.
 */
SEC("cgroup/connect4")
int nm_connect4(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);

	if (redirect4(ctx, netns))
		return 1;
	if (!lb4_connect(ctx))
		return 0;

	struct local_ep *lep = proxy_upstream_of(ctx, netns);

	if (!lep)
		return 1;
	if (proxy_egress_denied(ctx, lep)) {
		count(RR_PROXY_EGRESS_DENIED);
		return 0;
	}
	return inbound4(ctx) >= 0;
}

/* Unconnected UDP: each datagram to a frontend goes to a backend. */
SEC("cgroup/sendmsg4")
int nm_sendmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
		return 1;

	__be32 vip = ctx->user_ip4;
	__u16 vport = bpf_ntohs(ctx->user_port);
	struct lb4_backend *be = NULL;

	switch (lb4_pick(ctx, IPPROTO_UDP, &be)) {
	case LB_NOT_SERVICE:
		return 1;
	case LB_REFUSED:
		count(RR_LB_NO_BACKEND);
		bpf_set_retval(-LB_ECONNREFUSED);
		return 0;
	}
	if (!be)
		return 1;
	lb4_remember_udp(ctx, be, vip, vport);
	ctx->user_ip4 = be->address;
	ctx->user_port = bpf_htons(be->port);
	count(RR_LB_SENDMSG);
	return 1;
}

/* UDP: a datagram from a backend this socket sent to comes from the
 * frontend, as the application expects (DNS resolvers check it). */
SEC("cgroup/recvmsg4")
int nm_recvmsg4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_DGRAM)
		return 1;

	struct lb4_revnat_key k = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = bpf_ntohs(ctx->user_port),
	};
	struct lb4_revnat *v = bpf_map_lookup_elem(&nm_lb_revnat, &k);

	if (!v)
		return 1;
	ctx->user_ip4 = v->address;
	ctx->user_port = bpf_htons(v->port);
	count(RR_LB_REPLY_REWRITTEN);
	return 1;
}

SEC("sockops")
int nm_sockops(struct bpf_sock_ops *skops)
{
	struct tuple_key k = {};
	struct orig_dst *od;
	struct bpf_sock *sk;

	if (skops->family != AF_INET)
		return 1;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		/* Runs before the client's final ACK is sent, so before the
		 * proxy can accept: the record is always there in time. */
		sk = skops->sk;
		if (!sk)
			return 1;
		od = bpf_sk_storage_get(&nm_sk_dst, sk, 0, 0);
		if (!od || (od->role != ROLE_CLIENT && od->role != ROLE_INBOUND))
			return 1;
		k.client_ip = skops->local_ip4;
		k.client_port = (__u16)skops->local_port;
		k.proxy_ip = skops->remote_ip4;
		k.proxy_port = (__u16)bpf_ntohl(skops->remote_port);
		bpf_map_update_elem(&nm_orig_dst, &k, od, BPF_ANY);
		count(RR_ESTABLISHED);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		k.client_ip = skops->remote_ip4;
		k.client_port = (__u16)bpf_ntohl(skops->remote_port);
		k.proxy_ip = skops->local_ip4;
		k.proxy_port = (__u16)skops->local_port;
		od = bpf_map_lookup_elem(&nm_orig_dst, &k);
		if (!od)
			return 1;
		sk = skops->sk;
		if (!sk)
			return 1;

		struct orig_dst *pd = bpf_sk_storage_get(&nm_sk_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

		if (!pd)
			return 1; /* leave the record for getsockopt's fallback */
		pd->ip = od->ip;
		pd->port = od->port;
		pd->role = ROLE_PROXY;
		bpf_map_delete_elem(&nm_orig_dst, &k);
		break;
	}
	return 1;
}

SEC("cgroup/getsockopt")
int nm_getsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST)
		return 1;

	struct bpf_sock *sk = ctx->sk;

	if (!sk || sk->family != AF_INET)
		return 1;

	struct orig_dst *od = bpf_sk_storage_get(&nm_sk_dst, sk, 0, 0);

	if (!od || od->role != ROLE_PROXY) {
		/* The proxy's sockops did not run (it is in a cgroup without
		 * our programs): fall back to the hand-over record. */
		struct tuple_key k = {
			.client_ip = sk->dst_ip4,
			.client_port = bpf_ntohs(sk->dst_port),
			.proxy_ip = sk->src_ip4,
			.proxy_port = (__u16)sk->src_port,
		};
		od = bpf_map_lookup_elem(&nm_orig_dst, &k);
		if (!od) {
			count(RR_ORIGDST_MISS);
			return 1;
		}
	}

	struct sockaddr_in *sa = ctx->optval;

	if ((void *)(sa + 1) > ctx->optval_end)
		return 1; /* buffer too small: keep the kernel's error */
	sa->sin_family = AF_INET;
	sa->sin_port = bpf_htons(od->port);
	sa->sin_addr.s_addr = od->ip;
	__builtin_memset(sa->__pad, 0, sizeof(sa->__pad));

	ctx->optlen = sizeof(*sa);
	barrier();
	ctx->retval = 0;
	count(RR_ORIGDST_ANSWERED);
	return 1;
}

/* The Service address for a socket redirected to the proxy or load balanced
 * to a backend; the pod's address for the node proxy's upstream sent to its
 * inbound listener. */
SEC("cgroup/getpeername4")
int nm_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;

	struct orig_dst *od = bpf_sk_storage_get(&nm_sk_dst, sk, 0, 0);

	if (!od || (od->role != ROLE_CLIENT && od->role != ROLE_LB && od->role != ROLE_INBOUND))
		return 1;
	ctx->user_ip4 = od->ip;
	ctx->user_port = bpf_htons(od->port);
	count(RR_PEERNAME_REWRITTEN);
	return 1;
}

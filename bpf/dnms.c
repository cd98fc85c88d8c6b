//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// dnms TC programs: kernel timestamps for dnms probes and the in-kernel
// reflector. Wire format: internal/probe/doc.go (authoritative).
//
// dnms_egress  (TC egress)  sees every packet the host sends on the interface.
//              It stamps our own pings and trace probes (UDP to the ping port,
//              magic "DNMS", type ping or trace) with a KIND_TX event and
//              always returns TC_ACT_OK: it never drops or alters anything.
// dnms_ingress (TC ingress) sees every packet arriving on the interface.
//              - an ack / trace-ack to the ping port: KIND_RX_ACK event, OK;
//              - an ICMP time-exceeded / dest-unreachable quoting a UDP probe
//                to the ping port: KIND_RX_ICMP event, OK;
//              - a ping / trace probe to the ping port addressed to one of our
//                addresses, with the reflector on: rewritten in place into the
//                mirrored ack and redirected to the interface and next hop
//                the host's FIB picks for it, as for an ack userspace sends
//                (ack_route: bpf_fib_lookup, then bpf_redirect with the
//                neighbour's MAC or bpf_redirect_neigh); userspace never sees
//                it, nor does netfilter (the ack skips OUTPUT/POSTROUTING). A
//                ping the FIB gives no route for passes to the userspace
//                reflector (TC_ACT_OK, counted). Only if a rewrite helper
//                fails half way is that ping dropped (TC_ACT_SHOT, counted);
//              - anything else: TC_ACT_OK untouched.
// Both also stamp external target probes and their answers (KIND_TARGET_TX,
// KIND_TARGET_RX) for the flows the loader lists in target_ports, and only
// while targets_on is set (see target_packet); those packets pass untouched.
//              RX events also carry skb->tstamp, the stack's arrival time
//              (CLOCK_REALTIME) when a socket asked for timestamps.
//
// Clocks are CLOCK_MONOTONIC (bpf_ktime_get_ns). dnms_ingress reads it first
// thing; dnms_egress reads it last, just before the event is submitted, so
// that as little as possible runs between the stamp and the wire. Both bail
// out on the first byte that shows the packet is not dnms's. Events are submitted
// without waking the reader: a wakeup is an irq_work (a self-IPI, ~6 us on a
// VM) that would delay the probe after its TX stamp, inflating the RTT, and
// cost that much CPU per event; userspace polls the ring every few ms.
//
// Handled: IPv4 without options and IPv6 without extension headers, on
// Ethernet-framed devices, headers in the linear part of the skb (pulled
// there if not); everything else passes untouched.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define DNMS_MAGIC 0x444E4D53 /* "DNMS" */
#define DNMS_VERSION 1
#define DNMS_HDR_LEN 64
#define DNMS_HMAC_LEN 16

#define DNMS_T_PING 1
#define DNMS_T_ACK 2
#define DNMS_T_TRACE 3
#define DNMS_T_TRACE_ACK 4

#define DNMS_F_HMAC 1
#define DNMS_F_KERNEL 2

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_TIME_EXCEED 3
#define IPPROTO_ICMPV6_ 58

#define ETH_LEN 14
#define IP_LEN 20 /* IPv4 without options */
#define IP6_LEN 40 /* IPv6 without extension headers */
#define UDP_LEN 8
#define PAYLOAD_OFF (ETH_LEN + IP_LEN + UDP_LEN)
#define PAYLOAD6_OFF (ETH_LEN + IP6_LEN + UDP_LEN)
#define REFLECT_TTL 64
#define AF_INET_ 2
#define AF_INET6_ 10
#define LOOPBACK_IFINDEX 1

/* Load-time settings, set on the CollectionSpec before load. */
volatile const __u16 ping_port = 33435;     /* host byte order */
volatile const __u8 reflect = 1;            /* in-kernel reflector on */
volatile const __u8 reflect_events = 0;     /* emit KIND_REFLECT events */
volatile const __u8 hmac_default = 0;       /* our probes carry an HMAC (for short ICMP quotes) */
volatile const __u8 keyed = 0;              /* cluster probe key set: see keyed_admit */

/* Event kinds; values equal probe.StampKind. */
enum dnms_kind {
	DNMS_KIND_TX = 1,
	DNMS_KIND_RX_ACK = 2,
	DNMS_KIND_RX_ICMP = 3,
	DNMS_KIND_REFLECT = 4,
	DNMS_KIND_TARGET_TX = 5, /* a target probe left (TC egress) */
	DNMS_KIND_TARGET_RX = 6, /* an answer to a target probe arrived */
};

/* Indexes of the per-CPU stats array. */
enum dnms_stat {
	DNMS_STAT_RESERVE_FAIL = 0, /* ring buffer full: event lost */
	DNMS_STAT_TX = 1,           /* KIND_TX events emitted */
	DNMS_STAT_RX_ACK = 2,       /* KIND_RX_ACK events emitted */
	DNMS_STAT_RX_ICMP = 3,      /* KIND_RX_ICMP events emitted */
	DNMS_STAT_REFLECTED = 4,    /* pings answered in the kernel */
	DNMS_STAT_REFLECT_ERR = 5,  /* reflection failed half way: packet dropped */
	DNMS_STAT_REFLECT_PASS = 6, /* no FIB result for the ack: left to userspace */
	DNMS_STAT_KEYED_NO_HMAC = 7,  /* keyed: ping without the HMAC flag, left to userspace */
	DNMS_STAT_KEYED_NOT_MEMBER = 8, /* keyed: source not a member, left to userspace */
	DNMS_STAT_KEYED_EPOCH = 9,  /* keyed: epoch userspace has not confirmed, left to userspace */
	DNMS_STAT_TARGET_TX = 10,   /* DNMS_KIND_TARGET_TX events emitted */
	DNMS_STAT_TARGET_RX = 11,   /* DNMS_KIND_TARGET_RX events emitted */
	DNMS_STAT_MAX = 12,
};

/*
 * One timestamp event, handed to userspace through the ring buffer.
 * Addresses are in network byte order: IPv4 in the first 4 bytes (family 4),
 * IPv6 in all 16 (family 6).
 * Ports are in host byte order.
 */
struct dnms_event {
	__u64 ts;              /* bpf_ktime_get_ns(): ingress at program entry,
	                        * egress just before submitting */
	__u64 seq;             /* dnms sequence number (0 if unknown) */
	__u64 rx_real;         /* ingress: skb->tstamp, CLOCK_REALTIME ns when the
	                        * stack stamped the packet on arrival (before any
	                        * backlog queueing), else 0 */
	__u64 rx_mono;         /* with rx_real: bpf_ktime_get_ns() and then */
	__u64 rx_tai;          /* bpf_ktime_get_tai_ns(), read back to back, so
	                        * that userspace can place rx_real on the
	                        * monotonic clock exactly: TAI − REALTIME is a
	                        * whole number of seconds, the rest is the age */
	__u8 local_addr[16];   /* our address */
	__u8 remote_addr[16];  /* the peer the probe was sent to */
	__u8 router_addr[16];  /* KIND_RX_ICMP: the router that sent the ICMP */
	__u16 local_port;      /* the flow's source port S */
	__u16 remote_port;     /* the ping port */
	__u8 kind;             /* enum dnms_kind */
	__u8 type;             /* dnms packet type */
	__u8 ttl;              /* trace probes: TTL from header or quoted length */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 family;           /* 4 or 6 */
	__u8 pad[2];
	__u32 epoch;           /* the sending engine's epoch (0 if the quote was
	                        * too short): tells a restarted agent's probes
	                        * from its predecessor's */
};

/* The fixed dnms header (internal/probe/doc.go), big-endian fields. */
struct dnms_hdr {
	__be32 magic;
	__u8 version;
	__u8 type;
	__u8 flags;
	__u8 ttl;
	__be16 src_port;
	__be16 pad_len;
	__be32 epoch;
	__be64 seq;
	__be64 t1;
	__be64 t2;
	__be64 t3;
	__be64 rx_count;
	__be64 ack_count;
};

/* The reflector's counters for one flow (peer address, source port S). */
struct flow_key {
	__u8 peer[16];
	__u16 sport; /* host byte order */
	__u8 pad[2];
};

struct flow_val {
	__u32 epoch;
	__u32 pad;
	__u64 rx;
	__u64 ack;
};

/*
 * External target probes (internal/probe target_*.go), IPv4 and IPv6: the
 * loader puts the (protocol, port) of every open target flow into
 * target_ports (ICMP / ICMPv6: the echo identifier; TCP, UDP: our source
 * port, host byte order) and sets
 * targets_on. With targets_on 0 (no target flows) the programs never look at
 * target packets; with it, a TCP/UDP/ICMP packet costs one hash lookup.
 * Stamped: an echo request, a SYN (without ACK), a UDP datagram carrying
 * "DNMT" + seq leaving; an echo reply, a TCP segment with ACK, any UDP
 * datagram, or an ICMP error quoting one of our UDP probes arriving. The
 * event's type is the IP protocol, seq the echo sequence / our initial
 * sequence number / the UDP probe's seq (0: unknown, an arbitrary answer).
 */
struct dnms_target_key {
	__u8 proto; /* IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
	__u16 port; /* host byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dnms_target_key);
	__type(value, __u8);
} target_ports SEC(".maps");

/* Set at run time by the loader (a .bss variable, not a load-time const). */
volatile __u32 targets_on = 0;

#define DNMT_MAGIC 0x444E4D54 /* "DNMT": payload of a UDP target probe */
#define TCP_FL_SYN 0x02
#define TCP_FL_ACK 0x10

/* Keep the shared types in BTF so that bpf2go -type can emit them. */
const struct dnms_target_key *unused_target_key __attribute__((unused));
const struct dnms_event *unused_event __attribute__((unused));
const enum dnms_stat *unused_stat __attribute__((unused));
const enum dnms_kind *unused_kind __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DNMS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

/* Our addresses (network byte order); the reflector answers only these. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} local_v4 SEC(".maps");

struct addr6 {
	__u8 a[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr6);
	__type(value, __u8);
} local_v6 SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/*
 * Keyed reflector (-probeKey, or derived from -gossipKey). The kernel cannot
 * compute the HMAC, so with a key it answers a ping only when
 *   - the ping carries the HMAC flag (the tag is echoed; the prober checks
 *     it is the one it sent),
 *   - the source is a cluster member (members_v4/v6, kept equal to the
 *     memberlist members by the agent), and
 *   - the flow's epoch is one userspace confirmed from an authenticated ping
 *     (confirmed_epochs), before it may start or restart the flow's counters.
 * Anything else goes up to the userspace reflector, which verifies the HMAC,
 * answers, and confirms the epoch. So a spoofed ping never resets counters
 * and a non-member never gets an answer from the kernel.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} members_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr6);
	__type(value, __u8);
} members_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, __u32);
} confirmed_epochs SEC(".maps");

/* keyed_admit: may the kernel answer this ping at all (see above)? */
static __always_inline int keyed_admit(const struct dnms_hdr *h, const __u8 *saddr, __u8 family)
{
	if (!(h->flags & DNMS_F_HMAC)) {
		count(DNMS_STAT_KEYED_NO_HMAC);
		return 0;
	}
	if (family == 4) {
		__u32 s4;
		__builtin_memcpy(&s4, saddr, 4);
		if (!bpf_map_lookup_elem(&members_v4, &s4))
			goto not_member;
	} else {
		struct addr6 s6;
		__builtin_memcpy(s6.a, saddr, 16);
		if (!bpf_map_lookup_elem(&members_v6, &s6))
			goto not_member;
	}
	return 1;
not_member:
	count(DNMS_STAT_KEYED_NOT_MEMBER);
	return 0;
}

/* keyed_epoch_ok: may the flow's counters (re)start at epoch? */
static __always_inline int keyed_epoch_ok(const struct flow_key *k, __u32 epoch)
{
	__u32 *c = bpf_map_lookup_elem(&confirmed_epochs, k);
	if (c && *c == epoch)
		return 1;
	count(DNMS_STAT_KEYED_EPOCH);
	return 0;
}

static __always_inline struct dnms_event *reserve(__u8 family)
{
	struct dnms_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(DNMS_STAT_RESERVE_FAIL);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->family = family;
	return e;
}

static __always_inline int dnms_ok(const struct dnms_hdr *h)
{
	return h->magic == bpf_htonl(DNMS_MAGIC) && h->version == DNMS_VERSION;
}

/* A UDP datagram to the ping port, as far as the headers tell. */
struct udp_info {
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u32 payload_off; /* packet offset of the UDP payload */
	__u32 csum_off;    /* packet offset of the UDP checksum */
	__u16 sport;       /* host byte order */
	__u16 udp_len;     /* host byte order */
	__u8 family;       /* 4 or 6 */
	__u8 hop;          /* IPv4 TTL or IPv6 hop limit */
	__u8 pad[2];
};

/*
 * Make sure the Ethernet, IP and UDP headers are in the linear part of the
 * skb so that direct packet access reads them. Only skbs whose driver left
 * headers in page fragments pay for it; no byte changes.
 */
static __always_inline void linear_headers(struct __sk_buff *skb, __u32 n)
{
	if ((long)skb->data + n > (long)skb->data_end && skb->len >= n)
		bpf_skb_pull_data(skb, n);
}

/*
 * Fill u for a plain IPv4 or IPv6 UDP packet to the ping port and return 0;
 * -1 for anything else. Direct packet access only: the common non-dnms
 * packet costs a few loads.
 */
static __always_inline int parse_udp(struct __sk_buff *skb, struct udp_info *u)
{
	void *data, *end;
	struct udphdr *udp;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		linear_headers(skb, PAYLOAD_OFF);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		struct iphdr *ip = data + ETH_LEN;
		udp = data + ETH_LEN + IP_LEN;
		if ((void *)(udp + 1) > end)
			return -1;
		if (ip->protocol != IPPROTO_UDP || ip->ihl != 5)
			return -1;
		if (udp->dest != bpf_htons(ping_port))
			return -1;
		if (ip->frag_off & bpf_htons(0x3fff)) /* MF or fragment offset */
			return -1;
		__builtin_memset(u->saddr, 0, sizeof(u->saddr) + sizeof(u->daddr));
		__builtin_memcpy(u->saddr, &ip->saddr, 4);
		__builtin_memcpy(u->daddr, &ip->daddr, 4);
		u->family = 4;
		u->hop = ip->ttl;
		u->payload_off = PAYLOAD_OFF;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		linear_headers(skb, PAYLOAD6_OFF);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		struct ipv6hdr *ip6 = data + ETH_LEN;
		udp = data + ETH_LEN + IP6_LEN;
		if ((void *)(udp + 1) > end)
			return -1;
		if (ip6->nexthdr != IPPROTO_UDP || udp->dest != bpf_htons(ping_port))
			return -1;
		__builtin_memcpy(u->saddr, &ip6->saddr, 16);
		__builtin_memcpy(u->daddr, &ip6->daddr, 16);
		u->family = 6;
		u->hop = ip6->hop_limit;
		u->payload_off = PAYLOAD6_OFF;
	} else {
		return -1;
	}
	u->csum_off = u->payload_off - UDP_LEN + offsetof(struct udphdr, check);
	u->sport = bpf_ntohs(udp->source);
	u->udp_len = bpf_ntohs(udp->len);
	return 0;
}

/* Emit a stamp for the flow in u; to_us says u's destination is us. */
/*
 * The arrival time the stack put on an incoming skb (CLOCK_REALTIME), or 0.
 * Taken on enqueue to the backlog when a socket asked for timestamps, it
 * precedes TC ingress by the queueing delay (tens of us on a busy veth).
 */
static __always_inline __u64 rx_real(struct __sk_buff *skb)
{
	/* 0: BPF_SKB_TSTAMP_UNSPEC, renamed BPF_SKB_CLOCK_REALTIME in 6.11. */
	if (skb->tstamp_type != 0)
		return 0;
	return skb->tstamp;
}

/* Record the stack's arrival stamp of skb in e with the clock pair that
 * places it on the monotonic clock. */
static __always_inline void arrival(struct __sk_buff *skb, struct dnms_event *e)
{
	e->rx_real = rx_real(skb);
	if (e->rx_real) {
		e->rx_mono = bpf_ktime_get_ns();
		e->rx_tai = bpf_ktime_get_tai_ns();
	}
}

static __always_inline void emit(struct __sk_buff *skb, struct udp_info *u, __u64 now, __u8 kind,
				 struct dnms_hdr *h, int to_us)
{
	struct dnms_event *e = reserve(u->family);
	if (!e)
		return;
	e->ts = now;
	if (to_us && kind == DNMS_KIND_RX_ACK)
		arrival(skb, e);
	e->kind = kind;
	e->type = h->type;
	e->ttl = h->ttl;
	e->seq = bpf_be64_to_cpu(h->seq);
	e->epoch = bpf_ntohl(h->epoch);
	if (to_us) {
		__builtin_memcpy(e->local_addr, u->daddr, 16);
		__builtin_memcpy(e->remote_addr, u->saddr, 16);
	} else {
		__builtin_memcpy(e->local_addr, u->saddr, 16);
		__builtin_memcpy(e->remote_addr, u->daddr, 16);
	}
	e->local_port = u->sport;
	e->remote_port = ping_port;
	if (kind == DNMS_KIND_TX)
		/* Leaving: the later the better (nothing of ours runs after). */
		e->ts = bpf_ktime_get_ns();
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline int target_port(__u8 proto, __u16 port)
{
	struct dnms_target_key k = {.proto = proto, .port = port};
	return bpf_map_lookup_elem(&target_ports, &k) != 0;
}

/* The UDP target probe's seq from its payload at off ("DNMT" + be64), or 0. */
static __always_inline __u64 dnmt_seq(struct __sk_buff *skb, __u32 off)
{
	struct {
		__be32 magic;
		__be32 hi;
		__be32 lo;
	} p;
	if (bpf_skb_load_bytes(skb, off, &p, sizeof(p)) < 0 || p.magic != bpf_htonl(DNMT_MAGIC))
		return 0;
	return ((__u64)bpf_ntohl(p.hi) << 32) | bpf_ntohl(p.lo);
}

/* Where a target stamp's packet came from and went to: IPv4 in the first 4
 * bytes (family 4) or IPv6 (family 6), as in dnms_event. */
struct target_l3 {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 l4;    /* packet offset of the L4 header */
	__u8 proto;  /* IP protocol / IPv6 next header */
	__u8 family; /* 4 or 6 */
	__u8 pad[2];
};

/* Emit a target stamp; rx: an answer (local = the packet's destination). */
static __always_inline void emit_target(struct __sk_buff *skb, __u64 now, __u8 proto, const struct target_l3 *a,
					__u16 sport, __u16 dport, __u64 seq, __u8 icmp_type, int rx)
{
	struct dnms_event *e = reserve(a->family);
	if (!e)
		return;
	e->ts = now;
	e->type = proto;
	e->seq = seq;
	e->icmp_type = icmp_type;
	if (rx) {
		arrival(skb, e);
		e->kind = DNMS_KIND_TARGET_RX;
		__builtin_memcpy(e->local_addr, a->daddr, 16);
		__builtin_memcpy(e->remote_addr, a->saddr, 16);
		e->local_port = dport;
		e->remote_port = sport;
		bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
		count(DNMS_STAT_TARGET_RX);
		return;
	}
	e->kind = DNMS_KIND_TARGET_TX;
	__builtin_memcpy(e->local_addr, a->saddr, 16);
	__builtin_memcpy(e->remote_addr, a->daddr, 16);
	e->local_port = sport;
	e->remote_port = dport;
	e->ts = bpf_ktime_get_ns(); /* leaving: as late as possible */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	count(DNMS_STAT_TARGET_TX);
}

/* The first 16 bytes of a TCP header, as far as target stamps need it. */
struct tcp_head {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff;
	__u8 flags;
	__be16 window;
};

/* Fill t from a plain IPv4 (no options, not a fragment) or IPv6 (no
 * extension headers) packet; -1 for anything else. */
static __always_inline int target_l3(struct __sk_buff *skb, struct target_l3 *t)
{
	__builtin_memset(t, 0, sizeof(*t));
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_LEN, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.ihl != 5 || (ip.frag_off & bpf_htons(0x3fff)))
			return -1;
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		t->proto = ip.protocol;
		t->family = 4;
		t->l4 = ETH_LEN + IP_LEN;
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_LEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		t->proto = ip6.nexthdr;
		t->family = 6;
		t->l4 = ETH_LEN + IP6_LEN;
		return 0;
	}
	return -1;
}

/*
 * The quote of a destination unreachable at packet offset off: one of our
 * UDP target probes? Then its stamp, as an answer from the probed address
 * to our port, and 1; else 0.
 */
static __always_inline int target_unreach(struct __sk_buff *skb, __u64 now, struct target_l3 *t, __u32 off,
					  __u8 icmp_type)
{
	struct udphdr udp;
	struct target_l3 q = {.family = t->family};
	__u32 qlen;
	if (t->family == 4) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0 || ip.ihl != 5 || ip.protocol != IPPROTO_UDP)
			return 0;
		/* as seen by the answer: from the probed address to us */
		__builtin_memcpy(q.saddr, &ip.daddr, 4);
		__builtin_memcpy(q.daddr, &ip.saddr, 4);
		qlen = IP_LEN;
	} else {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0 || ip6.nexthdr != IPPROTO_UDP)
			return 0;
		__builtin_memcpy(q.saddr, &ip6.daddr, 16);
		__builtin_memcpy(q.daddr, &ip6.saddr, 16);
		qlen = IP6_LEN;
	}
	if (bpf_skb_load_bytes(skb, off + qlen, &udp, sizeof(udp)) < 0)
		return 0;
	__u16 sport = bpf_ntohs(udp.source);
	if (!target_port(IPPROTO_UDP, sport))
		return 0;
	__u64 seq = dnmt_seq(skb, off + qlen + UDP_LEN);
	emit_target(skb, now, IPPROTO_UDP, &q, bpf_ntohs(udp.dest), sport, seq, icmp_type, 1);
	return 1;
}

/*
 * One of our target probes (egress) or an answer to one (ingress)? Emits
 * the stamp and returns 1 if so, else 0. Only reached with targets_on.
 */
static __always_inline int target_packet(struct __sk_buff *skb, __u64 now, int rx)
{
	struct target_l3 t;
	if (target_l3(skb, &t) < 0)
		return 0;
	__u8 v4 = t.family == 4;
	switch (t.proto) {
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_: {
		if (t.proto != (v4 ? IPPROTO_ICMP : IPPROTO_ICMPV6_))
			return 0;
		struct {
			__u8 type;
			__u8 code;
			__u16 csum;
			__be16 id;
			__be16 seq;
		} ic;
		if (bpf_skb_load_bytes(skb, t.l4, &ic, sizeof(ic)) < 0)
			return 0;
		__u8 want = rx ? (v4 ? 0 : 129) : (v4 ? 8 : 128); /* echo reply in, echo request out */
		if (ic.type == want) {
			__u16 id = bpf_ntohs(ic.id);
			if (!target_port(t.proto, id))
				return 0;
			emit_target(skb, now, t.proto, &t, rx ? 0 : id, rx ? id : 0, bpf_ntohs(ic.seq), 0, rx);
			return 1;
		}
		if (!rx || ic.type != (v4 ? ICMP_DEST_UNREACH : ICMPV6_DEST_UNREACH))
			return 0;
		return target_unreach(skb, now, &t, t.l4 + 8, ic.type);
	}
	case IPPROTO_TCP: {
		struct tcp_head h;
		if (bpf_skb_load_bytes(skb, t.l4, &h, sizeof(h)) < 0)
			return 0;
		__u16 sport = bpf_ntohs(h.source), dport = bpf_ntohs(h.dest);
		if (rx) {
			if (!(h.flags & TCP_FL_ACK) || !target_port(IPPROTO_TCP, dport))
				return 0;
			emit_target(skb, now, IPPROTO_TCP, &t, sport, dport, bpf_ntohl(h.ack_seq) - 1, h.flags, 1);
			return 1;
		}
		if ((h.flags & (TCP_FL_SYN | TCP_FL_ACK)) != TCP_FL_SYN || !target_port(IPPROTO_TCP, sport))
			return 0;
		emit_target(skb, now, IPPROTO_TCP, &t, sport, dport, bpf_ntohl(h.seq), 0, 0);
		return 1;
	}
	case IPPROTO_UDP: {
		struct udphdr u;
		if (bpf_skb_load_bytes(skb, t.l4, &u, sizeof(u)) < 0)
			return 0;
		__u16 sport = bpf_ntohs(u.source), dport = bpf_ntohs(u.dest);
		if (!target_port(IPPROTO_UDP, rx ? dport : sport))
			return 0;
		__u64 seq = rx ? 0 : dnmt_seq(skb, t.l4 + UDP_LEN);
		if (!rx && !seq)
			return 0;
		emit_target(skb, now, IPPROTO_UDP, &t, sport, dport, seq, 0, rx);
		return 1;
	}
	}
	return 0;
}

SEC("tc")
int dnms_egress(struct __sk_buff *skb)
{
	struct udp_info u;
	struct dnms_hdr h;

	if (parse_udp(skb, &u) < 0) {
		if (targets_on)
			target_packet(skb, 0, 0);
		return TC_ACT_OK;
	}
	/* Only the first 24 bytes (magic..seq) are needed. */
	if (bpf_skb_load_bytes(skb, u.payload_off, &h, 24) < 0)
		return TC_ACT_OK;
	if (!dnms_ok(&h) || (h.type != DNMS_T_PING && h.type != DNMS_T_TRACE))
		return TC_ACT_OK;
	emit(skb, &u, 0, DNMS_KIND_TX, &h, 0);
	count(DNMS_STAT_TX);
	return TC_ACT_OK;
}

/* Replace len bytes at packet offset off and fix the UDP checksum. */
static __always_inline int store_l4(struct __sk_buff *skb, struct udp_info *u, __u32 off, void *old, void *new,
				    __u32 len)
{
	__s64 diff = bpf_csum_diff(old, len, new, len, 0);
	if (diff < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, u->payload_off + off, new, len, 0) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, u->csum_off, 0, diff, BPF_F_MARK_MANGLED_0);
}

/* The counters block t2..ack_count (bytes 32..64) of the header. */
struct dnms_tail {
	__be64 t2;
	__be64 t3;
	__be64 rx_count;
	__be64 ack_count;
};

/*
 * Where the mirrored ack of the ping in u leaves: the FIB's answer for a
 * packet this host sends (input interface lo, the way the stack looks up
 * locally generated traffic; our address to the peer; the ack's 5-tuple, so
 * the ECMP hash picks the next hop a userspace ack would get).
 */
struct ack_route {
	__u32 ifindex;      /* egress interface */
	__u8 macs[12];      /* dmac, smac: valid when neigh */
	__u8 neigh;         /* 1: neighbour resolved (bpf_redirect); 0: bpf_redirect_neigh */
	__u8 pad[3];
	struct bpf_redir_neigh nh; /* next hop for bpf_redirect_neigh */
};

/*
 * Fill r for the ack of the ping in u; -1 when the FIB has no unicast route
 * for it (or forwarding is off on lo, which bpf_fib_lookup requires: the
 * loader turns it on), and the userspace reflector should answer instead.
 */
static __always_inline int ack_route(struct __sk_buff *skb, struct udp_info *u, struct ack_route *r)
{
	struct bpf_fib_lookup p = {};
	p.l4_protocol = IPPROTO_UDP;
	p.sport = bpf_htons(u->sport); /* mirrored: B:S -> A:ping_port */
	p.dport = bpf_htons(ping_port);
	p.ifindex = LOOPBACK_IFINDEX;
	if (u->family == 4) {
		p.family = AF_INET_;
		p.tot_len = IP_LEN + u->udp_len;
		__builtin_memcpy(&p.ipv4_src, u->daddr, 4);
		__builtin_memcpy(&p.ipv4_dst, u->saddr, 4);
	} else {
		p.family = AF_INET6_;
		p.tot_len = IP6_LEN + u->udp_len;
		__builtin_memcpy(p.ipv6_src, u->daddr, 16);
		__builtin_memcpy(p.ipv6_dst, u->saddr, 16);
	}
	long rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return -1;
	r->ifindex = p.ifindex;
	r->neigh = rc == BPF_FIB_LKUP_RET_SUCCESS;
	__builtin_memcpy(r->macs, p.dmac, 6);
	__builtin_memcpy(r->macs + 6, p.smac, 6);
	/* The next hop: the gateway if the route has one, else the peer. */
	__builtin_memset(&r->nh, 0, sizeof(r->nh));
	if (p.family == AF_INET_) {
		r->nh.nh_family = AF_INET_;
		r->nh.ipv4_nh = p.ipv4_dst;
	} else {
		r->nh.nh_family = AF_INET6_;
		__builtin_memcpy(r->nh.ipv6_nh, p.ipv6_dst, 16);
	}
	return 0;
}

/* Set the ack's Ethernet addresses for r (before the redirect). */
static __always_inline int ack_l2(struct __sk_buff *skb, struct ack_route *r)
{
	if (!r->neigh)
		return 0; /* bpf_redirect_neigh writes them */
	return bpf_skb_store_bytes(skb, 0, r->macs, 12, 0);
}

/* Send the rewritten ack the way r says. */
static __always_inline int ack_redirect(struct ack_route *r)
{
	if (r->neigh)
		return bpf_redirect(r->ifindex, 0);
	return bpf_redirect_neigh(r->ifindex, &r->nh, sizeof(r->nh), 0);
}

/*
 * Turn the ping in skb into its mirrored ack and send it where the host's
 * routing table sends our packets to the peer. Returns a TC action. On a failure before the first
 * write the packet passes to userspace (whose reflector answers it); after a
 * write it is dropped, since a half-rewritten packet must not go anywhere.
 */
static __always_inline int reflect_ping(struct __sk_buff *skb, __u64 now, struct dnms_hdr *h, struct udp_info *u)
{
	__u32 hmac = (h->flags & DNMS_F_HMAC) ? DNMS_HMAC_LEN : 0;
	if (u->udp_len != UDP_LEN + DNMS_HDR_LEN + hmac + bpf_ntohs(h->pad_len))
		return TC_ACT_OK;
	if (u->family == 4) {
		__u32 d4;
		__builtin_memcpy(&d4, u->daddr, 4);
		if (!bpf_map_lookup_elem(&local_v4, &d4))
			return TC_ACT_OK;
	} else {
		struct addr6 d6;
		__builtin_memcpy(d6.a, u->daddr, 16);
		if (!bpf_map_lookup_elem(&local_v6, &d6))
			return TC_ACT_OK;
	}

	if (keyed && !keyed_admit(h, u->saddr, u->family))
		return TC_ACT_OK;

	struct ack_route r;
	if (ack_route(skb, u, &r) < 0) {
		count(DNMS_STAT_REFLECT_PASS);
		return TC_ACT_OK;
	}

	/* Per-flow counters, reset when the prober's epoch changes. */
	struct flow_key k = {};
	__builtin_memcpy(k.peer, u->saddr, 16);
	k.sport = u->sport;
	__u32 epoch = bpf_ntohl(h->epoch);
	struct flow_val *v = bpf_map_lookup_elem(&flows, &k);
	if ((!v || v->epoch != epoch) && keyed && !keyed_epoch_ok(&k, epoch))
		return TC_ACT_OK;
	if (!v) {
		struct flow_val nv = {.epoch = epoch};
		bpf_map_update_elem(&flows, &k, &nv, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&flows, &k);
		if (!v)
			return TC_ACT_OK;
	}
	if (v->epoch != epoch) {
		v->epoch = epoch;
		v->rx = 0;
		v->ack = 0;
	}
	__u64 rx = __sync_fetch_and_add(&v->rx, 1) + 1;
	__u64 ack = __sync_fetch_and_add(&v->ack, 1) + 1;

	/* Ethernet: the next hop's and the egress interface's MACs. */
	if (ack_l2(skb, &r) < 0)
		goto drop;

	/* IP: swap addresses (sum-neutral for the IPv4 and UDP checksums) and
	 * reset the TTL / hop limit (IPv4 checksum fixed incrementally; no
	 * IPv6 checksum covers the hop limit). */
	if (u->family == 4) {
		__u8 addrs[8];
		__builtin_memcpy(addrs, u->daddr, 4);
		__builtin_memcpy(addrs + 4, u->saddr, 4);
		if (bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct iphdr, saddr), addrs, 8, 0) < 0)
			goto drop;
		__u16 old_tp = bpf_htons(((__u16)u->hop << 8) | IPPROTO_UDP);
		__u16 new_tp = bpf_htons(((__u16)REFLECT_TTL << 8) | IPPROTO_UDP);
		if (bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct iphdr, ttl), &new_tp, 2, 0) < 0)
			goto drop;
		if (bpf_l3_csum_replace(skb, ETH_LEN + offsetof(struct iphdr, check), old_tp, new_tp, 2) < 0)
			goto drop;
	} else {
		__u8 addrs[32];
		__builtin_memcpy(addrs, u->daddr, 16);
		__builtin_memcpy(addrs + 16, u->saddr, 16);
		if (bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct ipv6hdr, saddr), addrs, 32, 0) < 0)
			goto drop;
		__u8 hop = REFLECT_TTL;
		if (bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct ipv6hdr, hop_limit), &hop, 1, 0) < 0)
			goto drop;
	}

	/* dnms: type and flags (bytes 4..7 as one word), t2 and counters. */
	__u32 oldw, neww;
	__builtin_memcpy(&oldw, &h->version, 4);
	__u8 *nb = (__u8 *)&neww;
	nb[0] = h->version;
	nb[1] = h->type == DNMS_T_TRACE ? DNMS_T_TRACE_ACK : DNMS_T_ACK;
	nb[2] = h->flags | DNMS_F_KERNEL;
	nb[3] = h->ttl;
	if (store_l4(skb, u, 4, &oldw, &neww, 4) < 0)
		goto drop;

	struct dnms_tail ot, nt;
	ot.t2 = h->t2;
	ot.t3 = h->t3;
	ot.rx_count = h->rx_count;
	ot.ack_count = h->ack_count;
	nt.t2 = bpf_cpu_to_be64(now);
	nt.t3 = h->t3;
	nt.rx_count = bpf_cpu_to_be64(rx);
	nt.ack_count = bpf_cpu_to_be64(ack);
	if (store_l4(skb, u, 32, &ot, &nt, sizeof(nt)) < 0)
		goto drop;

	/* t3 last, as close to the redirect as the rewrite allows. */
	__be64 t3 = bpf_cpu_to_be64(bpf_ktime_get_ns());
	if (store_l4(skb, u, 40, &nt.t3, &t3, 8) < 0)
		goto drop;

	count(DNMS_STAT_REFLECTED);
	if (reflect_events)
		emit(skb, u, now, DNMS_KIND_REFLECT, h, 1);
	return ack_redirect(&r);

drop:
	count(DNMS_STAT_REFLECT_ERR);
	return TC_ACT_SHOT;
}

/*
 * The part of an ICMP / ICMPv6 error after the quoted UDP header, at packet
 * offset off: the dnms header as far as the quote goes. Returns -1 if the
 * quote shows it is not a dnms probe.
 */
static __always_inline int quoted_dnms(struct __sk_buff *skb, __u32 off, __u16 quoted_udp_len, struct dnms_event *q)
{
	struct dnms_hdr h;

	q->type = DNMS_T_TRACE;
	if (bpf_skb_load_bytes(skb, off, &h, 24) == 0) {
		/* Quote long enough for the header up to seq. */
		if (!dnms_ok(&h))
			return -1;
		q->type = h.type;
		q->ttl = h.ttl;
		q->seq = bpf_be64_to_cpu(h.seq);
		q->epoch = bpf_ntohl(h.epoch);
	} else if (bpf_skb_load_bytes(skb, off, &h, 8) == 0) {
		if (!dnms_ok(&h))
			return -1;
		q->type = h.type;
		q->ttl = h.ttl;
	} else {
		/* RFC 792 quote: only the UDP header; TTL from its length. */
		__s32 n = (__s32)quoted_udp_len - UDP_LEN - DNMS_HDR_LEN - (hmac_default ? DNMS_HMAC_LEN : 0);
		if (n < 0 || n > 255)
			return -1;
		q->ttl = n;
	}
	return 0;
}

static __always_inline void emit_icmp(struct dnms_event *q)
{
	struct dnms_event *e = reserve(q->family);
	if (!e)
		return;
	__builtin_memcpy(e, q, sizeof(*e));
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	count(DNMS_STAT_RX_ICMP);
}

/* ICMP error quoting one of our IPv4 probes: KIND_RX_ICMP event. */
static __always_inline int icmp_error(struct __sk_buff *skb, __u64 now, __u32 router)
{
	/* ICMP header (8) + quoted IPv4 header (20) + quoted UDP header (8). */
	struct {
		__u8 type;
		__u8 code;
		__u16 csum;
		__u32 rest;
		struct iphdr ip;
		struct udphdr udp;
	} q;
	struct dnms_event ev = {};

	if (bpf_skb_load_bytes(skb, ETH_LEN + IP_LEN, &q, sizeof(q)) < 0)
		return TC_ACT_OK;
	if (q.type != ICMP_TIME_EXCEEDED && q.type != ICMP_DEST_UNREACH)
		return TC_ACT_OK;
	if (q.ip.ihl != 5 || q.ip.protocol != IPPROTO_UDP || q.udp.dest != bpf_htons(ping_port))
		return TC_ACT_OK;
	if (quoted_dnms(skb, ETH_LEN + IP_LEN + sizeof(q), bpf_ntohs(q.udp.len), &ev) < 0)
		return TC_ACT_OK;

	ev.ts = now;
	arrival(skb, &ev);
	ev.kind = DNMS_KIND_RX_ICMP;
	ev.family = 4;
	ev.icmp_type = q.type;
	ev.icmp_code = q.code;
	__builtin_memcpy(ev.local_addr, &q.ip.saddr, 4);
	__builtin_memcpy(ev.remote_addr, &q.ip.daddr, 4);
	__builtin_memcpy(ev.router_addr, &router, 4);
	ev.local_port = bpf_ntohs(q.udp.source);
	ev.remote_port = ping_port;
	emit_icmp(&ev);
	return TC_ACT_OK;
}

/* ICMPv6 error quoting one of our IPv6 probes: KIND_RX_ICMP event. */
static __always_inline int icmp6_error(struct __sk_buff *skb, __u64 now)
{
	struct {
		struct ipv6hdr outer;
		__u8 type;
		__u8 code;
		__u16 csum;
		__u32 rest;
		struct ipv6hdr ip;
		struct udphdr udp;
	} q;
	struct dnms_event ev = {};

	if (bpf_skb_load_bytes(skb, ETH_LEN, &q, sizeof(q)) < 0)
		return TC_ACT_OK;
	if (q.type != ICMPV6_TIME_EXCEED && q.type != ICMPV6_DEST_UNREACH)
		return TC_ACT_OK;
	if (q.ip.nexthdr != IPPROTO_UDP || q.udp.dest != bpf_htons(ping_port))
		return TC_ACT_OK;
	if (quoted_dnms(skb, ETH_LEN + sizeof(q), bpf_ntohs(q.udp.len), &ev) < 0)
		return TC_ACT_OK;

	ev.ts = now;
	arrival(skb, &ev);
	ev.kind = DNMS_KIND_RX_ICMP;
	ev.family = 6;
	ev.icmp_type = q.type;
	ev.icmp_code = q.code;
	__builtin_memcpy(ev.local_addr, &q.ip.saddr, 16);
	__builtin_memcpy(ev.remote_addr, &q.ip.daddr, 16);
	__builtin_memcpy(ev.router_addr, &q.outer.saddr, 16);
	ev.local_port = bpf_ntohs(q.udp.source);
	ev.remote_port = ping_port;
	emit_icmp(&ev);
	return TC_ACT_OK;
}

SEC("tc")
int dnms_ingress(struct __sk_buff *skb)
{
	__u64 now = bpf_ktime_get_ns();
	struct udp_info u;
	struct dnms_hdr h;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		linear_headers(skb, ETH_LEN + IP_LEN);
		void *data = (void *)(long)skb->data;
		void *end = (void *)(long)skb->data_end;
		struct iphdr *ip = data + ETH_LEN;
		if ((void *)(ip + 1) > end)
			return TC_ACT_OK;
		if (ip->protocol == IPPROTO_ICMP) {
			if (ip->ihl != 5)
				return TC_ACT_OK;
			if (targets_on && target_packet(skb, now, 1))
				return TC_ACT_OK;
			return icmp_error(skb, now, ip->saddr);
		}
		/* An answer to a target probe (never to the ping port: that
		 * port is not a target flow's). */
		if (targets_on && (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) &&
		    target_packet(skb, now, 1))
			return TC_ACT_OK;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		linear_headers(skb, ETH_LEN + IP6_LEN);
		void *data = (void *)(long)skb->data;
		void *end = (void *)(long)skb->data_end;
		struct ipv6hdr *ip6 = data + ETH_LEN;
		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		if (ip6->nexthdr == IPPROTO_ICMPV6_) {
			if (targets_on && target_packet(skb, now, 1))
				return TC_ACT_OK;
			return icmp6_error(skb, now);
		}
		if (targets_on && (ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_UDP) &&
		    target_packet(skb, now, 1))
			return TC_ACT_OK;
	}

	if (parse_udp(skb, &u) < 0)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, u.payload_off, &h, sizeof(h)) < 0)
		return TC_ACT_OK;
	if (!dnms_ok(&h))
		return TC_ACT_OK;

	switch (h.type) {
	case DNMS_T_PING:
	case DNMS_T_TRACE:
		if (!reflect)
			return TC_ACT_OK;
		return reflect_ping(skb, now, &h, &u);
	case DNMS_T_ACK:
	case DNMS_T_TRACE_ACK:
		/* Mirrored ack B:S -> A:P: we are A, the flow's port is S. */
		emit(skb, &u, now, DNMS_KIND_RX_ACK, &h, 1);
		count(DNMS_STAT_RX_ACK);
		return TC_ACT_OK;
	}
	return TC_ACT_OK;
}

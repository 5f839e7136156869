// The udp backend's kernel data path: flannel's udp wire format (one raw
// IPv4 packet per UDP datagram, port 8285) made and taken apart in the
// kernel instead of in the agent.
//
// weft_udp_encap runs at tcx egress of flannel0, a persistent TUN device
// that the cluster network is routed to: it finds the peer node that holds
// the inner destination (routes, an LPM trie), decrements the inner TTL as
// a router does, adds a placeholder Ethernet header and outer IPv4 and UDP
// headers, and redirects the packet to the underlay device, whose neighbour
// table fills in the MAC addresses. A TCP super-packet stays one; UDP
// tunnel GSO cuts it into datagrams on the way out.
//
// weft_udp_decap runs at XDP on the underlay device: it takes a datagram to
// this node's address and port from a peer (senders), checks the inner
// packet as the agent does (well-formed IPv4, source inside the sender's
// subnet, destination inside this node's), strips the outer headers and
// passes the inner packet to the stack, which forwards it to the bridge as
// it forwards any routed packet (netfilter, NetworkPolicy, TTL).
//
// Whatever either program cannot or should not do itself it leaves to the
// agent's userspace path by passing it on unchanged: packets with no peer
// (ICMP net unreachable) or an expiring TTL (time exceeded) reach the
// agent through flannel0; outer fragments and inner IP options reach its
// UDP socket. Drops are counted in counters, by reason.
//
// Regenerate with `go generate ./internal/backend/udp/` (clang and
// libbpf-dev); CI checks that the committed objects match.

//go:build ignore

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17
#define OVERHEAD 28 /* outer IPv4 and UDP headers */

struct eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip4 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct udp {
	__be16 source;
	__be16 dest;
	__be16 len;
	__sum16 check;
};

// config is what the agent tells both programs (one entry, key 0). The
// programs do nothing of their own until ifindex is set.
struct config {
	__be32 subnet;    // this node's subnet
	__be32 mask;      // and its mask
	__be32 public_ip; // this node's underlay address: outer source, decap destination
	__u32 ifindex;    // the underlay device
	__be16 port;      // the backend's UDP port
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct route_key {
	__u32 prefixlen;
	__be32 addr;
};

// routes maps each peer's subnet to its underlay address.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct route_key);
	__type(value, __be32);
} routes SEC(".maps");

struct sender {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct subnet {
	__be32 addr;
	__be32 mask;
};

// senders maps each peer's underlay address and port to its subnet.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sender);
	__type(value, struct subnet);
} senders SEC(".maps");

// The counters, by index; the agent adds them to its own.
enum counter {
	COUNT_TX,          // packets sent (datagrams, after segmentation)
	COUNT_RX,          // packets received and passed to the stack
	COUNT_STRANGER,    // datagram from an address and port that holds no lease
	COUNT_SPOOFED,     // inner source outside the sender's subnet
	COUNT_MALFORMED,   // not a well-formed IPv4 packet inside
	COUNT_DESTINATION, // inner destination outside this node's subnet
	COUNT_SEND_ERROR,  // the packet could not be encapsulated
	COUNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 c, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);
	if (v)
		*v += n;
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config, &zero);
	if (!c || !c->ifindex)
		return 0;
	return c;
}

SEC("tc")
int weft_udp_encap(struct __sk_buff *skb)
{
	struct config *cfg = get_config();
	if (!cfg)
		return TC_ACT_OK;
	if (bpf_skb_pull_data(skb, sizeof(struct ip4)))
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ip4 *ip = data;
	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	if (ip->ver_ihl != 0x45)
		return TC_ACT_OK; // not IPv4, or IP options: the agent's path
	struct route_key k = {.prefixlen = 32, .addr = ip->daddr};
	__be32 *peer = bpf_map_lookup_elem(&routes, &k);
	if (!peer || ip->ttl <= 1)
		return TC_ACT_OK; // the agent answers with an ICMP error
	__be32 dst = *peer;

	// The TTL, as a router decrements it: the high byte of the word at
	// offset 8, so the checksum changes by that word's difference.
	__u16 old = *(__u16 *)&ip->ttl;
	__u16 new = old;
	((__u8 *)&new)[0] -= 1;
	__u32 inner = skb->len;
	// The datagrams this packet becomes: bpf_skb_adjust_room resets the
	// count of a super-packet.
	__u32 segs = skb->gso_segs ? skb->gso_segs : 1;
	__u32 gso = skb->gso_size;
	if (bpf_skb_store_bytes(skb, 8, &new, 2, 0) ||
	    bpf_l3_csum_replace(skb, 10, old, new, 2))
		goto fail;

	// bpf_redirect_neigh needs a MAC header to fill in; flannel0 has none.
	if (bpf_skb_change_head(skb, ETH_HLEN, 0))
		goto fail;
	__be16 proto = bpf_htons(ETH_P_IP);
	if (bpf_skb_store_bytes(skb, 12, &proto, 2, 0))
		goto fail;
	if (bpf_skb_adjust_room(skb, OVERHEAD, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |
					BPF_F_ADJ_ROOM_ENCAP_L4_UDP)) {
		// A packet that is a tunnel's already (a pod's own VXLAN with
		// offloads) cannot be marked as encapsulated twice; one that is not
		// a super-packet needs no mark, only the room. A super-packet of
		// that kind is dropped (send-error): Datapath tun carries it.
		if (gso || bpf_skb_adjust_room(skb, OVERHEAD, BPF_ADJ_ROOM_MAC, 0))
			goto fail;
	}

	struct {
		struct ip4 ip;
		struct udp udp;
	} h = {};
	__u32 total = inner + OVERHEAD;
	if (total > 0xffff)
		total = 0xffff; // a super-packet: segmentation writes each datagram's
	h.ip.ver_ihl = 0x45;
	h.ip.tot_len = bpf_htons((__u16)total);
	h.ip.frag_off = bpf_htons(0x4000); // DF
	h.ip.ttl = 64;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = cfg->public_ip;
	h.ip.daddr = dst;
	h.ip.check = ~fold(bpf_csum_diff(0, 0, (__be32 *)&h.ip, sizeof(h.ip), 0));
	h.udp.source = cfg->port;
	h.udp.dest = cfg->port;
	h.udp.len = bpf_htons((__u16)(total - sizeof(struct ip4)));
	// UDP checksum 0: none, valid over IPv4.
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0))
		goto fail;
	count(COUNT_TX, segs);
	return bpf_redirect_neigh(cfg->ifindex, 0, 0, 0);
fail:
	count(COUNT_SEND_ERROR, 1);
	return TC_ACT_SHOT;
}

SEC("xdp")
int weft_udp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct eth *eth = data;
	if ((void *)(eth + 1) > end || eth->proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct ip4 *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > end)
		return XDP_PASS;
	// Outer options and fragments go to the agent's socket.
	if (outer->ver_ihl != 0x45 || outer->protocol != IPPROTO_UDP ||
	    (outer->frag_off & bpf_htons(0x3fff)))
		return XDP_PASS;
	struct config *cfg = get_config();
	if (!cfg || outer->daddr != cfg->public_ip)
		return XDP_PASS;
	struct udp *udp = (void *)(outer + 1);
	if ((void *)(udp + 1) > end || udp->dest != cfg->port)
		return XDP_PASS;

	// A datagram to the backend's port: from here every outcome counts.
	struct sender s = {.addr = outer->saddr, .port = udp->source};
	struct subnet *from = bpf_map_lookup_elem(&senders, &s);
	if (!from) {
		count(COUNT_STRANGER, 1);
		return XDP_DROP;
	}
	struct ip4 *in = (void *)(udp + 1);
	if ((void *)(in + 1) > end || in->ver_ihl >> 4 != 4 || (in->ver_ihl & 0xf) < 5)
		goto malformed;
	if (in->ver_ihl != 0x45)
		return XDP_PASS; // inner options: the agent's path checks them
	__u16 olen = bpf_ntohs(outer->tot_len);
	if ((void *)outer + olen > end || bpf_ntohs(udp->len) != olen - sizeof(*outer) ||
	    bpf_ntohs(in->tot_len) != olen - OVERHEAD)
		goto malformed;
	if (fold(bpf_csum_diff(0, 0, (__be32 *)in, sizeof(*in), 0)) != 0xffff)
		goto malformed;
	if ((in->saddr & from->mask) != from->addr) {
		count(COUNT_SPOOFED, 1);
		return XDP_DROP;
	}
	if ((in->daddr & cfg->mask) != cfg->subnet) {
		count(COUNT_DESTINATION, 1);
		return XDP_DROP;
	}

	// Strip the outer headers: the Ethernet header moves up to the inner
	// packet.
	struct eth e = *eth;
	if (bpf_xdp_adjust_head(ctx, OVERHEAD))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	*eth = e;
	count(COUNT_RX, 1);
	return XDP_PASS;
malformed:
	count(COUNT_MALFORMED, 1);
	return XDP_DROP;
}

char __license[] SEC("license") = "Dual MIT/GPL";

// Package nft renders a policy.Ruleset into nftables and applies it: one
// table, `table inet weft-policy`, for IPv4 and IPv6, written in one
// transaction per Apply through the nft binary (`nft -f -`).
//
// # Shape
//
// Two base chains on the forward hook (bridged same-node traffic reaches
// it through br_netfilter; cross-node traffic is routed), policy accept:
// egress at priority filter - 1, whose accept lets a packet on to ingress
// at priority filter. Each starts by accepting the replies of tracked
// connections and related packets (ICMP errors), then sends the packet by
// its local pod's address through a verdict map (egress4/egress6 keyed by
// source, ingress4/ingress6 by destination) to the pod's group chain with
// goto. A packet of the original direction is evaluated every time, so a
// policy change that denies an established connection stops it at its next
// packet; an address in no map is not isolated and passes.
//
// A group chain jumps to the chain of each policy that selects its pods,
// any of which may accept; if none does, the packet is (optionally logged
// to NFLOG, rate-limited, and) dropped by a rule that looks the pod up in
// the set denied-in4/6 or denied-out4/6, whose elements (every isolated
// pod address) carry a counter each: Applier.Denied reads them. A policy
// chain has one to four rules per policy rule (per family, and per kind of
// port match: numbers, or named ports resolved to destination address,
// protocol and port), whose peers and ports are interval sets named after
// the chain and the rule, CHAIN-rI-peers4/6 and CHAIN-rI-named4/6, and
// ports-HASH, named by its content and shared by all rules with the same
// ports (a table's sets weigh on every command that names one: the kernel
// finds a set by a linear scan).
// A rule with an empty peer or port list matches nothing and renders
// nothing. Names depend only on policies, so a pod that comes or goes
// changes set and map elements only.
//
// # Example
//
// Pod web/api-0 (10.244.1.2), isolated for ingress by policy web/allow-web,
// which allows TCP 80 from 10.244.1.2-10.244.1.3, renders (Render, with
// Options.LogGroup 3) to:
//
//	add table inet weft-policy
//	delete table inet weft-policy
//	add table inet weft-policy
//	add map inet weft-policy egress4 { type ipv4_addr : verdict ; }
//	add set inet weft-policy denied-out4 { type ipv4_addr ; counter ; }
//	add map inet weft-policy egress6 { type ipv6_addr : verdict ; }
//	add set inet weft-policy denied-out6 { type ipv6_addr ; counter ; }
//	add map inet weft-policy ingress4 { type ipv4_addr : verdict ; }
//	add set inet weft-policy denied-in4 { type ipv4_addr ; counter ; }
//	add map inet weft-policy ingress6 { type ipv6_addr : verdict ; }
//	add set inet weft-policy denied-in6 { type ipv6_addr ; counter ; }
//	add set inet weft-policy ports-9e3916bc9d1056ee { typeof meta l4proto . th dport ; flags interval ; }
//	add set inet weft-policy in_web_allow-web-r0-peers4 { type ipv4_addr ; flags interval ; }
//	add chain inet weft-policy egress { type filter hook forward priority -1 ; policy accept ; }
//	add chain inet weft-policy ingress { type filter hook forward priority 0 ; policy accept ; }
//	add chain inet weft-policy gin-5f3a2c10
//	add chain inet weft-policy in_web_allow-web
//	add element inet weft-policy ingress4 { 10.244.1.2 : goto gin-5f3a2c10 }
//	add element inet weft-policy denied-in4 { 10.244.1.2 }
//	add element inet weft-policy ports-9e3916bc9d1056ee { tcp . 80 }
//	add element inet weft-policy in_web_allow-web-r0-peers4 { 10.244.1.2-10.244.1.3 }
//	add rule inet weft-policy egress ct state established,related ct direction reply accept
//	add rule inet weft-policy egress ct state related accept
//	add rule inet weft-policy egress ip saddr vmap @egress4
//	add rule inet weft-policy egress ip6 saddr vmap @egress6
//	add rule inet weft-policy ingress ct state established,related ct direction reply accept
//	add rule inet weft-policy ingress ct state related accept
//	add rule inet weft-policy ingress ip daddr vmap @ingress4
//	add rule inet weft-policy ingress ip6 daddr vmap @ingress6
//	add rule inet weft-policy gin-5f3a2c10 jump in_web_allow-web
//	add rule inet weft-policy gin-5f3a2c10 limit rate 10/second burst 20 packets log group 3 prefix "weft-deny-in "
//	add rule inet weft-policy gin-5f3a2c10 ip daddr @denied-in4 drop
//	add rule inet weft-policy gin-5f3a2c10 ip6 daddr @denied-in6 drop
//	add rule inet weft-policy gin-5f3a2c10 drop
//	add rule inet weft-policy in_web_allow-web ip saddr @in_web_allow-web-r0-peers4 meta l4proto . th dport @ports-9e3916bc9d1056ee accept comment "web/allow-web"
//
// # Transactions
//
// Every Apply is one transaction (`nft -f`), so packets meet either the
// old rule set or the new one. The first Apply, the first after a failed
// one, and the first after Resync replace the table: add, delete and add
// it again, then everything (a table left by an earlier run, whatever its
// content, is replaced atomically, never emptied first). Otherwise Apply
// sends only the difference from the table it wrote last (Diff): set and
// map elements added and removed, chains flushed and refilled only when
// their rules changed, objects added first and removed last. A difference
// of elements only (pods that come, go or change groups; a selector that
// gains or loses a pod) goes as netlink messages in one batch, still one
// transaction: nft 1.0.6 reads every interval set's elements back from the
// kernel before it sends any, which at 1000 policies costs more than the
// change.
//
// The nft binary, driven as kube-proxy's knftables drives it, rather than
// netlink (github.com/google/nftables): concatenated interval sets, typeof
// keys and verdict maps are a line of nft text each, where netlink needs
// their key layout and interval ends encoded by hand, and the text of a
// transaction is at once the golden test, what `weft policy explain --nft`
// can print, and what `nft -c` checks. The text is written here rather than
// by knftables, which sends each element as its own command: the kernel
// finds a set by a linear scan of the table's sets for every command, so
// at 1000 policies and 5000 pods (45,000 elements in 5,000 sets) one
// command per element took seconds of kernel time, one per set a fraction.
package nft

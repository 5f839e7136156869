package cni

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Masquerade for pods, the bridge plugin's ipMasq as flannel's plugin asks
// for it (ipMasq = !FLANNEL_IPMASQ): the traffic of a pod's address to a
// destination outside the pod's subnet, other than multicast, leaves the
// node with the node's address. It lives in weft-cni's own table in the
// node's namespace, `table inet weft-cni`:
//
//	chain postrouting { type nat hook postrouting priority 100;
//	    ip daddr 224.0.0.0/4 return
//	    ip saddr @pods_ip ip daddr != @subnets_ip masquerade
//	    ip6 daddr ff00::/8 return
//	    ip6 saddr @pods_ip6 ip6 daddr != @subnets_ip6 masquerade }
//
// A pod is one element of a set, keyed by its address: ADD adds it, DEL
// and GC remove it. The IPAM store gives an address to one attachment at a
// time, and DEL removes the elements of the addresses the store still holds
// for the attachment before it frees them, so a DEL never removes another
// pod's element. The subnets sets hold the node's subnets, replaced at each
// ADD. The rules are written by the nft binary (`nft -f -`, one atomic
// transaction), as the bridge plugin's nftables backend does: the plugin
// stays small and links no nftables library.

// masqTable is weft-cni's table in the node's namespace.
const masqTable = "inet weft-cni"

// masqFamily is the data that differs between the families' rules.
type masqFamily struct {
	proto     string // nft's payload protocol: ip, ip6
	addrType  string // nft's set type
	multicast string
}

var masqFamilies = []masqFamily{
	{"ip", "ipv4_addr", "224.0.0.0/4"},
	{"ip6", "ipv6_addr", "ff00::/8"},
}

func (f masqFamily) pods() string    { return "pods_" + f.proto }
func (f masqFamily) subnets() string { return "subnets_" + f.proto }

// masqFamilyOf returns the masquerade family of a.
func masqFamilyOf(a netip.Addr) masqFamily {
	if a.Is4() {
		return masqFamilies[0]
	}
	return masqFamilies[1]
}

// masqSkeleton declares the table, its sets and its chain, idempotently
// (`add` of an existing object is no error).
func masqSkeleton(b *bytes.Buffer) {
	fmt.Fprintf(b, "add table %s\n", masqTable)
	for _, f := range masqFamilies {
		fmt.Fprintf(b, "add set %s %s { type %s; }\n", masqTable, f.pods(), f.addrType)
		fmt.Fprintf(b, "add set %s %s { type %s; flags interval; }\n", masqTable, f.subnets(), f.addrType)
	}
	fmt.Fprintf(b, "add chain %s postrouting { type nat hook postrouting priority 100; }\n", masqTable)
}

// masqAddScript is the transaction of ADD: the table as above (its chain
// rewritten, so that it is exact whatever was there), the node's subnets,
// and the pod's addresses.
func masqAddScript(n node, pod []netip.Addr) []byte {
	var b bytes.Buffer
	masqSkeleton(&b)
	fmt.Fprintf(&b, "flush chain %s postrouting\n", masqTable)
	for _, f := range masqFamilies {
		fmt.Fprintf(&b, "add rule %s postrouting %s daddr %s return\n", masqTable, f.proto, f.multicast)
		fmt.Fprintf(&b, "add rule %s postrouting %s saddr @%s %s daddr != @%s masquerade\n", masqTable, f.proto, f.pods(), f.proto, f.subnets())
	}
	for _, f := range masqFamilies {
		fmt.Fprintf(&b, "flush set %s %s\n", masqTable, f.subnets())
	}
	for _, fam := range n.fams {
		fmt.Fprintf(&b, "add element %s %s { %s }\n", masqTable, masqFamilyOf(fam.gw).subnets(), fam.subnet)
	}
	for _, a := range pod {
		fmt.Fprintf(&b, "add element %s %s { %s }\n", masqTable, masqFamilyOf(a).pods(), a)
	}
	return b.Bytes()
}

// masqDelScript removes the pods' elements; one that is not there is no
// error (it is added, then deleted, in the same transaction).
func masqDelScript(pods []netip.Addr) []byte {
	var b bytes.Buffer
	masqSkeleton(&b)
	for _, a := range pods {
		f := masqFamilyOf(a)
		fmt.Fprintf(&b, "add element %s %s { %s }\n", masqTable, f.pods(), a)
		fmt.Fprintf(&b, "delete element %s %s { %s }\n", masqTable, f.pods(), a)
	}
	return b.Bytes()
}

// nftPath finds the nft binary: in PATH, or, as a runtime may run the
// plugin with no PATH at all, in the system's binary directories.
func nftPath() (string, error) {
	if p, err := exec.LookPath("nft"); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"} {
		if p, err := exec.LookPath(dir + "/nft"); err == nil {
			return p, nil
		}
	}
	return "", errors.New("the nft binary is in neither PATH nor /usr/sbin, /sbin, /usr/bin, /bin, /usr/local/sbin, /usr/local/bin: install nftables")
}

// nft runs the nft binary with script on stdin: `nft -f -`.
func nft(ctx context.Context, script []byte) error {
	bin, err := nftPath()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "-f", "-")
	cmd.Stdin = bytes.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f -: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// masqAdd writes the pod's masquerade (see above).
func masqAdd(ctx context.Context, n node, pod []netip.Addr) error {
	if err := nft(ctx, masqAddScript(n, pod)); err != nil {
		return fmt.Errorf("masquerade %s: %w", pod, err)
	}
	return nil
}

// masqDel removes the pods' masquerade. Idempotent: with no weft-cni table
// (the plugin never masqueraded on this node) or no nft binary (it never
// could have), there is nothing to remove and it touches nothing.
func masqDel(ctx context.Context, pods []netip.Addr) error {
	if len(pods) == 0 {
		return nil
	}
	bin, err := nftPath()
	if err != nil {
		return nil
	}
	// `nft list tables inet`: one "table inet NAME" line per table.
	out, err := exec.CommandContext(ctx, bin, "list", "tables", "inet").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("nft list tables inet: %w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return fmt.Errorf("nft list tables inet: %w", err)
	}
	if !hasTable(out, masqTable) {
		return nil
	}
	if err := nft(ctx, masqDelScript(pods)); err != nil {
		return fmt.Errorf("remove the masquerade of %s: %w", pods, err)
	}
	return nil
}

// hasTable reports whether `nft list tables` output lists table
// ("inet weft-cni").
func hasTable(out []byte, table string) bool {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "table "+table {
			return true
		}
	}
	return false
}

package policy

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// MaxNameLen is the longest chain or group name Compile produces, well
// under nftables' limit (NFT_CHAIN_MAXNAMELEN, 256 bytes with the NUL).
const MaxNameLen = 200

// chainName names the chain of the policy key ("namespace/name") for dir:
// "in_NS_NAME" or "eg_NS_NAME". Kubernetes names contain only
// [a-z0-9.-], so the underscores keep the name unambiguous
// ("in_a-b_c" is a-b/c, "in_a_b-c" is a/b-c). A name with other
// characters, or longer than MaxNameLen, is cut and made unique with the
// FNV-1a hash of the full key: "in_NS_NAMEPREFIX_h0123abcd" (three
// underscores: never the name of another policy). Only [A-Za-z0-9_.-]
// appear, which nft accepts unquoted after the leading letter.
func chainName(dir Direction, key string) string {
	prefix := "in"
	if dir == Egress {
		prefix = "eg"
	}
	ns, name, _ := strings.Cut(key, "/")
	plain := prefix + "_" + ns + "_" + name
	if nameSafe(ns) && nameSafe(name) && ns != "" && name != "" && len(plain) <= MaxNameLen {
		return plain
	}
	suffix := fmt.Sprintf("_h%08x", hash32(key))
	body := prefix + "_" + sanitize(ns) + "_" + sanitize(name)
	if len(body) > MaxNameLen-len(suffix) {
		body = body[:MaxNameLen-len(suffix)]
	}
	return body + suffix
}

// groupName names the group of the sorted chain list for dir:
// "gin-0123abcd" or "geg-0123abcd", the FNV-1a hash of the list.
func groupName(dir Direction, chains []string) string {
	prefix := "gin"
	if dir == Egress {
		prefix = "geg"
	}
	return fmt.Sprintf("%s-%08x", prefix, hash32(strings.Join(chains, "\n")))
}

func hash32(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// nameSafe reports whether s holds only the characters a Kubernetes name
// may hold, [A-Za-z0-9.-].
func nameSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if !safeByte(s[i]) {
			return false
		}
	}
	return true
}

func safeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-'
}

// sanitize replaces every byte outside [A-Za-z0-9.-] with '-'.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !safeByte(c) {
			b[i] = '-'
		}
	}
	return string(b)
}

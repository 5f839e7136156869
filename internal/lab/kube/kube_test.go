package kube

import (
	"net/netip"
	"testing"
)

func TestFreePodCIDR(t *testing.T) {
	v4 := PodNetwork{Prefix: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24}
	if got := freePodCIDR(v4, map[string]bool{}); got != "10.244.1.0/24" {
		t.Errorf("first podCIDR: %s", got)
	}
	if got := freePodCIDR(v4, map[string]bool{"10.244.1.0/24": true, "10.244.2.0/24": true, "10.244.4.0/24": true}); got != "10.244.3.0/24" {
		t.Errorf("first free podCIDR: %s", got)
	}
	if got := freePodCIDR(v4, map[string]bool{"10.244.1.0/24": true}); got != "10.244.2.0/24" {
		t.Errorf("after 10.244.1.0/24: %s", got)
	}
	v6 := PodNetwork{Prefix: netip.MustParsePrefix("2001:db8:244::/56"), SubnetLen: 64}
	if got := freePodCIDR(v6, map[string]bool{"2001:db8:244:1::/64": true}); got != "2001:db8:244:2::/64" {
		t.Errorf("IPv6 after 2001:db8:244:1::/64: %s", got)
	}
	small := PodNetwork{Prefix: netip.MustParsePrefix("10.244.0.0/30"), SubnetLen: 31}
	if got := freePodCIDR(small, map[string]bool{"10.244.0.2/31": true}); got != "" {
		t.Errorf("a full network: %q", got)
	}
}

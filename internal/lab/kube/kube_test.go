package kube

import "testing"

func TestFreePodCIDR(t *testing.T) {
	if got := freePodCIDR(map[string]bool{}); got != "10.244.1.0/24" {
		t.Errorf("first podCIDR: %s", got)
	}
	if got := freePodCIDR(map[string]bool{"10.244.1.0/24": true, "10.244.2.0/24": true, "10.244.4.0/24": true}); got != "10.244.3.0/24" {
		t.Errorf("first free podCIDR: %s", got)
	}
	if got := freePodCIDR(map[string]bool{"10.244.1.0/24": true}); got != "10.244.2.0/24" {
		t.Errorf("after 10.244.1.0/24: %s", got)
	}
}

package nft

import (
	"bytes"
	"testing"
)

func TestEncodeElem(t *testing.T) {
	ts, err := build(every(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		set, elem string
		add       bool
		want      []nlElem
	}{
		{"ingress4", "10.244.1.2 : goto gin-00000001", true, []nlElem{{key: []byte{10, 244, 1, 2}, gotoChain: "gin-00000001"}}},
		{"ingress4", "10.244.1.2", false, []nlElem{{key: []byte{10, 244, 1, 2}}}},
		{"denied-in6", "fd00::1", true, []nlElem{{key: []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}}}},
		{"in_db_allow-api-r0-named4", "10.244.1.4 . tcp . 9187", true, []nlElem{{key: []byte{10, 244, 1, 4, 6, 0, 0, 0, 0x23, 0xe3, 0, 0}}}},
		{"in_db_allow-api-r0-named6", "fd00::4 . sctp . 80", false, []nlElem{{key: []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 132, 0, 0, 0, 0, 80, 0, 0}}}},
		{"in_db_allow-api-r0-peers4", "10.244.2.0-10.244.2.255", true, []nlElem{{key: []byte{10, 244, 2, 0}}, {key: []byte{10, 244, 3, 0}, intervalEnd: true}}},
		{"in_db_allow-api-r0-peers4", "10.244.2.7", false, []nlElem{{key: []byte{10, 244, 2, 7}}, {key: []byte{10, 244, 2, 8}, intervalEnd: true}}},
		{"in_db_allow-api-r0-peers4", "200.0.0.0-255.255.255.255", true, []nlElem{{key: []byte{200, 0, 0, 0}}}},
	} {
		got, err := encodeElem(ts.sets[c.set], c.elem, c.add)
		if err != nil {
			t.Errorf("%s %s: %v", c.set, c.elem, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("%s %s: %+v, want %+v", c.set, c.elem, got, c.want)
			continue
		}
		for i := range got {
			if !bytes.Equal(got[i].key, c.want[i].key) || got[i].intervalEnd != c.want[i].intervalEnd || got[i].gotoChain != c.want[i].gotoChain {
				t.Errorf("%s %s: element %d %+v, want %+v", c.set, c.elem, i, got[i], c.want[i])
			}
		}
	}
	for _, bad := range []struct{ set, elem string }{
		{"ingress4", "10.244.1.2 : jump x"}, {"ingress4", "nope : goto x"}, {"in_db_allow-api-r0-named4", "10.244.1.4 . icmp . 1"},
		{"in_db_allow-api-r0-named4", "10.244.1.4 . tcp"}, {"in_db_allow-api-r0-peers4", "10.244.2.0-x"},
	} {
		if got, err := encodeElem(ts.sets[bad.set], bad.elem, true); err == nil {
			t.Errorf("%s %s: encoded as %+v", bad.set, bad.elem, got)
		}
	}
	var ports *setState
	for name, s := range ts.sets {
		if name[:6] == "ports-" {
			ports = s
		}
	}
	if _, err := encodeElem(ports, "tcp . 80", true); err == nil {
		t.Error("a ports set element encoded (they never change: their sets are named by content)")
	}
}

// TestElementsOnly: only a transaction of element changes takes the
// netlink path.
func TestElementsOnly(t *testing.T) {
	var x tx
	if elementsOnly(x) {
		t.Error("empty transaction")
	}
	x.elements(verbAdd, "ingress4", []string{"10.244.1.2 : goto g"})
	x.elements(verbDelete, "denied-in4", []string{"10.244.1.3"})
	if !elementsOnly(x) {
		t.Error("elements only: not recognised")
	}
	x.flush("c")
	if elementsOnly(x) {
		t.Error("with a chain flush")
	}
}

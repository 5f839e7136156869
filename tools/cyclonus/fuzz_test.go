package cyclonus

import "testing"

// FuzzMatcher compares weft's compiled rules with cyclonus's matcher on
// clusters and policies built from the fuzz input (see randomWorld).
func FuzzMatcher(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a"))
	f.Add([]byte("a cluster of pods with labels and policies with peers and ports, named and numbered, ingress and egress"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w := randomWorld(&byteChooser{b: data})
		var o outcome
		w.compare("fuzz", &o)
		for _, msg := range o.failures {
			t.Error(msg)
		}
	})
}

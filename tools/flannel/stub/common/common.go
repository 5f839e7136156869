// Package common is weft's stand-in for the Tencent Cloud SDK package that
// flannel's tencent-vpc backend imports and the Go module proxy does not
// serve. It has only the helpers flannel uses; nothing here talks to a cloud.
package common

// StringPtr returns &s.
func StringPtr(s string) *string { return &s }

// StringPtrs returns pointers to each of ss.
func StringPtrs(ss []string) []*string {
	out := make([]*string, len(ss))
	for i := range ss {
		out[i] = &ss[i]
	}
	return out
}

// BoolPtr returns &b.
func BoolPtr(b bool) *bool { return &b }

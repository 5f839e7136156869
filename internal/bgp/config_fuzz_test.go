package bgp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/weftnet/weft/internal/config"
)

// The fuzz targets check, for any input: no panic; a refusal is one line
// naming the key, annotation or flag, and does not depend on a password's
// text (only on its length and where a bad character is), so that it
// cannot show it; a marker planted in any string of the document (or
// field of the flag) that is not an address or CIDR never shows either,
// wherever the string is (a peer written where the list goes, a bare
// string where an object goes); what is accepted round-trips through its
// resolved form.

// otherPassword returns a password of the same length in bytes with the
// same control characters and invalid bytes in the same places, every
// other character replaced: a message that differs between the two
// depends on the password's text.
func otherPassword(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1, unicode.IsControl(r):
			b.WriteString(s[i : i+n])
		default:
			b.WriteString([]string{"", "x", "é", "€", "𝄞"}[n])
		}
		i += n
	}
	return b.String()
}

// decodeDoc decodes a JSON document keeping numbers as written; false
// when it does not decode.
func decodeDoc(doc []byte) (any, bool) {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil || d.More() {
		return nil, false
	}
	return v, true
}

// mapStrings replaces every string value in v, the root included, by
// fn(path, s), where path holds the object keys as written and the list
// indexes (ints) from the root; it returns the new root.
func mapStrings(v any, path []any, fn func(path []any, s string) string) any {
	switch x := v.(type) {
	case string:
		return fn(path, x)
	case map[string]any:
		for k, e := range x {
			x[k] = mapStrings(e, append(slices.Clip(path), k), fn)
		}
	case []any:
		for i, e := range x {
			x[i] = mapStrings(e, append(slices.Clip(path), i), fn)
		}
	}
	return v
}

// mapDoc decodes doc, applies mapStrings and encodes the result; nil when
// doc does not decode.
func mapDoc(doc []byte, fn func(path []any, s string) string) []byte {
	v, ok := decodeDoc(doc)
	if !ok {
		return nil
	}
	out, err := json.Marshal(mapStrings(v, nil, fn))
	if err != nil {
		return nil
	}
	return out
}

// mapPasswords applies fn to every string that is the value of a
// "Password" key (in any case), wherever it is in doc; nil when doc does
// not decode.
func mapPasswords(doc []byte, fn func(string) string) []byte {
	return mapDoc(doc, func(path []any, s string) string {
		if len(path) > 0 {
			if k, ok := path[len(path)-1].(string); ok && strings.EqualFold(k, "Password") {
				return fn(s)
			}
		}
		return s
	})
}

// marker is planted where a password might be: no JSON number, no word
// of any message.
const marker = "Qz7xMk"

// plantMarker returns copies of doc with the marker as one of its strings,
// one copy for each string at a path that shown does not allow (the first
// 24), and one with the marker as all of them; nil when doc does not
// decode or already holds the marker (a message may show it as a key).
func plantMarker(doc []byte, shown func(path []any) bool) [][]byte {
	all := mapDoc(doc, func(path []any, s string) string {
		if shown(path) {
			return s
		}
		return marker
	})
	if all == nil || bytes.Contains(mapDoc(doc, func(_ []any, s string) string { return s }), []byte(marker)) {
		return nil
	}
	docs := [][]byte{all}
	for i := 0; i < 24; i++ {
		n := 0
		one := mapDoc(doc, func(path []any, s string) string {
			if shown(path) {
				return s
			}
			n++
			if n-1 == i {
				return marker
			}
			return s
		})
		if i >= n {
			break
		}
		docs = append(docs, one)
	}
	return docs
}

// at reports whether path is want, keys matched in any case and "#"
// matching any list index.
func at(path []any, want ...string) bool {
	if len(path) != len(want) {
		return false
	}
	for i, w := range want {
		switch p := path[i].(type) {
		case string:
			if !strings.EqualFold(p, w) {
				return false
			}
		case int:
			if w != "#" {
				return false
			}
		}
	}
	return true
}

// shownInDoc: the strings of net-conf.json's BGP object that a message
// may quote, written where an address, router ID or CIDR goes.
func shownInDoc(path []any) bool {
	return at(path, "RouterID") || at(path, "RoutableNetworks", "#") || at(path, "Peers", "#", "Address")
}

// shownInPeers: the same for the peers annotation.
func shownInPeers(path []any) bool { return at(path, "#", "Address") }

// noMarker fails when err shows the marker planted in what.
func noMarker(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), marker) {
		t.Fatalf("the message shows text that may be a password:\n%s\n%v", what, err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func oneLineError(t *testing.T, err error) {
	t.Helper()
	if s := err.Error(); strings.ContainsAny(s, "\n\r") || !utf8.ValidString(s) {
		t.Fatalf("not one line of text: %q", s)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{fullDoc, `{}`, `null`, `{"LocalAS":23456}`, `{"localas":1,"LocalAS":2}`,
		`{"Peers":[{"Address":"192.0.2.1","AS":64500,"Password":"a\u0000b"}]}`,
		`{"Peers":[{"Address":"::ffff:192.0.2.1","AS":1,"password":"` + strings.Repeat("é", 41) + `"},{"Address":"192.0.2.1","AS":2}]}`,
		`{"RoutableNetworks":["203.0.113.7/24"],"HoldTime":2}`, `{"ListenPort":-1,"RestartTime":4095,"Enabled":false}`,
		`{"Peers":[{"Address":"192.0.2.1","AS":64500,"Password":"s3cret","Pasword":"s3cret"}]}`,
		// Wrong types where a password may be: an object where the
		// list goes, a bare string where a peer or the object goes.
		`{"Peers":{"AS":64500,"Password":"s3cret"}}`, `{"Peers":"s3cret"}`, `{"Peers":["s3cret"]}`,
		`{"Peers":[["192.0.2.1",64500,"s3cret"]]}`, `"s3cret"`, `["s3cret"]`,
		`{"LocalAS":"s3cret"}`, `{"Enabled":{"Password":"s3cret"}}`, `{"RoutableNetworks":{"Password":"s3cret"}}`,
		`{"Peers":[{"Address":{"Password":"s3cret"},"AS":1}]}`, `{"Peers":[{"Address":"192.0.2.1","AS":1,"Port":"s3cret"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) || (ce.Key != "BGP" && !strings.HasPrefix(ce.Key, "BGP.")) || ce.Msg == "" {
				t.Fatalf("%q: error %v is not a *config.Error naming a BGP key", doc, err)
			}
			oneLineError(t, err)
		} else {
			checkRoundTrip(t, c)
		}
		same := mapPasswords(doc, func(s string) string { return s })
		other := mapPasswords(doc, otherPassword)
		if same == nil {
			return
		}
		_, e1 := Parse(same)
		_, e2 := Parse(other)
		if errString(e1) != errString(e2) {
			t.Fatalf("the message depends on the password's text:\n%s: %v\n%s: %v", same, e1, other, e2)
		}
		for _, d := range plantMarker(doc, shownInDoc) {
			_, err := Parse(d)
			noMarker(t, string(d), err)
		}
	})
}

func FuzzParseAnnotations(f *testing.F) {
	f.Add("64513", "192.0.2.13", `[{"Address":"192.0.2.1","AS":64500,"Password":"s3 cret"}]`)
	f.Add("", "", "[]")
	f.Add("23456", "2001:db8::1", `[{"Address":"192.0.2.1","AS":64500,"Password":"s3cret\n"}]`)
	f.Add("4294967295", "0.0.0.0", `[{"Address":"192.0.2.1"`)
	f.Add(" 1 ", "192.0.2.1 ", `[{"address":"2001:db8::1","as":1,"holdtime":3,"port":0,"multihop":255},{"Address":"192.0.2.1","AS":4294967294}]`)
	for _, peers := range []string{`{"AS":64500,"Password":"s3cret"}`, `"s3cret"`, `["s3cret"]`,
		`[{"Address":"192.0.2.1","AS":64500},["s3cret"]]`, `[{"Address":"192.0.2.1","AS":"s3cret"}]`} {
		f.Add("", "", peers)
	}
	f.Fuzz(func(t *testing.T, localAS, routerID, peers string) {
		ann := map[string]string{AnnotationLocalAS: localAS, AnnotationRouterID: routerID, AnnotationPeers: peers}
		n, err := ParseAnnotations(ann)
		if err != nil {
			var se *SettingError
			if !errors.As(err, &se) || !strings.HasPrefix(se.Setting, "annotation bgp.weft.io/") || se.Msg == "" {
				t.Fatalf("error %v does not name the annotation", err)
			}
			oneLineError(t, err)
		} else {
			// Round trip: the settings written back as annotations.
			c := Config{Enabled: true, HoldTime: DefaultHoldTime, Peers: n.Peers}
			back := map[string]string{}
			if n.LocalAS != 0 {
				back[AnnotationLocalAS] = strconv.FormatUint(uint64(n.LocalAS), 10)
			}
			if n.RouterID.IsValid() {
				back[AnnotationRouterID] = n.RouterID.String()
			}
			if n.PeersSet {
				b, _ := json.Marshal(c.Resolved()["Peers"])
				back[AnnotationPeers] = string(b)
			}
			got, err := ParseAnnotations(back)
			want := n
			want.Peers = redacted(c).Peers
			if !n.PeersSet {
				want.Peers = nil
			}
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip through %q:\n got %+v %v\nwant %+v", back, got, err, want)
			}
		}
		same := mapPasswords([]byte(peers), func(s string) string { return s })
		if same == nil {
			return
		}
		other := mapPasswords([]byte(peers), otherPassword)
		ann[AnnotationPeers] = string(same)
		_, e1 := ParseAnnotations(ann)
		ann[AnnotationPeers] = string(other)
		_, e2 := ParseAnnotations(ann)
		if errString(e1) != errString(e2) {
			t.Fatalf("the message depends on the password's text:\n%s: %v\n%s: %v", same, e1, other, e2)
		}
		for _, d := range plantMarker([]byte(peers), shownInPeers) {
			_, err := ParseAnnotations(map[string]string{AnnotationPeers: string(d)})
			noMarker(t, string(d), err)
		}
	})
}

func FuzzParsePeerFlag(f *testing.F) {
	f.Add("192.0.2.1,as=64500", []byte(""))
	f.Add("2001:db8::1,as=4200000000,port=1179,multihop=3,hold-time=1m30s,password-file=/pw", []byte("s3 cr,et\"ü\n"))
	f.Add("192.0.2.1,as=1,password-file=/pw", []byte("a\r\n"))
	f.Add("192.0.2.1,as=1,password-file=/pw", []byte("a\xe9\x00"))
	f.Add("192.0.2.1,as=1,password-file=/missing", []byte("x"))
	f.Add("192.0.2.1,as=1,password=hunter2", []byte(""))
	f.Add("password=hunter2,as=1", []byte(""))
	f.Add("192.0.2.1,as=23456,,port=65536", []byte(""))
	f.Add("192.0.2.1,as=64500,s3cret", []byte(""))
	f.Add("192.0.2.1,s3cret=x,as=64500", []byte(""))
	f.Add("192.0.2.1,as=64500,Password=s3cret", []byte(""))
	f.Fuzz(func(t *testing.T, flag string, file []byte) {
		read := func(content []byte) func(string) ([]byte, error) {
			return func(path string) ([]byte, error) {
				if path == "/missing" {
					return nil, errors.New("open /missing: no such file or directory")
				}
				return content, nil
			}
		}
		p, err := ParsePeerFlag(flag, read(file))
		if err != nil {
			var se *SettingError
			if !errors.As(err, &se) || !strings.HasPrefix(se.Setting, "--bgp-peer") || se.Msg == "" {
				t.Fatalf("error %v does not name --bgp-peer", err)
			}
			oneLineError(t, err)
		} else {
			back := fmt.Sprintf("%s,as=%d,port=%d,multihop=%d", p.Address, p.AS, p.Port, p.Multihop)
			if p.HoldTime != 0 {
				back += fmt.Sprintf(",hold-time=%d", p.HoldTime.Milliseconds()/1000)
			}
			if p.Password != "" {
				back += ",password-file=/pw"
			}
			got, err := ParsePeerFlag(back, read([]byte(p.Password+"\n")))
			if err != nil || got != p {
				t.Fatalf("round trip through %q:\n got %+v %v\nwant %+v", back, got, err, p)
			}
		}
		// The password file's text, and a password on the command line,
		// never show.
		_, e2 := ParsePeerFlag(otherFlagPassword(flag), read([]byte(otherPassword(string(file)))))
		if errString(err) != errString(e2) {
			t.Fatalf("the message depends on the password's text: %v\n%v", err, e2)
		}
		// A field that is not one of --bgp-peer's is not shown, at any
		// position after the address: it may be, or hold, the password.
		if strings.Contains(flag, marker) {
			return
		}
		fields := strings.Split(flag, ",")
		for i := 1; i <= len(fields) && i <= 16; i++ {
			for _, planted := range []string{marker, " " + marker + " ", marker + "=1", "x" + marker + "=", "pw=" + marker,
				"Password=" + marker, " password = " + marker} {
				// Before field i, and in its place.
				flags := []string{strings.Join(slices.Insert(slices.Clone(fields), i, planted), ",")}
				if i < len(fields) {
					g := slices.Clone(fields)
					g[i] = planted
					flags = append(flags, strings.Join(g, ","))
				}
				for _, s := range flags {
					_, err := ParsePeerFlag(s, read(file))
					noMarker(t, s, err)
				}
			}
		}
	})
}

// otherFlagPassword replaces the text of every password= field.
func otherFlagPassword(flag string) string {
	fields := strings.Split(flag, ",")
	for i, f := range fields {
		if k, v, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == "password" {
			fields[i] = k + "=" + otherPassword(v)
		}
	}
	return strings.Join(fields, ",")
}

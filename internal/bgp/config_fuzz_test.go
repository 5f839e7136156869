package bgp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
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
// cannot show it; what is accepted round-trips through its resolved form.

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

// mapPasswords decodes a document and applies fn to the value of every
// "Password" key (in any case) of a peer in list, where list finds the
// peers' list in the document; it returns the document encoded again, or
// nil when it does not decode.
func mapPasswords(doc []byte, list func(any) []any, fn func(string) string) []byte {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil || d.More() {
		return nil
	}
	for _, p := range list(v) {
		if obj, ok := p.(map[string]any); ok {
			for k, pw := range obj {
				if s, ok := pw.(string); ok && strings.EqualFold(k, "Password") {
					obj[k] = fn(s)
				}
			}
		}
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return out
}

func peersOf(v any) []any {
	obj, _ := v.(map[string]any)
	var out []any
	for k, l := range obj {
		if strings.EqualFold(k, "Peers") {
			list, _ := l.([]any)
			out = append(out, list...)
		}
	}
	return out
}

func listOf(v any) []any {
	l, _ := v.([]any)
	return l
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
		`{"Peers":[{"Address":"192.0.2.1","AS":64500,"Password":"s3cret","Pasword":"s3cret"}]}`} {
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
		same := mapPasswords(doc, peersOf, func(s string) string { return s })
		other := mapPasswords(doc, peersOf, otherPassword)
		if same == nil {
			return
		}
		_, e1 := Parse(same)
		_, e2 := Parse(other)
		if errString(e1) != errString(e2) {
			t.Fatalf("the message depends on the password's text:\n%s: %v\n%s: %v", same, e1, other, e2)
		}
	})
}

func FuzzParseAnnotations(f *testing.F) {
	f.Add("64513", "192.0.2.13", `[{"Address":"192.0.2.1","AS":64500,"Password":"s3 cret"}]`)
	f.Add("", "", "[]")
	f.Add("23456", "2001:db8::1", `[{"Address":"192.0.2.1","AS":64500,"Password":"s3cret\n"}]`)
	f.Add("4294967295", "0.0.0.0", `[{"Address":"192.0.2.1"`)
	f.Add(" 1 ", "192.0.2.1 ", `[{"address":"2001:db8::1","as":1,"holdtime":3,"port":0,"multihop":255},{"Address":"192.0.2.1","AS":4294967294}]`)
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
		same := mapPasswords([]byte(peers), listOf, func(s string) string { return s })
		if same == nil {
			return
		}
		other := mapPasswords([]byte(peers), listOf, otherPassword)
		ann[AnnotationPeers] = string(same)
		_, e1 := ParseAnnotations(ann)
		ann[AnnotationPeers] = string(other)
		_, e2 := ParseAnnotations(ann)
		if errString(e1) != errString(e2) {
			t.Fatalf("the message depends on the password's text:\n%s: %v\n%s: %v", same, e1, other, e2)
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

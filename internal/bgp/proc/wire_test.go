package proc

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
)

// fullConfig sets every field of bgp.Config and bgp.Peer; nonZero fails
// when a field was added and not set here, so that the wire test covers
// it.
func fullConfig() bgp.Config {
	return bgp.Config{
		Enabled: true, LocalAS: 64512, RouterID: netip.MustParseAddr("192.0.2.11"), ListenPort: 1179,
		Peers: []bgp.Peer{
			{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, Password: `s3cret "#,= \n`, Port: 1179, Multihop: 2, HoldTime: 30 * time.Second},
			{Address: netip.MustParseAddr("2001:db8::1"), AS: 4200000000, Password: "ü", Port: 179, Multihop: 1, HoldTime: 9 * time.Second},
		},
		HoldTime: 9 * time.Second, GracefulRestart: true, RestartTime: 30 * time.Second, Import: true,
		RoutableNetworks: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:0:f::/64")},
	}
}

func nonZero(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		if v.Type().PkgPath() != "github.com/weftnet/weft/internal/bgp" {
			if v.IsZero() {
				t.Errorf("%s is zero in the test's config: set it", path)
			}
			return
		}
		for i := range v.NumField() {
			nonZero(t, v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Slice:
		if v.Len() == 0 {
			t.Errorf("%s is empty in the test's config: set it", path)
		}
		for i := range v.Len() {
			nonZero(t, v.Index(i), path)
		}
	default:
		if v.IsZero() {
			t.Errorf("%s is zero in the test's config: set it", path)
		}
	}
}

func TestStartRoundTrip(t *testing.T) {
	c := fullConfig()
	nonZero(t, reflect.ValueOf(c), "Config")
	in := Command{Start: &Start{Config: WireConfig(c), Underlay4: netip.MustParseAddr("192.0.2.11"),
		Underlay6: netip.MustParseAddr("2001:db8::11"), Restarting: true, LogLevel: slog.LevelDebug}}
	line, err := EncodeLine(in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
		t.Errorf("not one line: %q", line)
	}
	out, err := DecodeCommand(bytes.TrimSuffix(line, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Start.Config.BGP(); !reflect.DeepEqual(got, c) {
		t.Errorf("config after the wire:\n%+v\nwant\n%+v", got, c)
	}
	out.Start.Config = Config{}
	in.Start.Config = Config{}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("start after the wire: %+v, want %+v", out.Start, in.Start)
	}
	// bgp.Peer's own JSON still leaves the password out: only the wire
	// has it.
	b, _ := json.Marshal(c)
	if strings.Contains(string(b), "s3cret") {
		t.Errorf("bgp.Config's JSON shows a password: %s", b)
	}
}

func TestDecodeCommandEvent(t *testing.T) {
	for _, bad := range []string{``, `{}`, `[]`, `null`, `{"announce":{"ID":1},"withdraw":{"ID":2}}`, `{"announce":{"ID":"x"}}`,
		`{"announce":{"Routes":[{"Prefix":"10.0.0.0/33"}]}}`} {
		if _, err := DecodeCommand([]byte(bad)); err == nil {
			t.Errorf("DecodeCommand(%q) took it", bad)
		}
	}
	for _, bad := range []string{``, `{}`, `{"state":{},"exit":{}}`, `{"state":{"Learned":[{"Prefix":"x"}]}}`,
		`{"state":{"Status":[{"address":"300.1.1.1"}]}}`, `{"reply":null}`, `"state"`} {
		if _, err := DecodeEvent([]byte(bad)); err == nil {
			t.Errorf("DecodeEvent(%q) took it", bad)
		}
	}
	st := State{
		Learned: []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), NextHop: netip.MustParseAddr("192.0.2.12"), Peer: netip.MustParseAddr("192.0.2.1")}},
		Status: []bgp.PeerStatus{{Address: netip.MustParseAddr("192.0.2.1"), AS: 64500, State: "established",
			Since: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Sent: 1, Received: 2, Flaps: 3, LastError: "x"}},
		Synced: true,
	}
	for _, ev := range []Event{{State: &st}, {Reply: ReplyTo(7, bgp.ErrWithdrawn)}, {Reply: ReplyTo(8, errors.New("boom"))},
		{Reply: ReplyTo(9, nil)}, {Exit: &Exit{Error: "start BGP speaker: port taken"}}, {Exit: &Exit{}}} {
		line, err := EncodeLine(ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeEvent(line)
		if err != nil {
			t.Fatalf("DecodeEvent(%s): %v", line, err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Errorf("DecodeEvent(%s) = %+v, want %+v", line, got, ev)
		}
	}
	if err := ReplyTo(7, bgp.ErrWithdrawn).Err(); !errors.Is(err, bgp.ErrWithdrawn) {
		t.Errorf("a withdrawn reply's error is %v, want bgp.ErrWithdrawn", err)
	}
	if err := ReplyTo(8, errors.New("boom")).Err(); err == nil || err.Error() != "boom" {
		t.Errorf("reply error %v, want boom", err)
	}
	if err := ReplyTo(9, nil).Err(); err != nil {
		t.Errorf("a success's error: %v", err)
	}
}

// TestDecodeLog: a record of slog's JSONHandler comes back with its time,
// level, message and attributes in order, groups as groups; anything else
// is no record.
func TestDecodeLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: durations}))
	log.With("component", "gobgp").Warn("BGP session up", "peer", netip.MustParseAddr("192.0.2.1"), "as", uint32(64500),
		"rate", 1.5, "up", true, "wait", 90*time.Second, slog.Group("g", "a", 1, "b", "x"), "err", errors.New("boom"), "list", []int{1, 2})
	line := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	r, ok := DecodeLog(line)
	if !ok {
		t.Fatalf("DecodeLog(%s): not a record", line)
	}
	var text bytes.Buffer
	h := slog.NewTextHandler(&text, &slog.HandlerOptions{ReplaceAttr: func(g []string, a slog.Attr) slog.Attr {
		if len(g) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	if err := h.Handle(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	want := `level=WARN msg="BGP session up" component=gobgp peer=192.0.2.1 as=64500 rate=1.5 up=true wait=1m30s g.a=1 g.b=x err=boom list="[1 2]"` + "\n"
	if text.String() != want {
		t.Errorf("logged again:\n%s\nwant\n%s", text.String(), want)
	}
	if time.Since(r.Time) > time.Minute || r.Time.After(time.Now()) {
		t.Errorf("record time %s, want the child's", r.Time)
	}
	for _, l := range []string{"panic: boom", "", `{"level":"INFO"}`, `{"msg":"x"}`, `{"level":"LOUD","msg":"x"}`,
		`{"time":"yesterday","level":"INFO","msg":"x"}`, `{"level":"INFO","msg":"x"} {}`, `{"level":"INFO","msg":"x"`,
		`WARNING: DATA RACE`, `[1]`, `{"level":"INFO","msg":"x","a":` + strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 41)} {
		if _, ok := DecodeLog([]byte(l)); ok {
			t.Errorf("DecodeLog(%q) took it", l)
		}
	}
	if r, ok := DecodeLog([]byte(`{"level":"DEBUG-4","msg":"x"}`)); !ok || r.Level != slog.LevelDebug-4 {
		t.Errorf("DEBUG-4: %v %v", r.Level, ok)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{`{"state":{"Learned":[{"Prefix":"10.244.2.0/24","NextHop":"192.0.2.12","Peer":"192.0.2.1"}],"Status":[{"address":"192.0.2.1","as":64500,"state":"established","since":"2026-01-02T03:04:05Z","prefixesSent":1,"prefixesReceived":2,"flaps":3}],"Synced":true}}`,
		`{"reply":{"ID":3,"Error":"x","Withdrawn":true}}`, `{"exit":{"Error":"port"}}`, `{"exit":{}}`, `{}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ev, err := DecodeEvent(line)
		if err != nil {
			return
		}
		if count(ev.State != nil, ev.Reply != nil, ev.Exit != nil) != 1 {
			t.Fatalf("DecodeEvent(%q) = %+v: not one message", line, ev)
		}
		// What it took encodes and decodes to the same.
		again, err := EncodeLine(ev)
		if err != nil {
			t.Fatalf("encode %+v: %v", ev, err)
		}
		ev2, err := DecodeEvent(again)
		if err != nil {
			t.Fatalf("DecodeEvent(%s), from %q: %v", again, line, err)
		}
		if !reflect.DeepEqual(normalize(ev), normalize(ev2)) {
			t.Fatalf("round trip of %q: %+v, then %+v", line, ev, ev2)
		}
	})
}

// normalize drops what JSON does not keep: empty slices against nil,
// time zones.
func normalize(ev Event) Event {
	if ev.State != nil {
		st := *ev.State
		if len(st.Learned) == 0 {
			st.Learned = nil
		}
		if len(st.Status) == 0 {
			st.Status = nil
		}
		for i := range st.Status {
			st.Status[i].Since = st.Status[i].Since.UTC()
		}
		ev.State = &st
	}
	return ev
}

func FuzzDecodeLog(f *testing.F) {
	for _, s := range []string{`{"time":"2026-01-02T03:04:05.123Z","level":"INFO","msg":"BGP session up","peer":"192.0.2.1","as":64500}`,
		`{"level":"WARN","msg":"x","g":{"a":1,"b":{"c":[1,"2",null]}},"f":1e400}`, `panic: x`, `{"level":"ERROR+2","msg":""}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, ok := DecodeLog(line)
		if !ok {
			return
		}
		// A record it took logs again without trouble.
		var buf bytes.Buffer
		if err := slog.NewJSONHandler(&buf, nil).Handle(t.Context(), r); err != nil {
			t.Fatalf("log the record of %q: %v", line, err)
		}
		if !json.Valid(buf.Bytes()) {
			t.Fatalf("the record of %q logs as invalid JSON: %s", line, buf.Bytes())
		}
	})
}

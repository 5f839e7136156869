package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/internal/etcdserver/etcdservertest"
	"github.com/weftnet/weft/internal/lease"
	"github.com/weftnet/weft/internal/lease/leasetest"
)

// proxy forwards TCP connections to an etcd server. Cutting it closes its
// listener and every connection, as a network outage or an etcd restart
// would; opening it listens again on the same address.
type proxy struct {
	addr, target string

	mu    sync.Mutex // guards the fields below
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup // the accept loop and the copiers
}

func startProxy(t *testing.T, targetURL string) *proxy {
	t.Helper()
	u, err := url.Parse(targetURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: "127.0.0.1:0", target: u.Host, conns: map[net.Conn]bool{}}
	p.open(t)
	p.addr = p.ln.Addr().String()
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) url() string { return "http://" + p.addr }

func (p *proxy) open(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy: listen on %s again: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[u] = true, true
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, u}, {u, c}} {
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
}

// cut closes the listener and every connection, and waits for the
// goroutines to end.
func (p *proxy) cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
}

// logBuffer is a slog destination tests can read while the store writes.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines that contain every one of words.
func (l *logBuffer) lines(words ...string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(line, w) }) {
			out = append(out, line)
		}
	}
	return out
}

// waitLine waits up to 10 s for a log line holding every one of words.
func (l *logBuffer) waitLine(t *testing.T, words ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(l.lines(words...)) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within 10s; log:\n%s", words, l.String())
		}
	}
}

// cutSetup starts etcd, a proxy in front of it, a store that reaches etcd
// through the proxy (logging into the returned buffer) and a client that
// reaches it directly, for the writes made while the store is cut off.
func cutSetup(t *testing.T) (*Store, *proxy, *clientv3.Client, *logBuffer) {
	t.Helper()
	srv := embedded(t)
	p := startProxy(t, srv)
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := NewFromClient(client(t, p.url()), DefaultPrefix, log)
	if err := s.PutConfig(context.Background(), []byte(`{"Network":"10.244.0.0/16"}`)); err != nil {
		t.Fatal(err)
	}
	return s, p, client(t, srv), logs
}

const value = `{"PublicIP":"192.0.2.%d","PublicIPv6":null,"BackendType":"conformance"}`

func put(t *testing.T, cli *clientv3.Client, subnet string, n int) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), DefaultPrefix+"/subnets/"+subnet, fmt.Sprintf(value, n))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func del(t *testing.T, cli *clientv3.Client, subnet string) int64 {
	t.Helper()
	resp, err := cli.Delete(context.Background(), DefaultPrefix+"/subnets/"+subnet)
	if err != nil || resp.Deleted != 1 {
		t.Fatalf("delete %s: %v, %d deleted", subnet, err, resp.Deleted)
	}
	return resp.Header.Revision
}

func keys(rs []lease.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Key
	}
	slices.Sort(out)
	return out
}

// TestWatchResumes: a watch cut off from etcd, while leases are added and
// removed, resumes from its revision when etcd is back: every change
// arrives, in order, with no Reset; the cut is logged once, naming the
// endpoint.
func TestWatchResumes(t *testing.T) {
	s, p, admin, logs := cutSetup(t)
	put(t, admin, "10.244.1.0-24", 1)
	w := leasetest.StartWatch(t, s)
	if e := w.Next(t); !e.Reset || e.Cause != lease.CauseStart || !slices.Equal(keys(e.Leases), []string{"10.244.1.0-24"}) {
		t.Fatalf("first event %+v", e)
	}
	put(t, admin, "10.244.2.0-24", 2)
	if e := w.Next(t); e.Reset || e.Record.Key != "10.244.2.0-24" {
		t.Fatalf("event %+v, want 10.244.2.0-24", e)
	}

	p.cut()
	logs.waitLine(t, "lost the connection", p.url())
	put(t, admin, "10.244.3.0-24", 3)
	del(t, admin, "10.244.1.0-24")
	put(t, admin, "10.244.2.0-24", 22)
	w.None(t, 300*time.Millisecond) // nothing reaches the store while cut
	p.open(t)

	e := w.Next(t)
	if e.Reset || e.Deleted || e.Record.Key != "10.244.3.0-24" || e.Record.Lease.Attrs.PublicIP.String() != "192.0.2.3" {
		t.Fatalf("first event after the cut: %+v, want 10.244.3.0-24 put", e)
	}
	if e := w.Next(t); e.Reset || !e.Deleted || e.Record.Key != "10.244.1.0-24" {
		t.Fatalf("second event after the cut: %+v, want 10.244.1.0-24 deleted", e)
	}
	if e := w.Next(t); e.Reset || e.Record.Key != "10.244.2.0-24" || e.Record.Lease.Attrs.PublicIP.String() != "192.0.2.22" {
		t.Fatalf("third event after the cut: %+v, want 10.244.2.0-24 at 192.0.2.22", e)
	}
	w.None(t, 300*time.Millisecond)
	logs.waitLine(t, "connected again", p.url())
	if n := len(logs.lines("lost the connection")); n != 1 {
		t.Errorf("%d lines for one cut, want 1:\n%s", n, logs)
	}
	if n := len(logs.lines("listing the leases again")); n != 0 {
		t.Errorf("the store listed again after a cut it could resume:\n%s", logs)
	}
}

// TestWatchCompacted: when etcd compacts past the watch's revision while
// the store is cut off, the watch cannot resume; the store lists again,
// and the Reset says so and holds the lease added meanwhile and not the
// one removed meanwhile.
func TestWatchCompacted(t *testing.T) {
	s, p, admin, logs := cutSetup(t)
	put(t, admin, "10.244.1.0-24", 1)
	put(t, admin, "10.244.2.0-24", 2)
	w := leasetest.StartWatch(t, s)
	if e := w.Next(t); !e.Reset || len(e.Leases) != 2 {
		t.Fatalf("first event %+v", e)
	}

	p.cut()
	logs.waitLine(t, "lost the connection", p.url())
	del(t, admin, "10.244.1.0-24")
	rev := put(t, admin, "10.244.3.0-24", 3)
	if _, err := admin.Compact(context.Background(), rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	p.open(t)

	start := time.Now()
	e := w.Next(t)
	if !e.Reset || e.Cause != lease.CauseCompacted {
		t.Fatalf("event after the compaction: %+v, want a Reset with cause %s", e, lease.CauseCompacted)
	}
	if got, want := keys(e.Leases), []string{"10.244.2.0-24", "10.244.3.0-24"}; !slices.Equal(got, want) {
		t.Errorf("Reset after the compaction holds %v, want %v", got, want)
	}
	t.Logf("relisted %v after etcd was back", time.Since(start).Round(time.Millisecond))
	logs.waitLine(t, "compacted", "level=WARN", p.url())
	// And it follows from the new list.
	put(t, admin, "10.244.4.0-24", 4)
	if e := w.Next(t); e.Reset || e.Record.Key != "10.244.4.0-24" {
		t.Fatalf("event after the relist: %+v", e)
	}
}

// TestInvalidRecords: records whose key or value does not decode are
// listed apart, with a reason that never holds the value, both in the
// Reset and as events; List skips them at debug level only.
func TestInvalidRecords(t *testing.T) {
	s, _, admin, logs := cutSetup(t)
	ctx := context.Background()
	big := `{"PublicIP":"192.0.2.1","X":"` + strings.Repeat("SECRETVALUE", 500) + `"}`
	for k, v := range map[string]string{
		"garbage":       "SECRETVALUE",
		"10.244.5.0-24": big,
		"10.244.6.0-24": `{"PublicIP":"SECRETVALUE"}`,
	} {
		if _, err := admin.Put(ctx, DefaultPrefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	put(t, admin, "10.244.1.0-24", 1)
	w := leasetest.StartWatch(t, s)
	e := w.Next(t)
	if !e.Reset || !slices.Equal(keys(e.Leases), []string{"10.244.1.0-24"}) {
		t.Fatalf("Reset %+v, want only 10.244.1.0-24 in Leases", e)
	}
	if got, want := keys(e.Invalid), []string{"10.244.5.0-24", "10.244.6.0-24", "garbage"}; !slices.Equal(got, want) {
		t.Fatalf("Invalid %v, want %v", got, want)
	}
	for _, r := range e.Invalid {
		if r.Err == nil || r.Lease.Subnet.IsValid() || r.Lease.Created != 0 {
			t.Errorf("invalid record %s: Err %v, Lease %+v", r.Key, r.Err, r.Lease)
		}
	}
	// The oversized value is refused undecoded; its error quotes nothing of it.
	for _, r := range e.Invalid {
		if r.Key == "10.244.5.0-24" && strings.Contains(r.Err.Error(), "SECRETVALUE") {
			t.Errorf("the error of an oversized value quotes it: %v", r.Err)
		}
	}
	if _, err := admin.Put(ctx, DefaultPrefix+"/subnets/10.244.1.0-24", big); err != nil {
		t.Fatal(err)
	}
	if e := w.Next(t); e.Reset || e.Record.Key != "10.244.1.0-24" || e.Record.Err == nil || strings.Contains(e.Record.Err.Error(), "SECRETVALUE") {
		t.Fatalf("event for a value that no longer decodes: %+v", e)
	}
	ls, err := s.List(ctx)
	if err != nil || len(ls) != 0 {
		t.Fatalf("List = %+v, %v; want no lease", ls, err)
	}
	if warn := logs.lines("level=WARN"); len(warn) != 0 {
		t.Errorf("bad records logged as warnings: %q", warn)
	}
	if len(logs.lines("level=DEBUG", "does not decode", "10.244.1.0-24")) != 1 {
		t.Errorf("List did not log the bad record at debug level:\n%s", logs)
	}
}

// TestEndpoints: a malformed endpoint is refused in one line that names it
// and shows a good one; an unreachable one is named in the error.
func TestEndpoints(t *testing.T) {
	for _, ep := range []string{"127.0.0.1:2379", "localhost:2379", "http://etcd", "ftp://etcd:2379", "http://etcd:99999",
		"http://etcd:2379/v2", "http//etcd:2379", "unix://"} {
		_, err := New(Options{Endpoints: []string{"http://127.0.0.1:2379", ep}}, nil)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", ep)) || !strings.Contains(err.Error(), "e.g. http://127.0.0.1:2379") ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("endpoint %q: %v, want one line naming it and an example", ep, err)
		}
	}
	if _, err := New(Options{Endpoints: []string{""}}, nil); err == nil || !strings.Contains(err.Error(), "--etcd-endpoints") {
		t.Errorf("no endpoint: %v", err)
	}
	for _, ep := range []string{"http://127.0.0.1:2379", "https://etcd1.example:2379", "http://[::1]:2379", "unix:///run/etcd.sock", " http://192.0.2.1:2379 "} {
		s, err := New(Options{Endpoints: []string{ep}}, nil)
		if err != nil {
			t.Errorf("endpoint %q refused: %v", ep, err)
			continue
		}
		s.Close()
	}

	// Nothing listens there: the error names the endpoint.
	dead := fmt.Sprintf("http://127.0.0.1:%d", etcdservertest.FreePort(t))
	s, err := New(Options{Endpoints: []string{dead}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = s.List(ctx)
	if err == nil || !strings.Contains(err.Error(), dead) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("List from an unreachable etcd: %v, want it to name %s and wrap the deadline", err, dead)
	}
}

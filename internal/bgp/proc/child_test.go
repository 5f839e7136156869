package proc

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/bgp"
	"github.com/weftnet/weft/internal/bgp/bgptest"
)

// fakeEngine is an Engine that records what Serve asks of it.
type fakeEngine struct {
	cfg  bgp.Config
	opts bgp.Options
	// runErr is Run's error at once (a start-up failure); nil: Run
	// serves until its context ends or Withdraw.
	runErr error

	mu        sync.Mutex // guards the fields below
	announced [][]bgp.Route
	withdrawn bool
	learned   []bgp.Route
	stopped   chan struct{} // closed by Withdraw
}

func (e *fakeEngine) Run(ctx context.Context) error {
	if e.runErr != nil {
		return e.runErr
	}
	e.opts.Log.Info("BGP session up", "peer", netip.MustParseAddr("192.0.2.1"), "restart-time", 30*time.Second)
	select {
	case <-ctx.Done():
	case <-e.stopped:
	}
	return nil
}

func (e *fakeEngine) Announce(_ context.Context, routes []bgp.Route) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.withdrawn {
		return bgp.ErrWithdrawn
	}
	e.announced = append(e.announced, routes)
	return nil
}

func (e *fakeEngine) Withdraw(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.withdrawn {
		e.withdrawn = true
		close(e.stopped)
	}
	return nil
}

func (e *fakeEngine) setLearned(l []bgp.Route) {
	e.mu.Lock()
	e.learned = l
	e.mu.Unlock()
	e.opts.Changed()
}

func (e *fakeEngine) Learned() []bgp.Route {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.learned)
}
func (e *fakeEngine) Status() []bgp.PeerStatus { return nil }
func (e *fakeEngine) Synced() bool             { return false }

// serveFake runs Serve over pipes with a fakeEngine.
type serveFake struct {
	t      *testing.T
	eng    *fakeEngine
	in     io.WriteCloser
	out    *bufio.Reader
	log    *bgptest.LogBuffer
	done   chan error
	engine chan *fakeEngine
}

func startServe(t *testing.T, runErr error) *serveFake {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	f := &serveFake{t: t, in: inW, out: bufio.NewReader(outR), log: &bgptest.LogBuffer{}, done: make(chan error, 1), engine: make(chan *fakeEngine, 1)}
	go func() {
		err := Serve(context.Background(), inR, outW, f.log, func(c bgp.Config, o bgp.Options) (Engine, error) {
			e := &fakeEngine{cfg: c, opts: o, runErr: runErr, stopped: make(chan struct{})}
			f.engine <- e
			return e, nil
		})
		outW.Close()
		f.done <- err
	}()
	t.Cleanup(func() { inW.Close(); go io.Copy(io.Discard, outR) })
	return f
}

func (f *serveFake) send(c Command) {
	f.t.Helper()
	line, err := EncodeLine(c)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.in.Write(line); err != nil {
		f.t.Fatal(err)
	}
}

// next reads the child's next event, skipping States when skipState.
func (f *serveFake) next(skipState bool) Event {
	f.t.Helper()
	for {
		line, err := readLine(f.out)
		if err != nil {
			f.t.Fatalf("read the child's output: %v", err)
		}
		ev, err := DecodeEvent(line)
		if err != nil {
			f.t.Fatal(err)
		}
		if !(skipState && ev.State != nil) {
			return ev
		}
	}
}

func TestServe(t *testing.T) {
	f := startServe(t, nil)
	c := fullConfig()
	f.send(Command{Start: &Start{Config: WireConfig(c), Underlay4: netip.MustParseAddr("192.0.2.11"), Restarting: true, LogLevel: slog.LevelInfo}})
	eng := <-f.engine
	if !reflect.DeepEqual(eng.cfg, c) || eng.opts.Underlay4 != netip.MustParseAddr("192.0.2.11") || !eng.opts.Restarting {
		t.Errorf("the engine got %+v %+v", eng.cfg, eng.opts)
	}
	if ev := f.next(false); ev.State == nil || ev.State.Learned != nil {
		t.Errorf("first event %+v, want the first State", ev)
	}
	routes := []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.1.0/24"), NextHop: netip.MustParseAddr("192.0.2.11")}}
	f.send(Command{Announce: &Announce{ID: 5, Routes: routes}})
	if ev := f.next(true); ev.Reply == nil || ev.Reply.ID != 5 || ev.Reply.Err() != nil {
		t.Errorf("reply %+v, want a success for 5", ev)
	}
	// A burst of changes: one State, or two at a debounce's boundary.
	learned := []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), NextHop: netip.MustParseAddr("192.0.2.12")}}
	for range 20 {
		eng.setLearned(learned)
	}
	ev := f.next(false)
	if ev.State == nil || !slices.Equal(ev.State.Learned, learned) {
		t.Errorf("after the burst %+v, want a State with the learned route", ev)
	}
	// The same state again is not written: the next line is the reply.
	eng.setLearned(learned)
	time.Sleep(3 * Debounce)
	f.send(Command{Announce: &Announce{ID: 6, Routes: routes}})
	if ev := f.next(false); ev.Reply == nil || ev.Reply.ID != 6 {
		t.Errorf("got %+v, want the reply to 6 and no State (nothing changed)", ev)
	}
	f.send(Command{Withdraw: &Withdraw{ID: 7}})
	if ev := f.next(true); ev.Reply == nil || ev.Reply.ID != 7 || ev.Reply.Err() != nil {
		t.Errorf("reply %+v, want a success for 7", ev)
	}
	if ev := f.next(false); ev.State == nil {
		t.Errorf("got %+v, want the final State", ev)
	}
	if ev := f.next(false); ev.Exit == nil || ev.Exit.Error != "" {
		t.Errorf("got %+v, want a clean Exit", ev)
	}
	if err := <-f.done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	eng.mu.Lock()
	if len(eng.announced) != 2 || !slices.Equal(eng.announced[0], routes) {
		t.Errorf("the engine was announced %v", eng.announced)
	}
	eng.mu.Unlock()
	// Its log: slog's JSON, at the agent's level, durations as text.
	if l := f.log.Lines(`"msg":"BGP session up"`, `"peer":"192.0.2.1"`, `"restart-time":"30s"`); len(l) != 1 {
		t.Errorf("the child's log %q, want the session line", f.log.Lines())
	}
}

// TestServeStop: stdin closing stops the speaker (the agent's graceful
// stop); a speaker that cannot start is a StartError, told in the Exit.
func TestServeStop(t *testing.T) {
	f := startServe(t, nil)
	f.send(Command{Start: &Start{Config: WireConfig(fullConfig())}})
	f.next(false)
	f.in.Close()
	ev := f.next(false)
	if ev.State == nil {
		t.Errorf("got %+v, want the final State", ev)
	}
	if ev := f.next(false); ev.Exit == nil || ev.Exit.Error != "" {
		t.Errorf("got %+v, want a clean Exit", ev)
	}
	if err := <-f.done; err != nil {
		t.Errorf("Serve: %v", err)
	}

	f = startServe(t, errors.New("start BGP speaker: port taken"))
	f.send(Command{Start: &Start{Config: WireConfig(fullConfig())}})
	if ev := f.next(true); ev.Exit == nil || ev.Exit.Error != "start BGP speaker: port taken" {
		t.Errorf("got %+v, want an Exit with the start-up error", ev)
	}
	var se *StartError
	if err := <-f.done; !errors.As(err, &se) {
		t.Errorf("Serve: %v, want a StartError", err)
	}

	f = startServe(t, nil)
	f.send(Command{Announce: &Announce{ID: 1}})
	if err := <-f.done; err == nil || !strings.Contains(err.Error(), "not a start") {
		t.Errorf("Serve with no start first: %v", err)
	}
}

package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/weftnet/weft/internal/bgp"
)

// Engine is the speaker weft-bgp runs: GoBGP in process (the speaker
// package's *Speaker), with the contract of weft-agent's Speaker.
type Engine interface {
	Run(ctx context.Context) error
	Announce(ctx context.Context, routes []bgp.Route) error
	Withdraw(ctx context.Context) error
	Learned() []bgp.Route
	Status() []bgp.PeerStatus
	Synced() bool
}

// NewEngine builds an Engine; weft-bgp passes the speaker package's New.
type NewEngine func(bgp.Config, bgp.Options) (Engine, error)

// Debounce is how long the child gathers changes before it writes a
// State: a burst of changes (a peer's routes coming in) costs one line.
const Debounce = 50 * time.Millisecond

// poll is how often the child compares its speaker's state with the
// last it wrote: the prefix counts of Status change without a Changed.
const poll = time.Second

// StartError is Serve's error when the speaker could not start: it is
// reported to the agent (Exit), which logs it.
type StartError struct{ Err error }

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Serve is weft-bgp's work: it reads the Start from in, builds the
// speaker with newEngine, logging to logw as slog's JSON lines, runs it,
// applies the commands that follow, and writes States, Replies and last
// an Exit to out. It returns when the speaker stopped: in closed (the
// agent stops: graceful restart), stop ended (a signal: the same), or a
// Withdraw. The error is a *StartError when the speaker could not start
// (told to the agent already), else a broken wire; nil for a clean stop.
func Serve(stop context.Context, in io.Reader, out, logw io.Writer, newEngine NewEngine) error {
	w := &writer{out: out}
	rd := bufio.NewReaderSize(in, 64<<10)
	first, err := readLine(rd)
	if err != nil {
		return fmt.Errorf("read the start message from stdin: %w (weft-bgp is started by weft-agent, not by hand)", err)
	}
	cmd, err := DecodeCommand(first)
	if err != nil || cmd.Start == nil {
		if err == nil {
			err = errors.New("the first message is not a start")
		}
		return fmt.Errorf("read the start message: %w", err)
	}
	st := cmd.Start
	log := slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: st.LogLevel, ReplaceAttr: durations}))
	trigger := make(chan struct{}, 1)
	changed := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	eng, err := newEngine(st.Config.BGP(), bgp.Options{Log: log, Underlay4: st.Underlay4, Underlay6: st.Underlay6,
		Changed: changed, Restarting: st.Restarting})
	if err != nil {
		w.write(Event{Exit: &Exit{Error: err.Error()}})
		return &StartError{err}
	}

	ctx, cancel := context.WithCancel(stop)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- eng.Run(ctx) }()

	// Commands, in order, until stdin closes. cmdMu is held from a
	// command to its reply, so that the Exit below never overtakes the
	// reply of the command that ended Run (Withdraw).
	var cmdMu sync.Mutex
	go func() {
		defer cancel() // stdin closed (the agent stops or died): stop gracefully
		for {
			line, err := readLine(rd)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					log.Error("weft-bgp: read a command", "err", err)
				}
				return
			}
			c, err := DecodeCommand(line)
			if err != nil {
				log.Error("weft-bgp: a command it cannot read; ignored", "err", err)
				continue
			}
			cmdMu.Lock()
			switch {
			case c.Announce != nil:
				w.write(Event{Reply: ReplyTo(c.Announce.ID, eng.Announce(ctx, c.Announce.Routes))})
				changed() // the prefix counts
			case c.Withdraw != nil:
				w.write(Event{Reply: ReplyTo(c.Withdraw.ID, eng.Withdraw(context.Background()))})
			case c.Start != nil:
				log.Error("weft-bgp: a second start message; ignored")
			}
			cmdMu.Unlock()
		}
	}()

	// States, debounced, until Run returns.
	var last []byte
	send := func(always bool) {
		b, err := EncodeLine(Event{State: &State{Learned: eng.Learned(), Status: eng.Status(), Synced: eng.Synced()}})
		if err == nil && (always || !bytes.Equal(b, last)) {
			w.writeLine(b)
			last = b
		}
	}
	send(true)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case err := <-runDone:
			cmdMu.Lock() // the reply of a command in flight first
			defer cmdMu.Unlock()
			send(true) // the final one
			ex := &Exit{}
			if err != nil {
				ex.Error = err.Error()
			}
			w.write(Event{Exit: ex})
			if err != nil {
				return &StartError{err}
			}
			if err := w.failed(); err != nil {
				return fmt.Errorf("write to weft-agent: %w", err)
			}
			return nil
		case <-trigger:
			time.Sleep(Debounce) // gather the burst
			select {
			case <-trigger:
			default:
			}
			send(false)
		case <-tick.C:
			send(false)
		}
	}
}

// durations logs a time.Duration as "1m30s", as a text log shows it, not
// in nanoseconds.
func durations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// writer writes whole lines to the agent, one at a time.
type writer struct {
	mu  sync.Mutex // guards out and err
	out io.Writer
	err error // the first write error: the agent is gone
}

func (w *writer) write(e Event) {
	b, err := EncodeLine(e)
	if err != nil {
		return
	}
	w.writeLine(b)
}

func (w *writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *writer) writeLine(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		_, w.err = w.out.Write(b)
	}
}

// readLine reads one line of at most MaxLine bytes, without its newline.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxLine {
			return nil, fmt.Errorf("a line longer than %d bytes", MaxLine)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// Package proc runs weft-agent's BGP speaker in a child process,
// weft-bgp, so that weft-agent does not link GoBGP: its packages cost
// every agent some 18 MiB of memory at start, BGP on or off (GoBGP's api
// package's init alone is about 10 MiB). The agent starts weft-bgp only
// when BGP is on.
//
// Speaker is the agent's side: it has the agent's Speaker contract and
// its metrics, from the state the child last reported. Serve is the
// child's side, over the in-process speaker weft-bgp hands it. They talk
// JSON lines (wire.go): commands on the child's stdin, states and
// replies on its stdout, its log on its stderr.
//
// Lifetime: the child dies with the agent (Pdeathsig SIGKILL: the kernel
// closes its sessions without a NOTIFICATION, so routers keep this
// node's routes for the restart time, as graceful restart wants); the
// agent stopping closes the child's stdin, and the child closes its
// graceful-restart sessions and exits. A child that dies on its own is
// started again (see Speaker.Run).
package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/bgp"
)

// Binary is the child's program name.
const Binary = "weft-bgp"

// Timing of the child's lifetime.
const (
	// stopTimeout bounds the child's graceful stop (and its withdrawal):
	// then it is killed.
	stopTimeout = 15 * time.Second
	// A child that died is started again after minBackoff, doubling up
	// to maxBackoff while it keeps dying within resetAfter of its start.
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
	resetAfter = time.Minute
)

// Find returns the path of weft-bgp: beside the running program (as the
// release and the image ship it, beside weft-agent), else in PATH.
func Find() (string, error) {
	var beside string
	if exe, err := os.Executable(); err == nil {
		beside = filepath.Join(filepath.Dir(exe), Binary)
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return beside, nil
		}
	}
	if p, err := exec.LookPath(Binary); err == nil {
		return p, nil
	}
	where := "in PATH"
	if beside != "" {
		where = fmt.Sprintf("at %s nor in PATH", beside)
	}
	return "", fmt.Errorf("bgp: BGP is on, and its speaker's program %s is not %s: install %s from the same release as weft-agent, beside it", Binary, where, Binary)
}

// Speaker is the BGP speaker in a weft-bgp child: New validates and
// finds the program; Run starts and watches the child; Announce,
// Withdraw, Learned, Synced and Status may be called from any goroutine
// at any time, before, during and after Run, with the contract of the
// in-process speaker (see the agent's Speaker interface). Learned,
// Synced and Status are what the child last reported: it reports a
// change within Debounce, prefix counts within a second.
//
// Speaker is a prometheus.Collector of the same series as the in-process
// speaker (metrics.go).
type Speaker struct {
	cfg  bgp.Config
	opts bgp.Options
	log  *slog.Logger
	bin  string

	stop     chan struct{} // closed by Withdraw (first thing): Run returns
	stopOnce sync.Once

	mu        sync.Mutex // guards the fields below, and the current child's pending, closed and exit
	ran       bool       // Run was called
	withdrawn bool       // Withdraw was called
	announced bool       // Announce was called: want is the set to announce
	want      []bgp.Route
	cur       *child // the running child; nil when none
	nextID    uint64
	state     State // the last State a child reported, Flaps with flapBase added
	// flapBase counts, by peer, the flaps that children that are gone
	// reported (a new child counts from 0).
	flapBase map[netip.Addr]uint64
}

// New returns the speaker of c, which runs in weft-bgp (Find). It checks
// c as the in-process speaker does and that weft-bgp is there; it starts
// nothing.
func New(c bgp.Config, o bgp.Options) (*Speaker, error) {
	if _, err := bgp.CheckSpeaker(c, o); err != nil {
		return nil, err
	}
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Speaker{cfg: c, opts: o, log: log, bin: bin, stop: make(chan struct{}), flapBase: map[netip.Addr]uint64{}}
	for _, p := range c.Peers {
		s.state.Status = append(s.state.Status, bgp.PeerStatus{Address: p.Address.Unmap(), AS: p.AS, State: "idle"})
	}
	slices.SortFunc(s.state.Status, func(a, b bgp.PeerStatus) int { return a.Address.Compare(b.Address) })
	return s, nil
}

// child is one weft-bgp process.
type child struct {
	cmd *exec.Cmd
	// cmds are the lines for its stdin, written in order by
	// writeCommands; closing it closes stdin. Sent to and closed under
	// Speaker.mu.
	cmds chan []byte
	// exited is closed once the process is reaped and its output read.
	exited  chan struct{}
	waitErr error // the process's end; set before exited is closed

	// Guarded by Speaker.mu:
	closed  bool                   // cmds is closed
	pending map[uint64]chan *Reply // commands awaiting their reply; closed when the child ends without one
	exit    *Exit                  // its Exit message
}

// Run starts weft-bgp with the config, and the routes of the last
// Announce, and watches it until ctx ends; then it closes the child's
// stdin, the child closes the sessions (graceful restart: without a
// NOTIFICATION) and exits, and Run waits for it (stopTimeout at most,
// then it kills it). Run returns nil then, and when Withdraw stopped the
// speaker; it returns an error when the speaker cannot start (the
// program cannot be run, the listen port is taken). Run may be called
// once.
//
// A child that dies on its own (a crash, a kill, the OOM killer) is
// started again, logged in one line, after a backoff (1 s, doubling to
// 30 s while it keeps dying within a minute): it gets the config and the
// last announced routes again, as a restarting speaker when graceful
// restart is on (routers kept this node's routes as stale: the kernel
// closed its sessions without a NOTIFICATION). Meanwhile Learned is nil,
// Synced false and the peers idle.
func (s *Speaker) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran {
		s.mu.Unlock()
		return errors.New("bgp: speaker already ran")
	}
	s.ran = true
	withdrawn := s.withdrawn
	s.mu.Unlock()
	if withdrawn {
		return nil
	}
	restarting := s.opts.Restarting
	backoff := minBackoff
	for {
		began := time.Now()
		died, err := s.runChild(ctx, restarting)
		if err != nil {
			return err
		}
		if ctx.Err() != nil || s.stopped() {
			return nil
		}
		if time.Since(began) > resetAfter {
			backoff = minBackoff
		}
		s.log.Warn("BGP: weft-bgp died; starting it again", "err", died, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-s.stop:
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil || s.stopped() {
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
		restarting = s.cfg.GracefulRestart
	}
}

// stopped reports whether Withdraw was called.
func (s *Speaker) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// runChild runs one child until it ends. died says why a child ended
// that nobody stopped; err is a start-up failure.
func (s *Speaker) runChild(ctx context.Context, restarting bool) (died, err error) {
	cmd := exec.Command(s.bin)
	// The kernel kills the child when the thread that started it ends:
	// the agent's death ends it at once, its sockets closed without a
	// NOTIFICATION.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.bin, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.bin, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.bin, err)
	}
	c := &child{cmd: cmd, cmds: make(chan []byte, 64), exited: make(chan struct{}), pending: map[uint64]chan *Reply{}}
	var readers sync.WaitGroup
	readers.Add(2)
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked the child exits,
		// not the process (prctl(2)); the Go runtime ends a thread whose
		// goroutine exits locked to it. So this goroutine keeps its
		// thread, locked, for the child's whole life (golang/go#27505).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		readers.Wait() // all output read before Wait closes the pipes
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", s.bin, err)
	}
	go func() { defer readers.Done(); s.readEvents(c, stdout) }()
	go func() { defer readers.Done(); s.readLog(stderr) }()
	go c.writeCommands(stdin)

	start, err := EncodeLine(Command{Start: &Start{Config: WireConfig(s.cfg), Underlay4: s.opts.Underlay4,
		Underlay6: s.opts.Underlay6, Restarting: restarting, LogLevel: lowestLevel(s.log)}})
	if err != nil {
		return nil, fmt.Errorf("encode %s's start: %w", Binary, err)
	}
	s.mu.Lock()
	if s.withdrawn {
		s.mu.Unlock()
		_ = cmd.Process.Kill()
		s.end(c, false)
		return nil, nil
	}
	s.cur = c
	err = c.sendLocked(start)
	if err == nil && s.announced {
		_, err = s.requestLocked(c, Command{Announce: &Announce{Routes: s.want}})
	}
	s.mu.Unlock()
	if err != nil {
		_ = cmd.Process.Kill()
	}

	select {
	case <-c.exited:
	case <-ctx.Done():
		s.mu.Lock()
		c.closeLocked() // stdin closes: the child stops gracefully
		s.mu.Unlock()
		s.await(c)
	case <-s.stop:
		s.await(c) // Withdraw has the child withdraw and stop
	}
	s.end(c, ctx.Err() == nil && !s.stopped())
	s.mu.Lock()
	ex := c.exit
	s.mu.Unlock()
	if ex != nil && ex.Error != "" {
		return nil, errors.New(ex.Error)
	}
	died = c.waitErr
	if died == nil {
		died = errors.New("it exited, unasked")
	}
	if ex == nil {
		died = fmt.Errorf("%w, without a word", died)
	}
	return died, nil
}

// await waits stopTimeout for child c to exit, then kills it.
func (s *Speaker) await(c *child) {
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-c.exited:
		return
	case <-t.C:
	}
	s.log.Warn("BGP: weft-bgp did not stop in time; killed", "pid", c.cmd.Process.Pid, "after", stopTimeout)
	_ = c.cmd.Process.Kill() // kill(2) by its PID
	<-c.exited
}

// end waits for child c's end and forgets it: its pending commands fail,
// the flaps it counted are kept, and the state is that of no speaker.
// died: it was not asked to stop, and its established sessions went
// down with it.
func (s *Speaker) end(c *child, died bool) {
	<-c.exited
	s.mu.Lock()
	c.closeLocked()
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	if s.cur == c {
		s.cur = nil
	}
	changed := s.state.Learned != nil || s.state.Synced
	now := time.Now()
	for i := range s.state.Status {
		p := &s.state.Status[i]
		if died && p.State == "established" {
			p.Flaps++
		}
		s.flapBase[p.Address] = p.Flaps
		changed = changed || p.State != "idle"
		p.State, p.Since, p.Sent, p.Received = "idle", now, 0, 0
	}
	s.state.Learned, s.state.Synced = nil, false
	s.mu.Unlock()
	if changed {
		s.notify()
	}
}

func (s *Speaker) notify() {
	if s.opts.Changed != nil {
		s.opts.Changed()
	}
}

// sendLocked queues line for the child's stdin. Speaker.mu must be held.
func (c *child) sendLocked(line []byte) error {
	if c.closed {
		return errors.New("bgp: weft-bgp is stopping")
	}
	select {
	case c.cmds <- line:
		return nil
	default:
		return errors.New("bgp: weft-bgp does not read its commands")
	}
}

// closeLocked closes the child's stdin once its queued commands are
// written. Speaker.mu must be held.
func (c *child) closeLocked() {
	if !c.closed {
		c.closed = true
		close(c.cmds)
	}
}

// writeCommands writes the queued lines to the child's stdin until cmds
// is closed, then closes it.
func (c *child) writeCommands(w io.WriteCloser) {
	var err error
	for line := range c.cmds {
		if err == nil {
			_, err = w.Write(line)
		}
	}
	_ = w.Close()
}

// requestLocked sends cmd, with a new ID, to child c: the channel gets
// its reply, or is closed when the child ends first. Speaker.mu must be
// held.
func (s *Speaker) requestLocked(c *child, cmd Command) (chan *Reply, error) {
	s.nextID++
	id := s.nextID
	switch {
	case cmd.Announce != nil:
		cmd.Announce.ID = id
	case cmd.Withdraw != nil:
		cmd.Withdraw.ID = id
	}
	line, err := EncodeLine(cmd)
	if err != nil {
		return nil, err
	}
	if err := c.sendLocked(line); err != nil {
		return nil, err
	}
	ch := make(chan *Reply, 1)
	c.pending[id] = ch
	return ch, nil
}

// readEvents reads child c's stdout until it closes.
func (s *Speaker) readEvents(c *child, r io.Reader) {
	rd := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(rd)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// Its state can no longer be followed: end it (by its
				// PID), and Run starts it again.
				s.log.Error("BGP: cannot read weft-bgp's output; ending it to start it again", "err", err)
				_ = c.cmd.Process.Kill()
				_, _ = io.Copy(io.Discard, r)
			}
			return
		}
		ev, err := DecodeEvent(line)
		if err != nil {
			s.log.Error("BGP: weft-bgp wrote a line weft-agent cannot read (are both from the same release?)", "err", err)
			continue
		}
		switch {
		case ev.State != nil:
			s.setState(*ev.State)
		case ev.Reply != nil:
			s.mu.Lock()
			ch := c.pending[ev.Reply.ID]
			delete(c.pending, ev.Reply.ID)
			s.mu.Unlock()
			if ch != nil {
				ch <- ev.Reply
			} else if err := ev.Reply.Err(); err != nil && !errors.Is(err, bgp.ErrWithdrawn) {
				// The routes sent with the start.
				s.log.Warn("BGP: cannot announce this node's subnets", "err", err)
			}
		case ev.Exit != nil:
			s.mu.Lock()
			c.exit = ev.Exit
			s.mu.Unlock()
		}
	}
}

// setState takes a child's State, and calls Options.Changed when the
// learned routes, Synced or a session's state changed.
func (s *Speaker) setState(st State) {
	s.mu.Lock()
	for i := range st.Status {
		st.Status[i].Flaps += s.flapBase[st.Status[i].Address]
	}
	old := s.state
	s.state = st
	s.mu.Unlock()
	changed := old.Synced != st.Synced || !slices.Equal(old.Learned, st.Learned) ||
		!slices.EqualFunc(old.Status, st.Status, func(a, b bgp.PeerStatus) bool { return a.Address == b.Address && a.State == b.State })
	if changed {
		s.notify()
	}
}

// readLog logs the child's log lines again, through Options.Log, with
// their time, level, message and attributes; a line that is no log
// record (a panic) at Error as it is.
func (s *Speaker) readLog(r io.Reader) {
	rd := bufio.NewReaderSize(r, 64<<10)
	h := s.log.Handler()
	for {
		line, err := readLine(rd)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_, _ = io.Copy(io.Discard, r)
			}
			return
		}
		if rec, ok := DecodeLog(line); ok {
			if h.Enabled(context.Background(), rec.Level) {
				_ = h.Handle(context.Background(), rec)
			}
			continue
		}
		if len(bytes.TrimSpace(line)) > 0 {
			s.log.Error("BGP: weft-bgp: " + string(line))
		}
	}
}

// lowestLevel is the lowest level l logs.
func lowestLevel(l *slog.Logger) slog.Level {
	for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if l.Enabled(context.Background(), lv) {
			return lv
		}
	}
	return slog.LevelError
}

// Announce makes routes the complete set of prefixes this node announces
// (level-triggered; see the in-process speaker's Announce): it checks
// them, keeps them for the children to come, and hands them to the
// running child, whose reply it returns. After Withdraw it returns
// bgp.ErrWithdrawn.
func (s *Speaker) Announce(ctx context.Context, routes []bgp.Route) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := make([]bgp.Route, 0, len(routes))
	nh := map[netip.Prefix]netip.Addr{}
	for _, r := range routes {
		r, err := bgp.ResolveRoute(r, s.opts.Underlay4, s.opts.Underlay6)
		if err != nil {
			return err
		}
		if old, dup := nh[r.Prefix]; dup {
			if old != r.NextHop {
				return fmt.Errorf("bgp: announce %s: two next hops, %s and %s", r.Prefix, old, r.NextHop)
			}
			continue
		}
		nh[r.Prefix] = r.NextHop
		want = append(want, r)
	}
	s.mu.Lock()
	if s.withdrawn {
		s.mu.Unlock()
		return bgp.ErrWithdrawn
	}
	s.want, s.announced = want, true
	c := s.cur
	if c == nil {
		s.mu.Unlock()
		return nil // the next child gets them
	}
	ch, err := s.requestLocked(c, Command{Announce: &Announce{Routes: want}})
	s.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case r := <-ch:
		if r == nil {
			return nil // the child ended: the next one gets them
		}
		return r.Err()
	case <-ctx.Done():
		return fmt.Errorf("bgp: announce: %w", ctx.Err())
	}
}

// Withdraw has the child withdraw every route and close the sessions
// with a Cease NOTIFICATION (routers drop the routes now), for a node
// that leaves for good, and waits until the child has exited: it holds
// no port then. Run returns; later Announce calls return
// bgp.ErrWithdrawn. With no child running (before Run, or while a dead
// one waits to be started again) there is nothing to withdraw.
func (s *Speaker) Withdraw(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	s.mu.Lock()
	s.withdrawn, s.want = true, nil
	c := s.cur
	var ch chan *Reply
	var err error
	if c != nil {
		ch, err = s.requestLocked(c, Command{Withdraw: &Withdraw{}})
	}
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("withdraw BGP routes: %w", err)
	}
	select {
	case r := <-ch:
		if r == nil {
			err = errors.New("withdraw BGP routes: weft-bgp ended first; routers drop them when the restart time runs out")
		} else {
			err = r.Err()
		}
	case <-ctx.Done():
		return fmt.Errorf("withdraw BGP routes: %w", ctx.Err())
	}
	select {
	case <-c.exited:
	case <-ctx.Done():
		return fmt.Errorf("withdraw BGP routes: wait for weft-bgp to exit: %w", ctx.Err())
	}
	return err
}

// Learned returns the best routes the child last reported learned from
// peers, sorted by prefix; nil when no child runs.
func (s *Speaker) Learned() []bgp.Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.state.Learned)
}

// Synced reports what the child last reported of its speaker's Synced:
// whether Learned is complete. False when no child runs.
func (s *Speaker) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Synced
}

// Status returns the peers' sessions as the child last reported them
// (flaps counted across children), sorted by address; before Run, and
// while no child runs, each peer idle.
func (s *Speaker) Status() []bgp.PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.state.Status)
}

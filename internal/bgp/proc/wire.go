package proc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/weftnet/weft/internal/bgp"
)

// The wire between weft-agent and weft-bgp: JSON, one message a line.
//
// On the child's stdin, the agent writes a Command: first a Start (the
// config, passwords included: stdin is the one channel no other user can
// read, unlike argv and the environment), then Announce and Withdraw
// commands, each with an ID the child's Reply carries back. Closing
// stdin stops the child: its speaker closes graceful-restart sessions
// without a NOTIFICATION, and it exits 0.
//
// On its stdout the child writes Events: a State (learned routes, the
// peers' sessions, Synced) when it changed, a Reply to each command, and
// last an Exit. Its stderr carries its log, slog's JSON lines, which the
// agent logs again (DecodeLog).

// Command is one message to the child; exactly one field is set.
type Command struct {
	Start    *Start    `json:"start,omitempty"`
	Announce *Announce `json:"announce,omitempty"`
	Withdraw *Withdraw `json:"withdraw,omitempty"`
}

// Start is the child's first message: what to build its speaker of.
type Start struct {
	Config               Config     `json:"config"`
	Underlay4, Underlay6 netip.Addr `json:",omitzero"`
	Restarting           bool       `json:",omitempty"`
	// LogLevel is the lowest level the agent's log takes: the child logs
	// nothing below it.
	LogLevel slog.Level
}

// Config is bgp.Config on the wire: with the peers' passwords, which
// bgp.Peer leaves out of its JSON so that nothing else prints them.
type Config struct {
	bgp.Config
	Peers []Peer
}

// Peer is bgp.Peer on the wire, with its password.
type Peer struct {
	bgp.Peer
	Password string `json:",omitempty"`
}

// WireConfig is c on the wire.
func WireConfig(c bgp.Config) Config {
	w := Config{Config: c}
	w.Config.Peers = nil
	for _, p := range c.Peers {
		w.Peers = append(w.Peers, Peer{Peer: p, Password: p.Password})
	}
	return w
}

// BGP is the bgp.Config of w.
func (w Config) BGP() bgp.Config {
	c := w.Config
	c.Peers = nil
	for _, p := range w.Peers {
		q := p.Peer
		q.Password = p.Password
		c.Peers = append(c.Peers, q)
	}
	return c
}

// Announce asks the child to announce Routes (the complete set).
type Announce struct {
	ID     uint64
	Routes []bgp.Route
}

// Withdraw asks the child to withdraw everything and stop.
type Withdraw struct {
	ID uint64
}

// Event is one message from the child; exactly one field is set.
type Event struct {
	State *State `json:"state,omitempty"`
	Reply *Reply `json:"reply,omitempty"`
	Exit  *Exit  `json:"exit,omitempty"`
}

// State is what the agent reads of the speaker: its Learned, Status and
// Synced.
type State struct {
	Learned []bgp.Route      `json:",omitempty"`
	Status  []bgp.PeerStatus `json:",omitempty"`
	Synced  bool             `json:",omitempty"`
}

// Reply answers the command of ID.
type Reply struct {
	ID    uint64
	Error string `json:",omitempty"`
	// Withdrawn: the error is bgp.ErrWithdrawn.
	Withdrawn bool `json:",omitempty"`
}

// Err is the reply's error, nil for success.
func (r *Reply) Err() error {
	switch {
	case r.Withdrawn:
		return bgp.ErrWithdrawn
	case r.Error != "":
		return errors.New(r.Error)
	}
	return nil
}

// ReplyTo is the reply to command id that returned err.
func ReplyTo(id uint64, err error) *Reply {
	r := &Reply{ID: id}
	if err != nil {
		r.Error = err.Error()
		r.Withdrawn = errors.Is(err, bgp.ErrWithdrawn)
	}
	return r
}

// Exit is the child's last message. Error is set when its speaker could
// not start (bad config, the listen port taken): starting it again would
// fail again.
type Exit struct {
	Error string `json:",omitempty"`
}

// MaxLine is the longest line either side reads: a State of some ten
// thousand learned routes fits.
const MaxLine = 16 << 20

// EncodeLine is m as one line of JSON.
func EncodeLine(m any) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// DecodeCommand reads one line of the child's stdin.
func DecodeCommand(line []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(line, &c); err != nil {
		return Command{}, fmt.Errorf("decode command: %w", err)
	}
	if n := count(c.Start != nil, c.Announce != nil, c.Withdraw != nil); n != 1 {
		return Command{}, fmt.Errorf("decode command: %d kinds of message in one line, want 1", n)
	}
	return c, nil
}

// DecodeEvent reads one line of the child's stdout.
func DecodeEvent(line []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(line, &e); err != nil {
		return Event{}, fmt.Errorf("decode weft-bgp's output: %w", err)
	}
	if n := count(e.State != nil, e.Reply != nil, e.Exit != nil); n != 1 {
		return Event{}, fmt.Errorf("decode weft-bgp's output: %d kinds of message in one line, want 1", n)
	}
	return e, nil
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// DecodeLog reads one line of the child's stderr, a record of slog's
// JSONHandler, into a record with the same time, level, message and
// attributes, in their order (objects become groups). ok is false when
// the line is no such record (a panic's trace, the race detector's
// report): the caller logs it as it is.
func DecodeLog(line []byte) (r slog.Record, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	attrs, err := decodeObject(dec, 0)
	if err != nil {
		return slog.Record{}, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return slog.Record{}, false // more than one value on the line
	}
	var (
		at       time.Time
		level    slog.Level
		msg      string
		hasLevel bool
		hasMsg   bool
		rest     = make([]slog.Attr, 0, len(attrs))
	)
	for _, a := range attrs {
		switch {
		case a.Key == slog.TimeKey && at.IsZero() && a.Value.Kind() == slog.KindString:
			t, err := time.Parse(time.RFC3339Nano, a.Value.String())
			if err != nil {
				return slog.Record{}, false
			}
			at = t
		case a.Key == slog.LevelKey && !hasLevel && a.Value.Kind() == slog.KindString:
			if err := level.UnmarshalText([]byte(a.Value.String())); err != nil {
				return slog.Record{}, false
			}
			hasLevel = true
		case a.Key == slog.MessageKey && !hasMsg && a.Value.Kind() == slog.KindString:
			msg, hasMsg = a.Value.String(), true
		default:
			rest = append(rest, a)
		}
	}
	if !hasLevel || !hasMsg {
		return slog.Record{}, false
	}
	if at.IsZero() {
		at = time.Now()
	}
	r = slog.NewRecord(at, level, msg, 0)
	r.AddAttrs(rest...)
	return r, true
}

// maxDepth bounds the nesting DecodeLog follows.
const maxDepth = 32

// decodeObject reads a JSON object's members as attributes, in order.
func decodeObject(dec *json.Decoder, depth int) ([]slog.Attr, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deep")
	}
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if t != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	var attrs []slog.Attr
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := t.(string)
		if !ok {
			return nil, errors.New("a key that is not a string")
		}
		v, err := decodeValue(dec, depth)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, slog.Attr{Key: key, Value: v})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	return attrs, nil
}

// decodeValue reads one JSON value as a slog.Value: a number as an
// Int64 when it is an integer, else a Float64; an object as a group; an
// array as an Any of []any.
func decodeValue(dec *json.Decoder, depth int) (slog.Value, error) {
	if depth > maxDepth {
		return slog.Value{}, errors.New("nested too deep")
	}
	if !dec.More() {
		return slog.Value{}, errors.New("a key without a value")
	}
	// Peek: objects go through decodeObject to keep their order.
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return slog.Value{}, err
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '{' {
		sub := json.NewDecoder(bytes.NewReader(raw))
		sub.UseNumber()
		attrs, err := decodeObject(sub, depth+1)
		if err != nil {
			return slog.Value{}, err
		}
		return slog.GroupValue(attrs...), nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return slog.Value{}, err
	}
	switch v := v.(type) {
	case string:
		return slog.StringValue(v), nil
	case bool:
		return slog.BoolValue(v), nil
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return slog.Int64Value(i), nil
		}
		f, err := v.Float64()
		if err != nil {
			return slog.StringValue(string(v)), nil
		}
		return slog.Float64Value(f), nil
	}
	return slog.AnyValue(v), nil // null, arrays
}

package cmdline

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestFlagsFromEnvironment(t *testing.T) {
	fs := NewFlagSet("test", os.Stderr)
	ep := fs.String("etcd-endpoints", "default", "")
	prefix := fs.String("etcd-prefix", "default", "")
	masq := fs.Bool("ip-masq", false, "")
	t.Setenv("FLANNELD_ETCD_ENDPOINTS", "http://flannel:2379")
	t.Setenv("WEFT_ETCD_PREFIX", "/weft")
	t.Setenv("FLANNELD_ETCD_PREFIX", "/ignored") // WEFT_ wins
	t.Setenv("FLANNELD_IP_MASQ", "true")
	if err := Parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if *ep != "http://flannel:2379" || *prefix != "/weft" || !*masq {
		t.Errorf("got %q %q %v", *ep, *prefix, *masq)
	}
	// The command line wins over the environment.
	fs = NewFlagSet("test", os.Stderr)
	ep = fs.String("etcd-endpoints", "default", "")
	if err := Parse(fs, []string{"--etcd-endpoints", "http://cli:2379"}); err != nil || *ep != "http://cli:2379" {
		t.Errorf("command line: %q %v", *ep, err)
	}
	t.Setenv("FLANNELD_IP_MASQ", "maybe")
	fs = NewFlagSet("test", &bytes.Buffer{})
	fs.Bool("ip-masq", false, "")
	if err := Parse(fs, nil); err == nil || !strings.Contains(err.Error(), "FLANNELD_IP_MASQ") {
		t.Errorf("a bad environment value must be named: %v", err)
	}
}

func TestFlagsAfterPositional(t *testing.T) {
	fs := NewFlagSet("test", os.Stderr)
	ep := fs.String("etcd-endpoints", "", "")
	if err := Parse(fs, []string{"10.244.3.0/24", "--etcd-endpoints", "http://x:2379"}); err != nil {
		t.Fatal(err)
	}
	if *ep != "http://x:2379" || fs.NArg() != 1 || fs.Arg(0) != "10.244.3.0/24" {
		t.Errorf("got %q %v", *ep, fs.Args())
	}
}

func TestLoggerLevel(t *testing.T) {
	var b bytes.Buffer
	log := Logger(&b, "warn")
	log.Info("hidden")
	log.Warn("shown")
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "shown") {
		t.Errorf("at warn: %q", s)
	}
	b.Reset()
	Logger(&b, "nonsense").Info("shown") // an unknown level is info
	if !strings.Contains(b.String(), "shown") {
		t.Errorf("unknown level: %q", b.String())
	}
}

// TestMistakeIsOneLine: an unknown flag or a bad value prints nothing
// (not the whole usage, as the flag package does) and is an error of one
// line with the hint to run -h; -h prints the usage.
func TestMistakeIsOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag (run weft-test -h for the flags)"},
		{[]string{"pos", "--port", "x"}, `invalid value "x" for flag -port: parse error (run weft-test -h for the flags)`},
	} {
		var out bytes.Buffer
		fs := NewFlagSet("weft-test", &out)
		fs.Int("port", 0, "a port")
		err := Parse(fs, tc.args)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: error %v, want %s", tc.args, err, tc.want)
		}
		if out.Len() > 0 {
			t.Errorf("%q printed %q; the error alone is printed, by main", tc.args, out.String())
		}
	}
	var out bytes.Buffer
	fs := NewFlagSet("weft-test", &out)
	fs.Int("port", 0, "a port")
	if err := Parse(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	if s := out.String(); !strings.HasPrefix(s, "Usage of weft-test:\n") || !strings.Contains(s, "-port int") {
		t.Errorf("-h printed %q, want the usage", s)
	}
	// And a mistake after -h's usage was printed once still prints none.
	out.Reset()
	if err := Parse(fs, []string{"--nope"}); err == nil || out.Len() > 0 {
		t.Errorf("second parse: %v, printed %q", err, out.String())
	}
}

// TestStrings: a repeatable flag appends each value in order, checks each
// as given, and takes one value from the environment (the whole variable,
// commas and all), as flannel's --iface does; an empty variable is
// ignored, as flannel ignores it.
func TestStrings(t *testing.T) {
	newFS := func() (*flag.FlagSet, *Strings) {
		fs := NewFlagSet("test", &bytes.Buffer{})
		s := &Strings{Check: func(v string) error {
			if v == "bad" {
				return errors.New("no bad values")
			}
			return nil
		}}
		fs.Var(s, "iface", "")
		return fs, s
	}
	fs, s := newFS()
	t.Setenv("FLANNELD_IFACE", "eth9") // the command line wins
	if err := Parse(fs, []string{"--iface", "eth0", "--iface=192.0.2.11", "--iface", "eth1"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"eth0", "192.0.2.11", "eth1"}; !slices.Equal(s.Values, want) || s.String() != "eth0,192.0.2.11,eth1" {
		t.Errorf("got %q (%s), want %q", s.Values, s, want)
	}
	fs, _ = newFS()
	if err := Parse(fs, []string{"--iface", "eth0", "--iface", "bad"}); err == nil || err.Error() != `invalid value "bad" for flag -iface: no bad values (run test -h for the flags)` {
		t.Errorf("bad value: %v", err)
	}
	fs, s = newFS()
	t.Setenv("FLANNELD_IFACE", "eth0,eth1")
	if err := Parse(fs, nil); err != nil || !slices.Equal(s.Values, []string{"eth0,eth1"}) {
		t.Errorf("from the environment: %q, %v", s.Values, err)
	}
	fs, s = newFS()
	t.Setenv("FLANNELD_IFACE", "")
	if err := Parse(fs, nil); err != nil || len(s.Values) != 0 {
		t.Errorf("an empty variable: %q, %v", s.Values, err)
	}
	fs, _ = newFS()
	t.Setenv("FLANNELD_IFACE", "bad")
	if err := Parse(fs, nil); err == nil || err.Error() != `FLANNELD_IFACE="bad": no bad values` {
		t.Errorf("a bad value from the environment: %v", err)
	}
}

// TestUnknownEnv: a FLANNELD_ variable that names no flag is found by
// name (flannel would ignore it silently); known ones, variables without
// the prefix and ones with another are not.
func TestUnknownEnv(t *testing.T) {
	fs := NewFlagSet("test", &bytes.Buffer{})
	fs.String("iface-regex", "", "")
	fs.String("log_backtrace_at", "", "")
	fs.Bool("v", false, "")
	env := []string{
		"FLANNELD_IFACE_REGEX=eth.*", "FLANNELD_LOG_BACKTRACE_AT=x.go:1", "FLANNELD_V=2",
		"FLANNELD_IFACE_REGX=eth.*", "FLANNELD_REMOTE=10.0.0.1:8888", "FLANNELD_REMOTE=again",
		"NODE_NAME=n1", "WEFT_KUBE_APISERVER=/bin/x", "FLANNELD_EMPTY=",
	}
	got := UnknownEnv(fs, FlannelPrefix, env)
	if want := []string{"FLANNELD_EMPTY", "FLANNELD_IFACE_REGX", "FLANNELD_REMOTE"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := UnknownEnv(fs, FlannelPrefix, env[:3]); len(got) != 0 {
		t.Errorf("known variables reported: %q", got)
	}
}

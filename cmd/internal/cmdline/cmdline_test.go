package cmdline

import (
	"bytes"
	"errors"
	"flag"
	"os"
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

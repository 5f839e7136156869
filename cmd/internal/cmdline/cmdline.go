// Package cmdline is the command-line parsing that weft's binaries share:
// flags that may follow positional arguments and that the environment can
// set, as flannel's can, and the log format.
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
)

// NewFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to stderr. Parse it with Parse.
func NewFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// Parse parses args, allowing flags after positional arguments (kept in
// order as fs.Args()), then fills every flag not given on the command line
// from the environment: WEFT_<NAME> or, as flannel reads them,
// FLANNELD_<NAME> (--etcd-endpoints: WEFT_ETCD_ENDPOINTS). A variable set
// to "" is ignored, as flannel ignores it. A flag that may be repeated
// (Strings) takes one value from the environment, as flannel's --iface
// does. A bad value in the environment is an error naming the variable.
//
// -h prints the usage and returns flag.ErrHelp. Any other mistake (an
// unknown flag, a bad value) prints nothing: the error is one line that
// ends with the hint to run the command with -h, for main to print.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := envName(f.Name)
		for _, prefix := range []string{"WEFT_", FlannelPrefix} {
			if v := os.Getenv(prefix + env); v != "" {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("%s%s=%q: %w", prefix, env, v, err))
				}
				return
			}
		}
	})
	return errors.Join(errs...)
}

// FlannelPrefix starts the environment variables flanneld reads its flags
// from: FLANNELD_IFACE is --iface.
const FlannelPrefix = "FLANNELD_"

// envName is the environment variable of flag name, without its prefix:
// upper case, dashes as underscores (iface-regex: IFACE_REGEX).
func envName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// UnknownEnv returns the names of the variables in environ (os.Environ's
// KEY=VALUE form) that start with prefix but name no flag of fs, sorted:
// a FLANNELD_IFACE_REGX that Parse would silently skip.
func UnknownEnv(fs *flag.FlagSet, prefix string, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[prefix+envName(f.Name)] = true })
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, prefix) && !known[k] && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Strings is a flag that may be given more than once, each value appended
// in order (flannel's --iface and --iface-regex). Check, when set, refuses
// a value as it is given.
type Strings struct {
	Values []string
	Check  func(string) error
}

// String implements flag.Value.
func (s *Strings) String() string {
	if s == nil {
		return ""
	}
	return strings.Join(s.Values, ",")
}

// Set implements flag.Value: it appends v.
func (s *Strings) Set(v string) error {
	if s.Check != nil {
		if err := s.Check(v); err != nil {
			return err
		}
	}
	s.Values = append(s.Values, v)
	return nil
}

// parseArgs is Parse without the environment. The flag package prints an
// error and the whole usage on any mistake; here only -h prints the usage.
func parseArgs(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	help := false
	fs.Usage = func() { help = true }
	defer func() {
		fs.SetOutput(out)
		fs.Usage = usage
		if help {
			if usage != nil {
				usage()
			} else {
				fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
				fs.PrintDefaults()
			}
		}
	}()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			help = false // the flag package calls the usage on every error
			return fmt.Errorf("%w (run %s -h for the flags)", err, fs.Name())
		}
		if args = fs.Args(); len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// Logger logs text to w at level (debug, info, warn or error; anything
// else is info).
func Logger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

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
// FLANNELD_<NAME> (--etcd-endpoints: WEFT_ETCD_ENDPOINTS). A bad value in
// the environment is an error naming the variable.
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
		env := strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		for _, prefix := range []string{"WEFT_", "FLANNELD_"} {
			if v, ok := os.LookupEnv(prefix + env); ok {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("%s%s=%q: %w", prefix, env, v, err))
				}
				return
			}
		}
	})
	return errors.Join(errs...)
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

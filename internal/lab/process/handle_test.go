package process

import (
	"os"
	"testing"
)

func TestParseStartTime(t *testing.T) {
	line := "4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615"
	got, err := parseStartTime(line)
	if err != nil || got != 987654 {
		t.Fatalf("parseStartTime = %d, %v; want 987654", got, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "no parenthesis at all 1 2 3"} {
		if _, err := parseStartTime(bad); err == nil {
			t.Errorf("parseStartTime(%q) succeeded", bad)
		}
	}
}

func TestHandleOfSelf(t *testing.T) {
	st, err := startTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	h := Handle{PID: os.Getpid(), Start: st}
	if !h.Running() {
		t.Fatal("this process does not run")
	}
	if (Handle{PID: os.Getpid(), Start: st + 1}).Running() {
		t.Fatal("a handle with another start time names this process")
	}
}

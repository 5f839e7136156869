package residency

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

const smaps = `00400000-01f17000 r-xp 00000000 00:2e 1234                               /opt/weft/bin/weft
Size:              27740 kB
Rss:               17500 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
01f17000-03db1000 r--p 01b17000 00:2e 1234                               /opt/weft/bin/weft
Rss:               22888 kB
Anonymous:             0 kB
03db1000-03e65000 rw-p 039b1000 00:2e 1234                               /opt/weft/bin/weft
Rss:                 592 kB
Anonymous:           300 kB
03e65000-03e70000 r--p 039b1000 00:2e 1234                               /opt/weft/bin/weft
Rss:                  40 kB
Anonymous:            40 kB
1bcabc00000-1bcacc00000 rw-p 00000000 00:00 0
Rss:               10420 kB
Anonymous:         10420 kB
7f0097f09000-7f009805f000 r-xp 00028000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 920 kB
Anonymous:             0 kB
`

func TestParseSmaps(t *testing.T) {
	ms, err := ParseSmaps(strings.NewReader(smaps), "/opt/weft/bin/weft")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("%d mappings, want 4: %+v", len(ms), ms)
	}
	want := []struct {
		start      uintptr
		rss, anon  int64
		releasable bool
	}{
		{0x400000, 17500, 0, true},   // code
		{0x1f17000, 22888, 0, true},  // read-only data
		{0x3db1000, 592, 300, false}, // writable data
		{0x3e65000, 40, 40, false},   // relocated read-only data: private copies
	}
	for i, w := range want {
		m := ms[i]
		if m.Start != w.start || m.RssKiB != w.rss || m.AnonKiB != w.anon || m.releasable() != w.releasable {
			t.Errorf("mapping %d: %+v releasable=%v, want %+v", i, m, m.releasable(), w)
		}
	}
	if _, err := ParseSmaps(strings.NewReader("zz-01 r-xp 0 0:0 1 /opt/weft/bin/weft\n"), "/opt/weft/bin/weft"); err == nil {
		t.Error("a malformed range was accepted")
	}
}

// written is changed at run time: if Release dropped the writable data
// segment, it would read back as its value in the file.
var written = 1

// TestRelease releases this test binary's read-only pages for real: the
// resident file pages shrink, and code and written data still work.
func TestRelease(t *testing.T) {
	written = 42
	before := rssFileKiB(t)
	kib, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKiB(t)
	t.Logf("released %d KiB; RssFile %d -> %d KiB", kib, before, after)
	if kib <= 0 || after >= before {
		t.Errorf("nothing released: %d KiB; RssFile %d -> %d KiB", kib, before, after)
	}
	if written != 42 {
		t.Fatalf("written data changed to %d", written)
	}
	if strconv.Itoa(written) != "42" { // code paged back in
		t.Fatal("code misbehaves after release")
	}
}

func rssFileKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

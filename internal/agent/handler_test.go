package agent

import (
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/internal/lease/leasetest"
)

func get(t *testing.T, a *Agent, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	a.handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestHealthEndpoints(t *testing.T) {
	m := leasetest.NewMemory()
	m.PutConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`))
	p := &fakePlatform{failNext: 1000}
	a, _, _ := start(t, m, p, filepath.Join(t.TempDir(), "subnet.env"))
	eventually(t, "a failed sync", func() bool { return a.Status().SyncErr != "" })
	if code, body := get(t, a, "/readyz"); code != 503 || !strings.Contains(body, `"ready":false`) || !strings.Contains(body, "injected") {
		t.Errorf("/readyz while failing: %d %s", code, body)
	}
	if code, _ := get(t, a, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	p.mu.Lock()
	p.failNext = 0
	p.mu.Unlock()
	eventually(t, "ready", func() bool { return a.Status().Ready })
	if code, body := get(t, a, "/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Errorf("/readyz when ready: %d %s", code, body)
	}
	_, metrics := get(t, a, "/metrics")
	for _, want := range []string{"weft_leases_known 1", `weft_syncs_total{kind="full",result="ok"}`, `weft_syncs_total{kind="incremental",result="error"}`, `weft_lease_relists_total{cause="start"} 1`,
		"weft_sync_duration_seconds_count", "weft_kernel_entries_applied_total", "weft_peers_skipped 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

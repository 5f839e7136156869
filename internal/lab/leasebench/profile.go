package leasebench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/internal/lab/process"
	"github.com/weftnet/weft/internal/netns"
)

// profileWeft takes a CPU profile of every weft agent over d (the agents
// run with --pprof) while work runs, and writes each to
// dir/<count>-<node>-<what>.pprof. work runs until the profiles are in
// and stop is closed; it should then return soon.
func (c *cluster) profileWeft(ctx context.Context, dir string, count int, what string, d time.Duration, work func(stop <-chan struct{}) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stop := make(chan struct{})
	werr := make(chan error, 1)
	go func() { werr <- work(stop) }()
	var g errgroup.Group
	for _, n := range c.nodes {
		if n.kind != process.Weft {
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("%d-%s-%s.pprof", count, n.Name, what))
		g.Go(func() error {
			return fetchProfile(ctx, n.NS, "profile?seconds="+strconv.Itoa(int(d.Seconds())), d, path)
		})
	}
	err := g.Wait()
	close(stop)
	return errors.Join(err, <-werr)
}

// churn adds a lease and deletes it again, gap apart, until stop is
// closed: the single events of the measurement, for as long as a profile
// takes.
func (c *cluster) churn(ctx context.Context, p *pool, gap time.Duration, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		l, err := p.take(1)
		if err != nil {
			return err
		}
		for _, del := range []bool{false, true} {
			if _, _, err := c.converge(ctx, l, del, 10*time.Second); err != nil {
				return fmt.Errorf("single event on %s (delete %v): %w", l[0].Subnet, del, err)
			}
			if err := sleep(ctx, gap); err != nil {
				return err
			}
		}
		p.give(l)
	}
}

// heapProfiles saves the heap profile of every weft agent to
// dir/<count>-<node>-heap.pprof.
func (c *cluster) heapProfiles(ctx context.Context, dir string, count int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var g errgroup.Group
	for _, n := range c.nodes {
		if n.kind != process.Weft {
			continue
		}
		path := filepath.Join(dir, fmt.Sprintf("%d-%s-heap.pprof", count, n.Name))
		g.Go(func() error { return fetchProfile(ctx, n.NS, "heap", 0, path) })
	}
	return g.Wait()
}

// fetchProfile saves GET /debug/pprof/<what> (a profile over d) from the
// agent's health server inside ns to path.
func fetchProfile(ctx context.Context, ns, what string, d time.Duration, path string) error {
	cl := &http.Client{Transport: &http.Transport{DialContext: netns.Dialer(ns)}, Timeout: d + 30*time.Second}
	url := "http://127.0.0.1:" + strconv.Itoa(process.Healthz) + "/debug/pprof/" + what
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s of the agent in %s: %w", what, ns, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("profile %s of the agent in %s: %s: %s (does it run with --pprof?)", what, ns, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s of the agent in %s: %w", what, ns, err)
	}
	return f.Close()
}

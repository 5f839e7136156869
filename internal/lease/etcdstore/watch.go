package etcdstore

import (
	"context"
	"errors"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/weftnet/weft/internal/lease"
)

// listTimeout bounds one list of the subnets, so that an unreachable etcd
// gives a line every so often instead of a silent wait.
const listTimeout = 15 * time.Second

// resumeAttempts is how many times in a row a watch that fails before it
// delivers anything is resumed from its revision before Watch lists again.
const resumeAttempts = 3

// Watch implements lease.Store. It lists the subnets (a Reset with the
// records that decode and, in Invalid, those that do not), then follows
// etcd's watch from the revision of that list: one Event per put or
// delete, in etcd's order.
//
// When the connection to etcd is cut (etcd restarted, the network between
// down), the client resumes the watch from the next revision by itself, so
// no change is lost or sent twice; the cut and the return are logged once,
// naming the endpoints. When the watch ends otherwise, Watch resumes it from
// the last revision seen. Only when that cannot work does it list again: a
// Reset with Cause lease.CauseCompacted when etcd has compacted the history
// past that revision, lease.CauseWatchError when the watch fails
// resumeAttempts times in a row.
func (s *Store) Watch(ctx context.Context, sink func(lease.Event)) error {
	done := make(chan struct{})
	defer func() { <-done }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(done)
		s.logConnection(ctx)
	}()
	cause := lease.CauseStart
	failing := false
	var wait time.Duration // before the next list, after one failed
	for {
		if !sleep(ctx, wait) {
			return nil
		}
		rev, err := s.reset(ctx, cause, sink)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = min(2*wait+time.Second, 30*time.Second)
			// The first failure is a warning; the same one every few
			// seconds after it would bury everything else.
			if !failing {
				s.log.Warn("etcd: cannot list the leases; retrying", "endpoints", s.endpoints, "err", err)
			} else {
				s.log.Debug("etcd: cannot list the leases; retrying", "endpoints", s.endpoints, "err", err)
			}
			failing = true
			continue
		}
		if failing {
			s.log.Info("etcd: listed the leases again", "endpoints", s.endpoints)
			failing = false
		}
		wait = 0
		cause = s.follow(ctx, rev, sink)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// reset lists the subnets and sends them as a Reset; it returns the
// revision of the list.
func (s *Store) reset(ctx context.Context, cause string, sink func(lease.Event)) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	valid, invalid, _, rev, err := s.records(lctx)
	if err != nil {
		return 0, err
	}
	sink(lease.Event{Reset: true, Cause: cause, Leases: valid, Invalid: invalid})
	return rev, nil
}

// follow sends each change after revision rev until the watch cannot be
// resumed, and returns the cause of the list that must follow (or "" when
// ctx is done).
func (s *Store) follow(ctx context.Context, rev int64, sink func(lease.Event)) string {
	last := rev // every change up to last has been sent
	for failures := 0; ; {
		// WithRequireLeader: a member cut off from its cluster ends the
		// watch instead of holding it open with no news.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.subnetsKey(), clientv3.WithPrefix(), clientv3.WithRev(last+1), clientv3.WithProgressNotify())
		var err error
		for resp := range wch {
			if resp.CompactRevision != 0 {
				cancel()
				s.log.Warn("etcd: the lease history was compacted past the watch; listing the leases again",
					"endpoints", s.endpoints, "revision", last, "compact-revision", resp.CompactRevision)
				return lease.CauseCompacted
			}
			if err = resp.Err(); err != nil {
				break
			}
			failures = 0
			if resp.IsProgressNotify() {
				// Nothing under the prefix changed up to this revision:
				// resuming from it saves a relist if other keys' history
				// is compacted meanwhile.
				last = max(last, resp.Header.Revision)
				continue
			}
			for _, ev := range resp.Events {
				last = ev.Kv.ModRevision
				if ev.Type == clientv3.EventTypeDelete {
					key := strings.TrimPrefix(string(ev.Kv.Key), s.subnetsKey())
					sink(lease.Event{Record: lease.Record{Key: key}, Deleted: true})
					continue
				}
				sink(lease.Event{Record: s.decode(ev.Kv.Key, ev.Kv.Value, ev.Kv.Lease, ev.Kv.CreateRevision)})
			}
		}
		cancel()
		if ctx.Err() != nil {
			return ""
		}
		if err == nil {
			err = errors.New("the watch ended")
		}
		failures++
		if failures > resumeAttempts {
			s.log.Warn("etcd: the lease watch cannot be resumed; listing the leases again",
				"endpoints", s.endpoints, "revision", last, "err", err)
			return lease.CauseWatchError
		}
		s.log.Warn("etcd: the lease watch was interrupted; resuming it after the last change seen",
			"endpoints", s.endpoints, "revision", last, "err", err)
		if !sleep(ctx, time.Duration(failures)*500*time.Millisecond) {
			return ""
		}
	}
}

// logConnection logs when the connection to etcd is lost and when it is
// back, until ctx is done. The client resumes a watch across such a cut by
// itself, so the watch stream shows nothing of it.
func (s *Store) logConnection(ctx context.Context) {
	conn := s.cli.ActiveConnection()
	if conn == nil {
		return
	}
	st := conn.GetState()
	up := st == connectivity.Ready
	var lost time.Time
	for conn.WaitForStateChange(ctx, st) {
		st = conn.GetState()
		switch {
		case st == connectivity.Ready && !up:
			if !lost.IsZero() {
				s.log.Info("etcd: connected again; the lease watch resumes after the last change seen",
					"endpoints", s.endpoints, "after", time.Since(lost).Round(time.Millisecond))
			}
			up = true
		case st != connectivity.Ready && up:
			s.log.Warn("etcd: lost the connection; the lease watch resumes when it is back", "endpoints", s.endpoints, "state", st.String())
			up, lost = false, time.Now()
		}
	}
}

// sleep waits d, or less when ctx is done; it reports whether ctx is live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

package etcdstore

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Ping reads the config key's revision (a linearizable read with no value,
// so it needs a quorum and costs a few bytes): an error says the store does
// not answer, naming its endpoints.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.cli.Get(ctx, s.ConfigKey(), clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd at %s: %w", strings.Join(s.cli.Endpoints(), ","), err)
	}
	return nil
}

package kubestore

import (
	"context"
	"fmt"

	"github.com/weftnet/weft/internal/kubeclient"
)

// Ping asks the API server whether it is ready (GET /readyz, which every
// client may read): an error says this node's view of the cluster may be
// going stale.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.o.Client.REST(kubeclient.Nodes).Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
		return fmt.Errorf("kubernetes API server: GET /readyz: %w", err)
	}
	return nil
}

package kubestore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/kubeapi/kubeapitest"
)

// TestNodeAnnotations: NodeAnnotations reads this node's annotations as
// they are now (a later annotate is seen, another node's are not), and
// fails naming the node when it does not exist.
func TestNodeAnnotations(t *testing.T) {
	srv := kubeapitest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conf := confFile(t)
	addNode(t, srv.Admin, "n1", "10.244.1.0/24", "192.0.2.11")
	addNode(t, srv.Admin, "n2", "10.244.2.0/24", "192.0.2.12")
	annotate(t, srv.Admin, "n2", map[string]string{"bgp.weft.io/local-as": "64514"})
	s := newStore(t, srv.Client, "n1", conf, true)
	if ann, err := s.NodeAnnotations(ctx); err != nil || ann["bgp.weft.io/local-as"] != "" {
		t.Errorf("before: %v %v, want no local-as (n2's is not n1's)", ann, err)
	}
	annotate(t, srv.Admin, "n1", map[string]string{"bgp.weft.io/local-as": "64513", "bgp.weft.io/peers": `[{"Address":"192.0.2.1","AS":64500}]`})
	ann, err := s.NodeAnnotations(ctx)
	if err != nil || ann["bgp.weft.io/local-as"] != "64513" || ann["bgp.weft.io/peers"] != `[{"Address":"192.0.2.1","AS":64500}]` {
		t.Errorf("after annotate: %v %v", ann, err)
	}
	gone := newStore(t, srv.Client, "n3", conf, true)
	if _, err := gone.NodeAnnotations(ctx); err == nil || !strings.Contains(err.Error(), `node "n3" does not exist`) {
		t.Errorf("a missing node: %v", err)
	}
}

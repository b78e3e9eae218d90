package kubepods

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNodePodCIDR(t *testing.T) {
	nodes := map[string]string{
		"/api/v1/nodes/n1": `{"spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24","fd00::/64"]}}`,
		"/api/v1/nodes/n2": `{"spec":{"podCIDRs":["fd00::/64","10.244.2.0/24"]}}`,
		"/api/v1/nodes/n3": `{"spec":{}}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := nodes[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"kind":"Status","reason":"Forbidden","message":"nodes is forbidden","code":403}`))
			return
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	c := NewClientForTest(srv.URL, srv.Client())
	for node, want := range map[string]string{"n1": "10.244.1.0/24", "n2": "10.244.2.0/24", "n3": "invalid Prefix"} {
		got, err := c.NodePodCIDR(context.Background(), node)
		if err != nil || got.String() != want {
			t.Errorf("%s: %s, %v; want %s", node, got, err, want)
		}
	}
	if _, err := c.NodePodCIDR(context.Background(), "n4"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("forbidden: err = %v", err)
	}
}

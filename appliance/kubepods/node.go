package kubepods

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
)

// maxNodeBytes bounds a Node object (labels, images and conditions).
const maxNodeBytes = 4 << 20

// NodePodCIDR is the IPv4 pod subnet the cluster gave node (spec.podCIDRs,
// from kube-controller-manager --allocate-node-cidrs); an invalid Prefix
// when it has none. It needs get on nodes.
func (c *Client) NodePodCIDR(ctx context.Context, node string) (netip.Prefix, error) {
	resp, err := c.get(ctx, "/api/v1/nodes/"+url.PathEscape(node), nil)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("reading node %s: %w", node, err)
	}
	defer resp.Body.Close()
	var n struct {
		Spec struct {
			PodCIDR  string   `json:"podCIDR"`
			PodCIDRs []string `json:"podCIDRs"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxNodeBytes)).Decode(&n); err != nil {
		return netip.Prefix{}, fmt.Errorf("decoding node %s: %w", node, err)
	}
	for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, nil
}

package kubepods

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/clauderon/clauderond/appliance/identity"
)

// pod holds the fields of a v1.Pod this package reads.
type pod struct {
	Metadata struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		UID               string            `json:"uid"`
		ResourceVersion   string            `json:"resourceVersion"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		NodeName           string `json:"nodeName"`
		HostNetwork        bool   `json:"hostNetwork"`
		ServiceAccountName string `json:"serviceAccountName"`
	} `json:"spec"`
	Status struct {
		Phase  string `json:"phase"`
		PodIP  string `json:"podIP"`
		PodIPs []struct {
			IP string `json:"ip"`
		} `json:"podIPs"`
	} `json:"status"`
}

// podList is a v1.PodList.
type podList struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Items []pod `json:"items"`
}

// Watch event types.
const (
	eventAdded    = "ADDED"
	eventModified = "MODIFIED"
	eventDeleted  = "DELETED"
	eventBookmark = "BOOKMARK"
	eventError    = "ERROR"
)

// maxEventBytes caps one line of the watch stream.
const maxEventBytes = 4 << 20

// event is one decoded line of the watch stream. Pod is set for ADDED,
// MODIFIED and DELETED; RV is the object's resourceVersion ("" for ERROR).
type event struct {
	Type string
	Pod  *pod
	RV   string
}

// decodeEvent decodes one watch line. An ERROR event comes back as an
// *APIError (code 410: relist); anything it cannot vouch for is an error,
// and the caller relists.
func decodeEvent(line []byte) (event, error) {
	if len(line) > maxEventBytes {
		return event{}, fmt.Errorf("watch event of %d bytes exceeds %d", len(line), maxEventBytes)
	}
	var raw struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := json.Unmarshal(line, &raw); err != nil {
		return event{}, fmt.Errorf("decoding watch event: %w", err)
	}
	switch raw.Type {
	case eventAdded, eventModified, eventDeleted:
		var p pod
		if err := json.Unmarshal(raw.Object, &p); err != nil {
			return event{}, fmt.Errorf("decoding %s pod: %w", raw.Type, err)
		}
		if p.Metadata.UID == "" {
			return event{}, fmt.Errorf("%s pod %s/%s has no uid", raw.Type, p.Metadata.Namespace, p.Metadata.Name)
		}
		return event{Type: raw.Type, Pod: &p, RV: p.Metadata.ResourceVersion}, nil
	case eventBookmark:
		var b struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(raw.Object, &b); err != nil {
			return event{}, fmt.Errorf("decoding bookmark: %w", err)
		}
		if b.Metadata.ResourceVersion == "" {
			return event{}, errors.New("bookmark without a resourceVersion")
		}
		return event{Type: raw.Type, RV: b.Metadata.ResourceVersion}, nil
	case eventError:
		var s status
		if err := json.Unmarshal(raw.Object, &s); err != nil {
			return event{}, fmt.Errorf("decoding watch error: %w", err)
		}
		return event{Type: raw.Type}, &APIError{Code: s.Code, Reason: s.Reason, Message: s.Message}
	default:
		return event{}, fmt.Errorf("unknown watch event type %q", raw.Type)
	}
}

// podAddr returns the address p holds on the node's pod subnet, ok false
// when p is not a pod of the table: on another node, on the host network,
// finished (its address may already be someone else's), or without an IPv4
// address inside subnet.
func podAddr(p *pod, node string, subnet netip.Prefix) (netip.Addr, bool) {
	if p.Spec.NodeName != node || p.Spec.HostNetwork {
		return netip.Addr{}, false
	}
	if p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" {
		return netip.Addr{}, false
	}
	cands := []string{p.Status.PodIP}
	for _, ip := range p.Status.PodIPs {
		cands = append(cands, ip.IP)
	}
	for _, s := range cands {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			continue // IPv6, empty or garbage: the next one may be the IPv4
		}
		if !subnet.IsValid() || !subnet.Contains(a) {
			return netip.Addr{}, false
		}
		return a, true
	}
	return netip.Addr{}, false
}

// podContainer turns p into the table's Container, HostVeth left empty; ok
// false when p does not belong in the table (see podAddr).
func podContainer(p *pod, node string, subnet netip.Prefix, profileLabel string) (identity.Container, bool) {
	ip, ok := podAddr(p, node, subnet)
	if !ok || p.Metadata.UID == "" {
		return identity.Container{}, false
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	profile, labelled := p.Metadata.Labels[profileLabel]
	return identity.Container{
		ID:             p.Metadata.UID,
		Name:           p.Metadata.Namespace + "/" + p.Metadata.Name,
		IP:             ip,
		Labels:         p.Metadata.Labels,
		Profile:        profile,
		Labelled:       labelled,
		Namespace:      p.Metadata.Namespace,
		ServiceAccount: sa,
	}, true
}

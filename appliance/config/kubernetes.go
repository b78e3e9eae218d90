package config

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
)

// Modes.
const (
	ModeDocker     = "docker"
	ModeKubernetes = "kubernetes"
)

// KubernetesConfig is node mode (mode: kubernetes): clauderond runs on a
// Kubernetes node (the DaemonSet in scripts/kubernetes), adopts the CNI's
// Linux bridge (network.bridge, this node's pod subnet network.subnet)
// instead of creating a Docker network, and learns which pod holds an
// address from the API server.
type KubernetesConfig struct {
	// Node is this node's name (spec.nodeName of its pods); the DaemonSet
	// sets CLAUDERON_KUBERNETES_NODE from the downward API.
	Node string `mapstructure:"node" yaml:"node"`
	// APIServer, TokenFile and CAFile reach the API server from outside a
	// pod; "" (the DaemonSet) uses the pod's service account.
	APIServer string `mapstructure:"api_server" yaml:"api_server"`
	TokenFile string `mapstructure:"token_file" yaml:"token_file"`
	CAFile    string `mapstructure:"ca_file" yaml:"ca_file"`
	// PodCIDRs are the cluster's pod networks (every node's): pod-to-pod
	// traffic is the cluster's own and passes. ServiceCIDRs are the
	// ClusterIP ranges: 443 to them is not redirected, so kube-proxy's
	// DNAT applies, and the endpoint it leads to is judged as usual.
	PodCIDRs     []string `mapstructure:"pod_cidrs" yaml:"pod_cidrs"`
	ServiceCIDRs []string `mapstructure:"service_cidrs" yaml:"service_cidrs"`
	// APIServerEndpoints ("ip:port", what the kubernetes Service leads
	// to) may be reached by pods; empty, pods cannot reach the API server.
	APIServerEndpoints []string `mapstructure:"api_server_endpoints" yaml:"api_server_endpoints"`
	// ClusterDNS ("ip" or "ip:port") answers names under ClusterDomain for
	// the pods; "" answers them NXDOMAIN like any other denied name.
	ClusterDNS    string `mapstructure:"cluster_dns" yaml:"cluster_dns"`
	ClusterDomain string `mapstructure:"cluster_domain" yaml:"cluster_domain"`
	// CNIResultsDir is libcni's cache of attachment results: the host-side
	// veth of each pod address, for the anti-spoofing sets.
	CNIResultsDir string `mapstructure:"cni_results_dir" yaml:"cni_results_dir"`
}

// SubnetAuto (network.subnet in node mode) takes this node's pod subnet
// from the CNI's bridge, else from the Node's spec.podCIDR.
const SubnetAuto = "auto"

// DefaultCNIResultsDir is kubernetes.cni_results_dir's default.
const DefaultCNIResultsDir = "/var/lib/cni/results"

func defaultKubernetes() KubernetesConfig {
	return KubernetesConfig{PodCIDRs: []string{}, ServiceCIDRs: []string{}, APIServerEndpoints: []string{},
		ClusterDomain: "cluster.local", CNIResultsDir: DefaultCNIResultsDir}
}

// NodeMode reports whether the daemon runs on a Kubernetes node.
func (c *Config) NodeMode() bool { return c.Mode == ModeKubernetes }

var (
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	domainRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	subdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
)

func (c *Config) validateKubernetes() error {
	var errs []error
	if !oneOf(c.Mode, ModeDocker, ModeKubernetes) {
		return keyErr("mode", "%q is not a mode; expected docker or kubernetes", c.Mode)
	}
	k := c.Kubernetes
	if c.Mode != ModeKubernetes {
		return nil
	}
	if !subdomainRE.MatchString(k.Node) {
		errs = append(errs, keyErr("kubernetes.node", "%q is not a node name; set it (the DaemonSet sets CLAUDERON_KUBERNETES_NODE from spec.nodeName)", k.Node))
	}
	if k.APIServer != "" && !strings.HasPrefix(k.APIServer, "https://") {
		errs = append(errs, keyErr("kubernetes.api_server", "%q is not an https:// URL; expected e.g. https://10.0.0.5:6443, or empty inside a pod", k.APIServer))
	}
	if (k.APIServer == "") != (k.TokenFile == "") {
		errs = append(errs, keyErr("kubernetes.token_file", "api_server and token_file go together (outside a pod); leave both empty inside one"))
	}
	for _, f := range []struct{ key, path string }{{"kubernetes.token_file", k.TokenFile}, {"kubernetes.ca_file", k.CAFile}, {"kubernetes.cni_results_dir", k.CNIResultsDir}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			errs = append(errs, keyErr(f.key, "%q is not an absolute path", f.path))
		}
	}
	for key, list := range map[string][]string{"kubernetes.pod_cidrs": k.PodCIDRs, "kubernetes.service_cidrs": k.ServiceCIDRs} {
		for i, s := range list {
			if p, err := netip.ParsePrefix(s); err != nil || !p.Addr().Is4() || p != p.Masked() || p.Bits() < 8 {
				errs = append(errs, keyErr(fmt.Sprintf("%s[%d]", key, i), "%q is not an IPv4 CIDR of /8 or longer; expected e.g. 10.244.0.0/16", s))
			}
		}
	}
	if len(k.PodCIDRs) > 0 && !c.Network.Subnet.Auto && !coveredBy(c.Subnet(), k.PodCIDRs) {
		errs = append(errs, keyErr("network.subnet", "%s (this node's pods) is not inside kubernetes.pod_cidrs %v", c.Network.Subnet, k.PodCIDRs))
	}
	for i, s := range k.APIServerEndpoints {
		if a, err := netip.ParseAddrPort(s); err != nil || !a.Addr().Is4() || a.Port() == 0 {
			errs = append(errs, keyErr(fmt.Sprintf("kubernetes.api_server_endpoints[%d]", i), "%q is not an IPv4 ip:port; expected e.g. 10.0.0.5:6443", s))
		}
	}
	if k.ClusterDNS != "" {
		if _, err := parseServer(k.ClusterDNS); err != nil {
			errs = append(errs, keyErr("kubernetes.cluster_dns", "%q is not ip or ip:port; expected e.g. 10.96.0.10", k.ClusterDNS))
		}
	}
	if !domainRE.MatchString(k.ClusterDomain) {
		errs = append(errs, keyErr("kubernetes.cluster_domain", "%q is not a domain; expected e.g. cluster.local", k.ClusterDomain))
	}
	if c.Authz.Enabled {
		errs = append(errs, keyErr("authz.enabled", "the Docker authorization plugin has no meaning in kubernetes mode; turn it off"))
	}
	return errors.Join(errs...)
}

// parseServer accepts "ip" (port 53) or "ip:port".
func parseServer(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53), nil
	}
	return netip.ParseAddrPort(s)
}

// ClusterDNSServer is kubernetes.cluster_dns as ip:port, invalid when unset.
func (c *Config) ClusterDNSServer() netip.AddrPort {
	a, _ := parseServer(c.Kubernetes.ClusterDNS)
	return a
}

func coveredBy(p netip.Prefix, cidrs []string) bool {
	for _, s := range cidrs {
		if c, err := netip.ParsePrefix(s); err == nil && c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func validatePodBindings(key string, a ProfileAccess) []error {
	var errs []error
	for j, ns := range a.Namespaces {
		if !dnsLabelRE.MatchString(ns) {
			errs = append(errs, keyErr(fmt.Sprintf("%s.namespaces[%d]", key, j), "%q is not a namespace name; expected e.g. team-a", ns))
		}
	}
	for j, sa := range a.ServiceAccounts {
		ns, name, ok := strings.Cut(sa, "/")
		if !ok || !dnsLabelRE.MatchString(ns) || !subdomainRE.MatchString(name) {
			errs = append(errs, keyErr(fmt.Sprintf("%s.service_accounts[%d]", key, j), "%q is not namespace/name; expected e.g. team-a/ci-runner", sa))
		}
	}
	return errs
}

package config

import (
	"errors"
	"fmt"
	"golang.org/x/net/publicsuffix"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Validate checks every key and returns all problems joined; each names its
// key and shows a good value.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.validateBasics())
	add(c.validateNetwork())
	add(c.validateListen())
	for i, r := range c.Rules {
		add(validateRule(fmt.Sprintf("rules[%d]", i), r))
	}
	add(duplicateHosts("rules", len(c.Rules), func(i int) string { return c.Rules[i].Host }))
	add(c.validateEgress())
	for i, u := range c.Upstreams {
		add(validateUpstream(fmt.Sprintf("upstreams[%d]", i), u))
	}
	add(duplicateHosts("upstreams", len(c.Upstreams), func(i int) string { return c.Upstreams[i].Host }))
	add(c.validateDNS())
	add(c.validateSessions())
	add(c.validateProfiles())
	add(c.validateKubernetes())
	if c.Authz.Enabled && (!filepath.IsAbs(c.Authz.Socket) || !strings.HasSuffix(c.Authz.Socket, ".sock")) {
		add(keyErr("authz.socket", "%q is not an absolute path ending in .sock; expected e.g. %s", c.Authz.Socket, DefaultAuthzSocket))
	}
	for i, n := range c.Authz.AllowNetworks {
		if !nameRE.MatchString(n) {
			add(keyErr(fmt.Sprintf("authz.allow_networks[%d]", i), "%q is not a Docker network name; expected e.g. build-cache", n))
		}
	}
	return errors.Join(errs...)
}

// keyErr is a problem with key's value: "key: <format>".
func keyErr(key string, format string, args ...any) error {
	return &fieldError{key: key, err: fmt.Errorf(format, args...)}
}

func (c *Config) validateBasics() error {
	var errs []error
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		errs = append(errs, keyErr("state_dir", "%q is not an absolute path; expected e.g. /home/alice/.clauderon", c.StateDir))
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		errs = append(errs, keyErr("log.level", "%q is not one of debug, info, warn, error; expected e.g. info", c.Log.Level))
	}
	if !oneOf(c.Log.Format, "text", "json") {
		errs = append(errs, keyErr("log.format", "%q is not one of text, json; expected e.g. text", c.Log.Format))
	}
	if c.CredentialsFile != "" && !filepath.IsAbs(c.CredentialsFile) {
		errs = append(errs, keyErr("credentials_file", "%q is not an absolute path; expected e.g. %s (\"\" for none)", c.CredentialsFile, DefaultCredentialsFile))
	}
	if c.Socket.Path != "" && !filepath.IsAbs(c.Socket.Path) {
		errs = append(errs, keyErr("socket.path", "%q is not an absolute path; expected e.g. /run/clauderon/clauderond.sock", c.Socket.Path))
	}
	if c.Socket.Group != "" && !nameRE.MatchString(c.Socket.Group) {
		errs = append(errs, keyErr("socket.group", "%q is not a group name or gid; expected e.g. clauderon", c.Socket.Group))
	}
	if c.Audit.MaxBytes < 0 {
		errs = append(errs, keyErr("audit.max_bytes", "%d is negative; expected e.g. 104857600 (0 disables rotation)", c.Audit.MaxBytes))
	}
	if c.Audit.MaxBackups < 0 {
		errs = append(errs, keyErr("audit.max_backups", "%d is negative; expected e.g. 5", c.Audit.MaxBackups))
	}
	if c.Audit.RatePerSecond < 0 || math.IsNaN(c.Audit.RatePerSecond) || math.IsInf(c.Audit.RatePerSecond, 0) {
		errs = append(errs, keyErr("audit.rate_per_second", "%v is not a rate; expected e.g. 200 (0 turns the per-source budget off)", c.Audit.RatePerSecond))
	}
	if c.Audit.RatePerSecond > 0 && c.Audit.Burst < 1 {
		errs = append(errs, keyErr("audit.burst", "%d is less than 1 while audit.rate_per_second is set; expected e.g. 2000", c.Audit.Burst))
	}
	if c.DrainTimeout <= 0 || c.DrainTimeout > 10*time.Minute {
		errs = append(errs, keyErr("drain_timeout", "%s is not between 0 and 10m; expected e.g. 10s", c.DrainTimeout))
	}
	return errors.Join(errs...)
}

var (
	pushRE      = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]*/([A-Za-z0-9_.-]+|\*)$`)
	nameRE      = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$`)
	ifnameRE    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,14}$`)
	credRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	headerRE    = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	denyRE      = regexp.MustCompile(`^(?:(?:[A-Za-z]+|\*) )?/[^\s]*$`)
	hostLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	userRE      = regexp.MustCompile(`^([0-9]+|[a-z_][a-z0-9_-]*)(:([0-9]+|[a-z_][a-z0-9_-]*))?$`)
)

// Subnet returns network.subnet's prefix: invalid when it is auto (node
// mode; the daemon finds the prefix at start).
func (c *Config) Subnet() netip.Prefix { return c.Network.Subnet.Prefix }

func (c *Config) validateNetwork() error {
	var errs []error
	if !nameRE.MatchString(c.Network.Name) {
		errs = append(errs, keyErr("network.name", "%q is not a Docker network name; expected e.g. clauderon", c.Network.Name))
	}
	if !ifnameRE.MatchString(c.Network.Bridge) {
		errs = append(errs, keyErr("network.bridge", "%q is not an interface name (1-15 of a-z 0-9 _ . -); expected e.g. clauderon0", c.Network.Bridge))
	}
	s := c.Network.Subnet
	p, text := s.Prefix, s.String()
	switch {
	case c.NodeMode() && s.Auto:
	case !p.IsValid() && c.NodeMode():
		errs = append(errs, keyErr("network.subnet", "%s", (&badSubnet{text: text}).nodeMode()))
	case !p.IsValid():
		errs = append(errs, keyErr("network.subnet", "%s", &badSubnet{text: text}))
	case !p.Addr().Is4():
		errs = append(errs, keyErr("network.subnet", "%q is not an IPv4 CIDR; expected e.g. 10.213.0.0/24", text))
	case p.Bits() < 8 || p.Bits() > 29:
		errs = append(errs, keyErr("network.subnet", "%q must have a prefix length between /8 and /29; expected e.g. 10.213.0.0/24", text))
	case p.Masked() != p:
		errs = append(errs, keyErr("network.subnet", "%q has host bits set; expected %s", text, p.Masked()))
	case p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() || p.Addr().IsUnspecified():
		errs = append(errs, keyErr("network.subnet", "%q is not a private unicast range; expected e.g. 10.213.0.0/24", text))
	}
	return errors.Join(errs...)
}

func (c *Config) validateListen() error {
	var errs []error
	for _, p := range []struct {
		key  string
		port int
	}{{"listen.tls_port", c.Listen.TLSPort}, {"listen.dns_port", c.Listen.DNSPort}} {
		if p.port < 1 || p.port > 65535 {
			errs = append(errs, keyErr(p.key, "%d is not a port 1..65535; expected e.g. 8443", p.port))
		}
	}
	if c.Listen.TLSPort == c.Listen.DNSPort {
		errs = append(errs, keyErr("listen.dns_port", "%d is the same as listen.tls_port; expected distinct ports, e.g. tls_port 8443 and dns_port 8053", c.Listen.DNSPort))
	}
	if c.Metrics.Address != "" {
		errs = append(errs, c.validateMetrics())
	}
	return errors.Join(errs...)
}

func (c *Config) validateMetrics() error {
	host, port, err := net.SplitHostPort(c.Metrics.Address)
	if err != nil {
		return keyErr("metrics.address", "%q is not host:port; expected e.g. 127.0.0.1:9464 (\"\" disables)", c.Metrics.Address)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return keyErr("metrics.address", "%q has no port 1..65535; expected e.g. 127.0.0.1:9464", c.Metrics.Address)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if sub := c.Subnet(); sub.IsValid() && sub.Contains(a.Unmap()) {
			return keyErr("metrics.address", "%q is on the bridge subnet %s, reachable from containers; expected e.g. 127.0.0.1:9464", c.Metrics.Address, sub)
		}
	}
	return nil
}

// validHost accepts a lower-case DNS name, optionally with a leading "*."
// wildcard, and rejects IP literals (rules route by SNI).
// validPathRule checks a deny/allow entry: "[METHOD] /path/prefix", written
// decoded (the injector matches every decoded form of a request's path).
func validPathRule(d string) bool {
	return denyRE.MatchString(d) && !strings.Contains(d, "/../") && !strings.HasSuffix(d, "/..") &&
		!strings.Contains(d, "//") && !strings.ContainsAny(d, "%;\\")
}

// publicSuffixWildcard reports a "*.suffix" whose suffix is a public suffix
// (github.io, co.uk): anyone can own a name under it.
func publicSuffixWildcard(h string) bool {
	rest, ok := strings.CutPrefix(h, "*.")
	if !ok {
		return false
	}
	ps, icann := publicsuffix.PublicSuffix(rest)
	return ps == rest && (icann || strings.Contains(rest, "."))
}

func validHost(h string, wildcard bool) bool {
	if wildcard {
		h = strings.TrimPrefix(h, "*.")
	}
	if h == "" || len(h) > 253 || strings.Contains(h, "*") {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if !hostLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

func validateRule(key string, r Rule) error {
	var errs []error
	if !validHost(r.Host, true) {
		errs = append(errs, keyErr(key+".host", "%q is not a lower-case host name; expected e.g. api.anthropic.com or *.example.com", r.Host))
	}
	if !credRE.MatchString(r.Credential) {
		errs = append(errs, keyErr(key+".credential", "%q is not a credential name (a-z 0-9 _ -); expected e.g. anthropic", r.Credential))
	}
	if r.Header != "" && !headerRE.MatchString(r.Header) {
		errs = append(errs, keyErr(key+".header", "%q is not an HTTP header name; expected e.g. Authorization", r.Header))
	}
	if !oneOf(r.Format, "", "bearer", "x-api-key", "basic-x-access-token", "anthropic", "template") {
		errs = append(errs, keyErr(key+".format", "%q is not one of bearer, x-api-key, basic-x-access-token, anthropic, template; expected e.g. bearer", r.Format))
	}
	if r.Format == "template" && !strings.Contains(r.Template, "{{credential}}") {
		errs = append(errs, keyErr(key+".template", "%q does not contain {{credential}}; expected e.g. \"token {{credential}}\"", r.Template))
	}
	if r.Format != "template" && r.Template != "" {
		errs = append(errs, keyErr(key+".template", "is set but format is %q; set format: template", r.Format))
	}
	for j, h := range r.Strip {
		if !headerRE.MatchString(h) {
			errs = append(errs, keyErr(fmt.Sprintf("%s.strip[%d]", key, j), "%q is not an HTTP header name; expected e.g. X-Api-Key", h))
		}
	}
	for _, list := range []struct {
		name    string
		entries []string
	}{{"deny", r.Deny}, {"allow", r.Allow}} {
		for j, d := range list.entries {
			if !validPathRule(d) {
				errs = append(errs, keyErr(fmt.Sprintf("%s.%s[%d]", key, list.name, j), "%q is not \"[METHOD] /path/prefix\" (decoded: no %%, ; or \\; \"*\" for one segment); expected e.g. \"POST /v1/keys\"", d))
			}
		}
	}
	for j, p := range r.Push {
		if !pushRE.MatchString(p) {
			errs = append(errs, keyErr(fmt.Sprintf("%s.push[%d]", key, j), "%q is not owner/repo or owner/*; expected e.g. acme/app", p))
		}
	}
	if publicSuffixWildcard(r.Host) {
		errs = append(errs, keyErr(key+".host", "%q would send the credential to every site under the public suffix %s; name the hosts instead", r.Host, strings.TrimPrefix(r.Host, "*.")))
	}
	if !oneOf(r.OnClientCredential, "", "replace", "keep", "reject") {
		errs = append(errs, keyErr(key+".on_client_credential", "%q is not one of replace, keep, reject; expected e.g. replace", r.OnClientCredential))
	}
	return errors.Join(errs...)
}

func duplicateHosts(key string, n int, host func(int) string) error {
	seen := map[string]int{}
	var errs []error
	for i := 0; i < n; i++ {
		h := host(i)
		if j, ok := seen[h]; ok && h != "" {
			errs = append(errs, keyErr(fmt.Sprintf("%s[%d].host", key, i), "%q already appears in %s[%d]; expected one entry per host", h, key, j))
			continue
		}
		seen[h] = i
	}
	return errors.Join(errs...)
}

func (c *Config) validateEgress() error {
	var errs []error
	if err := c.Egress.Mode.problem(); err != nil {
		errs = append(errs, keyErr("egress.mode", "%s", err))
	}
	for i, h := range c.Egress.Allow {
		switch {
		case !validHost(h, true):
			errs = append(errs, keyErr(fmt.Sprintf("egress.allow[%d]", i), "%q is not a lower-case host name; expected e.g. pypi.org or *.pythonhosted.org", h))
		case publicSuffixWildcard(h):
			errs = append(errs, keyErr(fmt.Sprintf("egress.allow[%d]", i), "%q would pass through every site under the public suffix %s; name the hosts instead, e.g. raw.githubusercontent.com", h, strings.TrimPrefix(h, "*.")))
		}
	}
	for i, a := range c.Egress.AllowCIDRs {
		key := fmt.Sprintf("egress.allow_cidrs[%d]", i)
		if err := a.CIDR.problem(); err != nil {
			errs = append(errs, keyErr(key+".cidr", "%s", err))
		} else if sub := c.Subnet(); sub.IsValid() && sub.Overlaps(a.CIDR.Prefix) {
			errs = append(errs, keyErr(key+".cidr", "%q overlaps the bridge subnet %s; expected a range outside it, e.g. 192.0.2.0/24", a.CIDR, sub))
		}
		if !oneOf(a.Proto, "", "tcp", "udp") {
			errs = append(errs, keyErr(key+".proto", "%q is not tcp or udp; expected e.g. tcp", a.Proto))
		}
		if len(a.Ports) == 0 {
			errs = append(errs, keyErr(key+".ports", "is empty; expected e.g. [5432]"))
		}
		for j, p := range a.Ports {
			if p < 1 || p > 65535 {
				errs = append(errs, keyErr(fmt.Sprintf("%s.ports[%d]", key, j), "%d is not a port 1..65535; expected e.g. 5432", p))
			}
		}
	}
	return errors.Join(errs...)
}

func validateUpstream(key string, u Upstream) error {
	var errs []error
	if !validHost(u.Host, false) {
		errs = append(errs, keyErr(key+".host", "%q is not a lower-case host name; expected e.g. api.anthropic.com", u.Host))
	}
	host, port, err := net.SplitHostPort(u.Address)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		errs = append(errs, keyErr(key+".address", "%q is not host:port; expected e.g. 127.0.0.1:9443", u.Address))
	}
	if u.CAFile != "" {
		if f, err := os.Open(u.CAFile); err != nil {
			errs = append(errs, keyErr(key+".ca_file", "%v; expected a readable PEM file, e.g. /etc/clauderon/upstream-ca.pem", err))
		} else {
			f.Close()
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateDNS() error {
	var errs []error
	if err := c.DNS.DenyRcode.problem(); err != nil {
		errs = append(errs, keyErr("dns.deny_rcode", "%s", err))
	}
	if c.DNS.RatePerSecond < 0 {
		errs = append(errs, keyErr("dns.rate_per_second", "%g is negative; expected e.g. 500 (0 disables the limit)", c.DNS.RatePerSecond))
	}
	if c.DNS.Burst < 0 || (c.DNS.RatePerSecond > 0 && c.DNS.Burst < 1) {
		errs = append(errs, keyErr("dns.burst", "%d must be at least 1 when rate_per_second is set; expected e.g. 1000", c.DNS.Burst))
	}
	for i, s := range c.DNS.Servers {
		if err := (new(DNSServer)).UnmarshalText([]byte(s)); err != nil {
			errs = append(errs, keyErr(fmt.Sprintf("dns.servers[%d]", i), "%s", err))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateSessions() error {
	var errs []error
	if strings.TrimSpace(c.Sessions.Image) == "" || strings.ContainsAny(c.Sessions.Image, " \t\n") {
		errs = append(errs, keyErr("sessions.image", "%q is not an image reference; expected e.g. clauderon-agent:latest", c.Sessions.Image))
	}
	if !userRE.MatchString(c.Sessions.User) {
		errs = append(errs, keyErr("sessions.user", "%q is not uid[:gid] or a user name; expected e.g. 1000:1000", c.Sessions.User))
	} else if u, _, _ := strings.Cut(c.Sessions.User, ":"); u == "root" || isZero(u) {
		errs = append(errs, keyErr("sessions.user", "%q is root, and claude --dangerously-skip-permissions refuses to run as root; expected e.g. 1000:1000", c.Sessions.User))
	}
	if !filepath.IsAbs(c.Sessions.Workdir) {
		errs = append(errs, keyErr("sessions.workdir", "%q is not an absolute path; expected e.g. /workspace", c.Sessions.Workdir))
	}
	if ws := c.Sessions.WorkspacesDir; ws != "" && (!filepath.IsAbs(ws) || filepath.Clean(ws) == "/") {
		errs = append(errs, keyErr("sessions.workspaces_dir", "%q is not an absolute path below /; expected e.g. %s", c.Sessions.WorkspacesDir, DefaultWorkspacesDir))
	}
	return errors.Join(errs...)
}

func (c *Config) validateProfiles() error {
	var errs []error
	if c.Socket.AdminGroup != "" && !nameRE.MatchString(c.Socket.AdminGroup) {
		errs = append(errs, keyErr("socket.admin_group", "%q is not a group name or gid; expected e.g. clauderon-admin", c.Socket.AdminGroup))
	}
	seen := map[string]int{}
	for i, a := range c.Profiles.Access {
		key := fmt.Sprintf("profiles.access[%d]", i)
		if !credRE.MatchString(a.Profile) {
			errs = append(errs, keyErr(key+".profile", "%q is not a profile name (a-z 0-9 _ -); expected e.g. team-a", a.Profile))
		}
		if j, dup := seen[a.Profile]; dup {
			errs = append(errs, keyErr(key+".profile", "%q already appears in profiles.access[%d]; expected one entry per profile", a.Profile, j))
		}
		seen[a.Profile] = i
		if len(a.Users) == 0 && len(a.Groups) == 0 && len(a.Namespaces) == 0 && len(a.ServiceAccounts) == 0 {
			errs = append(errs, keyErr(key, "profile %q lists no users, groups, namespaces or service accounts (only root could use it); expected e.g. {profile: %s, groups: [%s]}", a.Profile, a.Profile, a.Profile))
		}
		errs = append(errs, validatePodBindings(key, a)...)
		for j, u := range a.Users {
			if !nameRE.MatchString(u) {
				errs = append(errs, keyErr(fmt.Sprintf("%s.users[%d]", key, j), "%q is not a user name or uid; expected e.g. alice", u))
			}
		}
		for j, g := range a.Groups {
			if !nameRE.MatchString(g) {
				errs = append(errs, keyErr(fmt.Sprintf("%s.groups[%d]", key, j), "%q is not a group name or gid; expected e.g. team-a", g))
			}
		}
	}
	return errors.Join(errs...)
}

func isZero(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n == 0
}

func oneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestLoad_TypedValuesFromFileAndEnv(t *testing.T) {
	cfg, err := load(t, "egress: {allow_cidrs: [{cidr: 192.0.2.0/24, ports: [5432]}]}\n", map[string]string{
		"CLAUDERON_DNS_SERVERS":     "192.0.2.53, 192.0.2.54:5353",
		"CLAUDERON_DNS_DENY_RCODE":  "refused",
		"CLAUDERON_EGRESS_MODE":     "audit",
		"CLAUDERON_NETWORK_SUBNET":  "10.7.0.0/24",
		"CLAUDERON_EGRESS_ALLOW":    "a.org,b.org",
		"CLAUDERON_DRAIN_TIMEOUT":   "4s",
		"CLAUDERON_LISTEN_TLS_PORT": "9443",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Subnet(), netip.MustParsePrefix("10.7.0.0/24"); got != want {
		t.Errorf("Subnet() = %s, want %s", got, want)
	}
	if cfg.Egress.Mode != EgressAudit || cfg.DNS.DenyRcode != RcodeRefused {
		t.Errorf("egress.mode %q dns.deny_rcode %q", cfg.Egress.Mode, cfg.DNS.DenyRcode)
	}
	if got := cfg.Egress.AllowCIDRs[0].CIDR.Prefix; got != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("egress.allow_cidrs[0].cidr = %s", got)
	}
	want := []string{"192.0.2.53:53", "192.0.2.54:5353"}
	for i, s := range cfg.DNS.Servers {
		if got := s.AddrPort().String(); got != want[i] {
			t.Errorf("dns.servers[%d] = %s, want %s", i, got, want[i])
		}
	}
	if strings.Join(cfg.Egress.Allow, ",") != "a.org,b.org" {
		t.Errorf("egress.allow = %q", cfg.Egress.Allow)
	}
}

// TestLoad_DecodeAndValidationErrorsTogether: a value that does not decode,
// an unknown key and another key's bad value are all reported, but not the
// zero value left where the undecodable one was.
func TestLoad_DecodeAndValidationErrorsTogether(t *testing.T) {
	_, err := load(t, "network: {subnet: bogus, subnett: x}\nlog: {level: loud}\ndns: {servers: [x]}\n", nil)
	if err == nil {
		t.Fatal("Load() = nil error")
	}
	msg := err.Error()
	for _, want := range []string{
		`network.subnet: "bogus" is not a CIDR; expected e.g. 10.213.0.0/24`,
		"network.subnett: unknown config key; did you mean network.subnet?",
		`log.level: "loud" is not one of`,
		`dns.servers[0]: "x" is not an IP or IP:port`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, `""`) {
		t.Errorf("error reports a zero value left by a failed decode:\n%s", msg)
	}
}

func TestLoad_MappingForAValue(t *testing.T) {
	for _, y := range []string{"drain_timeout: {a: 1}\n", "network: {subnet: {a: 1}}\n", "egress: {mode: {a: 1}}\n"} {
		if _, err := load(t, y, nil); err == nil || !strings.Contains(err.Error(), "expected a list or a value, not a mapping") {
			t.Errorf("%q: err = %v, want a mapping refusal", y, err)
		}
	}
}

func TestLoad_NodeModeSubnetAdvice(t *testing.T) {
	_, err := load(t, "mode: kubernetes\nnetwork: {subnet: nope}\nkubernetes: {node: n1}\n", nil)
	if err == nil || !strings.Contains(err.Error(), `network.subnet: "nope" is not a CIDR or auto; expected auto`) {
		t.Errorf("err = %v, want node mode's advice", err)
	}
}

func TestLoad_NumbersForTypedValuesAreCheckedAsText(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"network: {subnet: 10}\n", `network.subnet: "10" is not a CIDR`},
		{"egress: {mode: 1}\n", `egress.mode: "1" is not one of enforce, audit`},
		{"dns: {servers: [53]}\n", `dns.servers[0]: "53" is not an IP or IP:port`},
		{"dns: {deny_rcode: true}\n", `dns.deny_rcode: "true" is not one of nxdomain, refused`},
	} {
		if _, err := load(t, tc.yaml, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

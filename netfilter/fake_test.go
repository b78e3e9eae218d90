package netfilter

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestFake_RejectsIllogicalSequences(t *testing.T) {
	ctx := context.Background()
	s := baseSpec()
	tests := []struct {
		name string
		run  func(f *Fake) error
	}{
		{"verify_before_apply", func(f *Fake) error { _, err := f.Verify(ctx, s); return err }},
		{"teardown_before_apply", func(f *Fake) error { return f.Teardown(ctx) }},
		{"setports_before_apply", func(f *Fake) error { return f.SetPorts(ctx, testPorts) }},
		{"counters_before_apply", func(f *Fake) error { _, err := f.Counters(ctx); return err }},
		{"teardown_twice", func(f *Fake) error {
			if err := f.Apply(ctx, s); err != nil {
				return err
			}
			if err := f.Teardown(ctx); err != nil {
				return err
			}
			return f.Teardown(ctx)
		}},
		{"verify_after_teardown", func(f *Fake) error {
			if err := f.Apply(ctx, s); err != nil {
				return err
			}
			if err := f.Teardown(ctx); err != nil {
				return err
			}
			_, err := f.Verify(ctx, s)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Fake
			if err := tt.run(&f); !errors.Is(err, ErrNotApplied) {
				t.Errorf("err = %v, want ErrNotApplied", err)
			}
		})
	}
}

func TestFake_DriftInjectionAndHeal(t *testing.T) {
	ctx := context.Background()
	s := baseSpec()
	s.Ports = testPorts
	var f Fake
	if err := f.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	gone := ruleKey("inet clauderon", chainForward, "clauderon:reject-tcp")
	if !f.RemoveKey(gone) {
		t.Fatalf("RemoveKey(%q) found nothing; keys: %v", gone, must(Build(s)).Keys())
	}
	f.AddKey("rule inet clauderon filter_forward handle 99 (no comment)")
	d, err := f.Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Missing, []string{gone}) || len(d.Unexpected) != 1 || d.Intact() {
		t.Errorf("drift = %v, want %q missing and one unexpected", d, gone)
	}
	if err := f.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if d, _ := f.Verify(ctx, s); !d.Intact() {
		t.Errorf("after re-Apply drift = %v, want intact", d)
	}
}

func TestFake_SetPortsKeepsCountersAndValidates(t *testing.T) {
	ctx := context.Background()
	var f Fake
	if err := f.Apply(ctx, baseSpec()); err != nil {
		t.Fatal(err)
	}
	f.SetCounter("clauderon:reject-tcp", 7, 420)
	if err := f.SetPorts(ctx, testPorts); err != nil {
		t.Fatalf("SetPorts: %v", err)
	}
	want := baseSpec()
	want.Ports = testPorts
	if d, err := f.Verify(ctx, want); err != nil || !d.Intact() {
		t.Errorf("Verify with new ports = %v, %v", d, err)
	}
	cs, _ := f.Counters(ctx)
	if i := slices.IndexFunc(cs, func(c Counter) bool { return c.Rule == "clauderon:reject-tcp" }); i < 0 || cs[i].Packets != 7 {
		t.Errorf("counters after SetPorts = %v, want reject-tcp kept at 7", cs)
	}
	bad := []Port{{IfName: "veth9", Addr: netip.MustParseAddr("192.168.1.5")}}
	if err := f.SetPorts(ctx, bad); err == nil || !strings.Contains(err.Error(), "not a container address") {
		t.Errorf("SetPorts(outside subnet) = %v, want a validation error", err)
	}
	if err := f.Apply(ctx, baseSpec()); err != nil {
		t.Fatal(err)
	}
	if cs, _ := f.Counters(ctx); cs[slices.IndexFunc(cs, func(c Counter) bool { return c.Rule == "clauderon:reject-tcp" })].Packets != 0 {
		t.Errorf("re-Apply kept counters; the kernel resets them, so must the fake")
	}
}

func TestFake_FailNextAndCalls(t *testing.T) {
	ctx := context.Background()
	var f Fake
	boom := errors.New("boom")
	f.FailNext("apply", boom)
	if err := f.Apply(ctx, baseSpec()); !errors.Is(err, boom) {
		t.Fatalf("Apply = %v, want injected error", err)
	}
	if err := f.Apply(ctx, baseSpec()); err != nil {
		t.Fatalf("second Apply = %v, want nil (failure is one-shot)", err)
	}
	if got, ok := f.Applied(); !ok || got.Table != DefaultTable {
		t.Errorf("Applied() = %+v, %v", got, ok)
	}
	if want := []string{"apply", "apply"}; !slices.Equal(f.Calls(), want) {
		t.Errorf("Calls() = %v, want %v", f.Calls(), want)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.Apply(cctx, baseSpec()); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply(canceled) = %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestSpec_Validate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Spec)
		wantErr string // substring; "" means valid
	}{
		{"base_is_valid", func(*Spec) {}, ""},
		{"missing_bridge", func(s *Spec) { s.Bridge = "" }, "bridge:"},
		{"bridge_name_too_long", func(s *Spec) { s.Bridge = "abcdefghijklmnop" }, "1 to 15 bytes"},
		{"ipv6_subnet", func(s *Spec) { s.Subnet = netip.MustParsePrefix("fd00::/64") }, "subnet:"},
		{"subnet_host_bits", func(s *Spec) { s.Subnet = netip.MustParsePrefix("10.213.0.1/24") }, "host bits"},
		{"gateway_outside_subnet", func(s *Spec) { s.Gateway = netip.MustParseAddr("10.9.9.9") }, "outside subnet"},
		{"no_tls_port", func(s *Spec) { s.TLSPort = 0 }, "tls port"},
		{"no_dns_port", func(s *Spec) { s.DNSPort = 0 }, "dns port"},
		{"dns_port_equals_tls_port", func(s *Spec) { s.DNSPort = s.TLSPort }, "also the tls port"},
		{"bad_table_name", func(s *Spec) { s.Table = "a b" }, "table:"},
		{"allow_ipv6", func(s *Spec) { s.AllowCIDRs = []AllowCIDR{{Prefix: netip.MustParsePrefix("2001:db8::/32")}} }, "IPv6"},
		{"allow_bad_proto", func(s *Spec) {
			s.AllowCIDRs = []AllowCIDR{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Proto: "icmp"}}
		}, "proto"},
		{"allow_ports_without_proto", func(s *Spec) {
			s.AllowCIDRs = []AllowCIDR{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Ports: []uint16{22}}}
		}, "ports need proto"},
		{"allow_cannot_bypass_tls_redirect", func(s *Spec) {
			s.AllowCIDRs = []AllowCIDR{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Proto: "tcp", Ports: []uint16{443}}}
		}, "always redirected"},
		{"allow_cannot_bypass_dns_redirect", func(s *Spec) {
			s.AllowCIDRs = []AllowCIDR{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Proto: "udp", Ports: []uint16{53}}}
		}, "always redirected"},
		{"port_outside_subnet", func(s *Spec) { s.Ports = []Port{{IfName: "veth0", Addr: netip.MustParseAddr("10.0.0.2")}} }, "not a container address"},
		{"port_is_gateway", func(s *Spec) { s.Ports = []Port{{IfName: "veth0", Addr: netip.MustParseAddr("10.213.0.1")}} }, "not a container address"},
		{"port_bad_name", func(s *Spec) { s.Ports = []Port{{IfName: "", Addr: netip.MustParseAddr("10.213.0.2")}} }, "interface name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec()
			tt.mutate(&s)
			err := s.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
			if _, err := Build(s); err == nil {
				t.Errorf("Build accepted an invalid spec")
			}
		})
	}
}

// TestBuild_Invariants checks properties every state must have, beyond
// the goldens: comments unique and prefixed, a counter on every rule, a
// deny verdict is never weakened by audit mode for metadata, IPv6, host
// and spoofing rules.
func TestBuild_Invariants(t *testing.T) {
	for name, s := range allFlagSpecs() {
		rs := must(Build(s))
		seen := map[string]bool{}
		for _, c := range rs.Comments() {
			if !strings.HasPrefix(c, "clauderon:") || seen[c] {
				t.Errorf("%s: comment %q duplicated or unprefixed", name, c)
			}
			seen[c] = true
		}
		for _, tb := range rs.Tables {
			for _, ch := range tb.Chains {
				for _, r := range ch.Rules {
					if !r.Counter {
						t.Errorf("%s: rule %s has no counter", name, r.Comment)
					}
				}
			}
		}
		for _, must := range []string{"clauderon:drop-metadata", "clauderon:drop-ipv6", "clauderon:reject-host-tcp",
			"clauderon:drop-host", "clauderon:antispoof-ip", "clauderon:drop-foreign-saddr", "clauderon:drop-unknown-saddr", "clauderon:drop-into-bridge",
			"clauderon:redirect-443", "clauderon:redirect-dns-udp", "clauderon:redirect-dns-tcp"} {
			if !seen[must] {
				t.Errorf("%s: rule %s missing", name, must)
			}
		}
		if s.AuditMode == seen["clauderon:reject-tcp"] || s.AuditMode != seen["clauderon:would-deny-tcp"] {
			t.Errorf("%s: audit mode %v but reject-tcp=%v would-deny-tcp=%v", name, s.AuditMode, seen["clauderon:reject-tcp"], seen["clauderon:would-deny-tcp"])
		}
	}
}

func TestBuild_Deterministic(t *testing.T) {
	a, b := baseSpec(), baseSpec()
	a.Ports = testPorts
	b.Ports = []Port{testPorts[1], testPorts[0], testPorts[1]} // other order, duplicate
	if must(Build(a)).String() != must(Build(b)).String() {
		t.Error("port order or duplicates change the ruleset")
	}
}

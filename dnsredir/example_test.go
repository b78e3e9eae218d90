package dnsredir_test

import (
	"context"
	"log"
	"net"
	"net/netip"

	"github.com/clauderon/clauderond/dnsredir"
)

// hostPolicy is the kind of ten-line adapter the appliance writes over its
// injector rules and egress allowlist.
type hostPolicy struct{ intercept, allow map[string]bool }

func (p hostPolicy) Decide(name string) (dnsredir.Decision, string) {
	switch {
	case p.intercept[name]:
		return dnsredir.Intercept, name
	case p.allow[name]:
		return dnsredir.Allow, "egress.allow"
	}
	return dnsredir.Deny, "default"
}

// Example shows the wiring: one UpstreamResolver (also usable for the TLS
// terminator's upstream lookups), a Handler, and a Server on sockets the
// caller binds (the appliance binds the bridge gateway's redirect port).
func Example() {
	resolver, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{}) // host's /etc/resolv.conf
	if err != nil {
		log.Fatal(err)
	}
	defer resolver.Close()
	gateway := netip.MustParseAddr("10.213.0.1")
	h, err := dnsredir.NewHandler(dnsredir.Config{
		Reloadable: dnsredir.Reloadable{ // what a SIGHUP may swap (Handler.Update)
			Policy: hostPolicy{
				intercept: map[string]bool{"api.anthropic.com": true},
				allow:     map[string]bool{"pypi.org": true},
			},
			// Hosts whose upstream is overridden to loopback resolve to the
			// gateway, where the TLS terminator listens.
			InterceptAnswer: func(name string) []netip.Addr {
				if name == "api.anthropic.com" {
					return []netip.Addr{gateway}
				}
				return nil
			},
		},
		Resolver: resolver,
	})
	if err != nil {
		log.Fatal(err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := dnsredir.NewServer(h, dnsredir.ServerConfig{}) // zero: the defaults
	go func() { <-srv.Ready(); cancel() }()               // a real daemon cancels on SIGTERM
	if err := srv.Serve(ctx, pc, ln); err != nil {
		log.Fatal(err)
	}
	// Output:
}

package appliance

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// hostResolvConf is the host resolver configuration Docker's embedded DNS
// forwards to; a variable so tests can point it elsewhere.
var hostResolvConf = "/etc/resolv.conf"

// loopbackResolverProblem reports the one DNS path the ruleset cannot see:
// when every nameserver of the host is a loopback address (systemd-resolved's
// 127.0.0.53, a local dnsmasq), Docker's embedded resolver (127.0.0.11 in a
// container) forwards from the host's network namespace, so queries from
// containers started without --dns never cross the bridge and skip dnsredir.
// HTTPS stays enforced either way. It returns "" when the path is closed.
func loopbackResolverProblem(data []byte, gateway netip.Addr) string {
	var servers []netip.Addr
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil {
			servers = append(servers, a.Unmap())
		}
	}
	if len(servers) == 0 {
		return ""
	}
	for _, a := range servers {
		if !a.IsLoopback() {
			return ""
		}
	}
	return fmt.Sprintf("the host resolver is a loopback address (%s): Docker's embedded DNS forwards from the host namespace, "+
		"so containers started with plain `docker run --network` skip the DNS policy (HTTPS is still enforced); "+
		"`clauderon run` and sessions are not affected. Fix: set \"dns\": [\"%s\"] in /etc/docker/daemon.json and restart dockerd, "+
		"or pass --dns %s", servers[0], gateway, gateway)
}

// hostResolverProblem reads the host's resolv.conf for loopbackResolverProblem.
func hostResolverProblem(gateway netip.Addr) string {
	data, err := os.ReadFile(hostResolvConf)
	if err != nil {
		return ""
	}
	return loopbackResolverProblem(data, gateway)
}

// Command e2etool is the static, multi-call test client baked into the
// clauderon e2e and demo images (FROM scratch, next to busybox). It never
// talks to anything a test did not name on its command line.
//
//	e2etool httpsget [flags] URL        one HTTPS request, prints status and body
//	e2etool bypass   [flags]            tries every escape route, prints one JSON line per attempt
//	e2etool recorder [flags]            listens on TCP/UDP ports (and ICMP), prints one JSON line per hit
//	e2etool dnsq     [flags] NAME       one DNS query over UDP or TCP, prints the rcode and answers
//	e2etool latency  [flags] URL        N sequential requests, prints p50/p90/p99 latency as JSON
//	e2etool dnsserve [flags]            answers A queries for the names it is given (a stand-in cluster DNS)
//
// It imports only the standard library, so it builds with CGO_ENABLED=0 and
// runs in an image that holds nothing else.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmds := map[string]func([]string) int{
		"httpsget": httpsGet,
		"bypass":   bypass,
		"recorder": recorder,
		"dnsq":     dnsQuery,
		"latency":  latency,
		"dnsserve": dnsServe,
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		usage()
	}
	os.Exit(cmd(os.Args[2:]))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: e2etool httpsget|bypass|recorder|dnsq|latency|dnsserve [flags] ...")
	os.Exit(2)
}

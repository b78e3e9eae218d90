package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestBypass_TCPAttemptSeesTheRecorderBanner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p := &hitPrinter{enc: json.NewEncoder(&out)}
	done := make(chan struct{})
	go func() { defer close(done); recordTCP(ln, 1, p) }()
	a := bypassOpts{timeout: 2 * time.Second}.tcp(ln.Addr().String())
	if !a.Connected || !a.Reached {
		t.Errorf("attempt = %+v, want connected and reached", a)
	}
	closed := bypassOpts{timeout: time.Second}.tcp("127.0.0.1:1")
	if closed.Reached {
		t.Errorf("closed port reported as reached: %+v", closed)
	}
	ln.Close()
	<-done
	var h hit
	if err := json.Unmarshal(out.Bytes(), &h); err != nil || h.Proto != "tcp" || h.Data != "PROBE tcp." {
		t.Errorf("hit = %+v (%v) from %q", h, err, out.String())
	}
}

func TestBypass_UDPAttemptSeesTheRecorderBanner(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	done := make(chan struct{})
	go func() { defer close(done); recordUDP(pc, 9, &hitPrinter{enc: json.NewEncoder(&out)}) }()
	a := bypassOpts{timeout: 2 * time.Second}.udp(pc.LocalAddr().String(), 9)
	pc.Close()
	<-done
	if !a.Reached {
		t.Errorf("attempt = %+v, want reached", a)
	}
}

func TestDNS_QueryRoundTrip(t *testing.T) {
	q := buildQuery("exfil.evil.example", 1)
	// Turn the query into an answer: QR + NXDOMAIN, no answers.
	reply := append([]byte(nil), q...)
	reply[2] |= 0x80
	reply[3] = 3
	rcode, answers, err := parseReply(reply)
	if err != nil || rcode != 3 || len(answers) != 0 {
		t.Fatalf("parseReply = %d %v %v", rcode, answers, err)
	}
	// One A answer with a compressed name pointer.
	reply[3] = 0
	reply[7] = 1
	reply = append(reply, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 213, 0, 1)
	rcode, answers, err = parseReply(reply)
	if err != nil || rcode != 0 || len(answers) != 1 || answers[0] != "10.213.0.1" {
		t.Fatalf("parseReply = %d %v %v", rcode, answers, err)
	}
	if _, _, err := parseReply(reply[:5]); err == nil {
		t.Error("short reply parsed")
	}
}

func TestChecksum_ValidatesToZero(t *testing.T) {
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'x'}
	c := checksum(msg)
	msg[2], msg[3] = byte(c>>8), byte(c)
	if got := checksum(msg); got != 0 {
		t.Errorf("checksum over checksummed message = %#x, want 0", got)
	}
}

func TestDNSServe_AnswersItsNamesOnly(t *testing.T) {
	zone := map[string]netip.Addr{"web.team-a.svc.cluster.local": netip.MustParseAddr("10.96.0.7")}
	rcode, answers, err := parseReply(answer(buildQuery("WEB.team-a.svc.cluster.local.", 1), zone))
	if err != nil || rcode != 0 || len(answers) != 1 || answers[0] != "10.96.0.7" {
		t.Errorf("known name: %d %v %v", rcode, answers, err)
	}
	if rcode, answers, err := parseReply(answer(buildQuery("web.team-a.svc.cluster.local", 28), zone)); err != nil || rcode != 0 || len(answers) != 0 {
		t.Errorf("AAAA of a known name: %d %v %v, want NODATA", rcode, answers, err)
	}
	if rcode, _, err := parseReply(answer(buildQuery("other.cluster.local", 1), zone)); err != nil || rcode != 3 {
		t.Errorf("unknown name: rcode %d %v, want NXDOMAIN", rcode, err)
	}
	if answer([]byte{1, 2, 3}, zone) != nil {
		t.Error("a short packet got a reply")
	}
}

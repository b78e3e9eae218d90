package dnstest

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/miekg/dns"
)

// The Recorder's fixed addresses, from TEST-NET-1 (RFC 5737), so they can
// never be confused with a real client or a real server.
var (
	// ClientAddr is the RemoteAddr a Recorder reports by default.
	ClientAddr = netip.MustParseAddrPort("192.0.2.10:53000")
	// ServerAddr is the LocalAddr every Recorder reports.
	ServerAddr = netip.MustParseAddrPort("192.0.2.1:53")
)

// Recorder is a dns.ResponseWriter that records the replies written to it.
// WriteMsg packs each message as a server would and keeps the unpacked
// result, so tests see exactly what a client would receive. It is safe for
// concurrent use.
type Recorder struct {
	tcp    bool
	remote netip.AddrPort

	// WriteErr, when set before use, is returned by WriteMsg and Write
	// (which still count the call).
	WriteErr error

	mu     sync.Mutex
	writes int
	msgs   []*dns.Msg
	raw    [][]byte
	closed bool
}

var _ dns.ResponseWriter = (*Recorder)(nil)

// NewRecorder returns a UDP Recorder whose client is ClientAddr.
func NewRecorder() *Recorder { return NewRecorderFrom(ClientAddr, false) }

// NewTCPRecorder returns a TCP Recorder whose client is ClientAddr.
func NewTCPRecorder() *Recorder { return NewRecorderFrom(ClientAddr, true) }

// NewRecorderFrom returns a Recorder for a client at addr, over TCP when tcp
// is true, else UDP.
func NewRecorderFrom(addr netip.AddrPort, tcp bool) *Recorder {
	return &Recorder{tcp: tcp, remote: addr}
}

func (r *Recorder) addr(ap netip.AddrPort) net.Addr {
	if r.tcp {
		return net.TCPAddrFromAddrPort(ap)
	}
	return net.UDPAddrFromAddrPort(ap)
}

// LocalAddr returns ServerAddr.
func (r *Recorder) LocalAddr() net.Addr { return r.addr(ServerAddr) }

// RemoteAddr returns the client address the Recorder was made with.
func (r *Recorder) RemoteAddr() net.Addr { return r.addr(r.remote) }

// WriteMsg packs m and records it.
func (r *Recorder) WriteMsg(m *dns.Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if r.WriteErr != nil {
		return r.WriteErr
	}
	b, err := m.Pack()
	if err != nil {
		return err
	}
	return r.recordLocked(b)
}

// Write records a raw, packed message.
func (r *Recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if r.WriteErr != nil {
		return 0, r.WriteErr
	}
	if err := r.recordLocked(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (r *Recorder) recordLocked(b []byte) error {
	if len(b) > dns.MaxMsgSize {
		return errors.New("dnstest: message too large")
	}
	got := new(dns.Msg)
	if err := got.Unpack(b); err != nil {
		return err
	}
	r.raw = append(r.raw, append([]byte(nil), b...))
	r.msgs = append(r.msgs, got)
	return nil
}

// Writes returns how many times WriteMsg or Write was called.
func (r *Recorder) Writes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// Msgs returns the messages recorded, as a client would unpack them.
func (r *Recorder) Msgs() []*dns.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*dns.Msg(nil), r.msgs...)
}

// Msg returns the last message recorded, or nil.
func (r *Recorder) Msg() *dns.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) == 0 {
		return nil
	}
	return r.msgs[len(r.msgs)-1]
}

// Packed returns the wire form of the messages recorded.
func (r *Recorder) Packed() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.raw...)
}

// Close marks the Recorder closed.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

// Closed reports whether Close was called.
func (r *Recorder) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// TsigStatus returns nil: the Recorder does no TSIG.
func (r *Recorder) TsigStatus() error { return nil }

// TsigTimersOnly does nothing.
func (r *Recorder) TsigTimersOnly(bool) {}

// Hijack does nothing.
func (r *Recorder) Hijack() {}

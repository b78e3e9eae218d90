package tlsmitm

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"
)

// TestPassthrough_HalfCloseAndExactBytes: the upstream receives exactly the
// client's bytes (hello included), sees EOF when the client half-closes,
// and its reply still reaches the client.
func TestPassthrough_HalfCloseAndExactBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's half-close arrives
		got <- b
		io.WriteString(c, "reply after half-close")
	}()
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.Upstreams = []Upstream{{Host: "pass.test", Address: ln.Addr().String()}}
	}})
	hello := tlstest.MustClientHello(tlstest.HelloOptions{ServerName: "pass.test", MaxRecordPayload: 50})
	sent := append(append([]byte(nil), hello...), []byte("opaque bytes after the hello")...)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(sent)
	c.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "reply after half-close" {
		t.Errorf("client got %q, %v", reply, err)
	}
	if b := <-got; !bytes.Equal(b, sent) {
		t.Errorf("upstream got %d bytes, want the client's %d bytes exactly", len(b), len(sent))
	}
	ev := h.rec.next(t)
	if ev.Decision != Passthrough || ev.BytesIn != int64(len(sent)) || ev.BytesOut != int64(len("reply after half-close")) || ev.Err != "" {
		t.Errorf("audit = %+v", ev)
	}
}

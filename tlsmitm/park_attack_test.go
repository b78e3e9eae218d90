package tlsmitm

import (
	"testing"
	"time"
)

// Attacks on the park (park.go): what a client can do to a connection
// around the moment it parks, and what the server must still hold to.

// TestParkAttack_ParkedH2HoldsNoReadBuffer: an h2 connection waiting for
// its next frame holds no read buffer (h2buffers.go), parked or not, also
// when the last frame it read was read through the buffer (one longer
// than a frame header: here a frame of an unknown type, which is ignored).
func TestParkAttack_ParkedH2HoldsNoReadBuffer(t *testing.T) {
	h := parkingHarness(t, nil)
	r := dialRawH2(t, h)
	if resp := r.read(r.send(reqFields("GET", "/"), true), 3*time.Second); resp.status != "200" {
		t.Fatalf("request: %+v", resp)
	}
	waitParked(t, h, 1)
	r.fr.WriteRawFrame(0xfa, 0, 0, make([]byte, 32))
	time.Sleep(4 * testParkAfter) // it wakes, reads the frame, waits ParkAfter and parks again
	waitParked(t, h, 1)
	if n := h.srv.stats.h2Buffers.Load(); n != 0 {
		t.Fatalf("a parked h2 connection holds %d buffers, want none", n)
	}
}

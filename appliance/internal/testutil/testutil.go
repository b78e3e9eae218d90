// Package testutil holds the waits the appliance's tests share: WaitFor polls
// a condition that real I/O will make true (a watch, a socket, a container
// event), and NoLeaks checks, through go.uber.org/goleak, that a test left
// no goroutine of its own behind. Tests that wait for time alone use
// testing/synctest instead. Test-only: deps_test keeps it out of the daemon.
package testutil

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Poll is how often WaitFor and NoLeaks look again.
const Poll = 10 * time.Millisecond

// Timeout is how long they look, generous for a loaded 2-core CI machine.
var Timeout = 10 * time.Second

// WaitFor polls cond until it holds, and fails t after Timeout naming what
// it waited for.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", Timeout, what)
		}
		time.Sleep(Poll)
	}
}

// NoLeaks fails t if, within Timeout, goroutines other than those opts
// ignore are still running. Pass goleak.IgnoreCurrent() taken before the
// test started anything: goleak's own retries last well under a second,
// too short on a loaded machine for connections to wind down.
func NoLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for goleak.Find(opts...) != nil && time.Now().Before(deadline) {
		time.Sleep(Poll)
	}
	goleak.VerifyNone(t, opts...)
}

package testutil

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// recorder is a testing.TB that keeps its failures instead of failing.
type recorder struct {
	testing.TB
	failed []string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Error(args ...any)         { r.failed = append(r.failed, fmt.Sprint(args...)) }
func (r *recorder) Errorf(f string, a ...any) { r.failed = append(r.failed, fmt.Sprintf(f, a...)) }
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...); runtime.Goexit() }

func parked(stop <-chan struct{}) { <-stop }

func TestNoLeaks_WaitsForGoroutinesWindingDown(t *testing.T) {
	before := goleak.IgnoreCurrent()
	stop := make(chan struct{})
	go parked(stop)
	time.AfterFunc(300*time.Millisecond, func() { close(stop) }) // longer than goleak's own retries
	rec := &recorder{TB: t}
	NoLeaks(rec, before)
	if len(rec.failed) > 0 {
		t.Errorf("NoLeaks failed on a goroutine that ended within the timeout: %v", rec.failed)
	}
}

func TestNoLeaks_NamesTheGoroutineLeftBehind(t *testing.T) {
	defer func(d time.Duration) { Timeout = d }(Timeout)
	Timeout = 200 * time.Millisecond
	before := goleak.IgnoreCurrent()
	stop := make(chan struct{})
	defer close(stop)
	go parked(stop)
	rec := &recorder{TB: t}
	NoLeaks(rec, before)
	if len(rec.failed) == 0 || !strings.Contains(strings.Join(rec.failed, "\n"), "testutil.parked") {
		t.Errorf("NoLeaks = %v, want a failure naming the parked goroutine", rec.failed)
	}
}

func TestWaitFor_FailsNamingWhatItWaitedFor(t *testing.T) {
	defer func(d time.Duration) { Timeout = d }(Timeout)
	Timeout = 50 * time.Millisecond
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine it runs on, as testing's does
		defer close(done)
		WaitFor(rec, "the moon", func() bool { return false })
	}()
	<-done
	if len(rec.failed) != 1 || !strings.Contains(rec.failed[0], "the moon") {
		t.Errorf("WaitFor = %v, want one failure naming what it waited for", rec.failed)
	}
	n := 0
	WaitFor(t, "the third look", func() bool { n++; return n == 3 })
}

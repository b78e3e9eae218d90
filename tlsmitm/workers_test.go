package tlsmitm

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWorkerPool_ReusesIdleWorkersAndEndsThem(t *testing.T) {
	p := newWorkerPool()
	done := make(chan int, 10)
	for i := range 5 {
		p.run(func() { done <- i })
		if got := <-done; got != i {
			t.Fatalf("ran %d, want %d", got, i)
		}
		waitWorkerIdle(t) // the worker is back waiting
	}
	if n := p.started.Load(); n != 1 {
		t.Errorf("%d workers started for 5 requests one after another; want 1 (reused)", n)
	}

	// Work that overlaps gets workers of its own: run never waits.
	release := make(chan struct{})
	var running atomic.Int32
	for range 3 {
		p.run(func() { running.Add(1); <-release })
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if running.Load() != 3 {
		t.Fatalf("%d of 3 overlapping functions running", running.Load())
	}
	close(release)

	// Idle workers end after workerIdle.
	ended := make(chan struct{})
	go func() { p.wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(workerIdle + 5*time.Second):
		t.Fatal("idle workers did not end")
	}
}

func TestWorkerPool_StopEndsIdleWorkersAndStillRuns(t *testing.T) {
	p := newWorkerPool()
	ran := make(chan struct{})
	p.run(func() { close(ran) })
	<-ran
	start := time.Now()
	p.stop(true)
	if d := time.Since(start); d >= workerIdle {
		t.Errorf("stop(true) took %v: idle workers must end at once, not after workerIdle", d)
	}
	again := make(chan struct{})
	p.run(func() { close(again) }) // after stop: runs, and its goroutine ends
	select {
	case <-again:
	case <-time.After(5 * time.Second):
		t.Fatal("run after stop did not run")
	}
	p.stop(true) // idempotent, and waits for that one
}

// waitWorkerIdle waits until a worker is back waiting for its next
// function (a fixed sleep is not enough on a loaded machine: the worker's
// thread may not run within it, and run then starts a second worker).
func waitWorkerIdle(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "(*workerPool).worker(") && strings.Contains(strings.SplitN(g, "\n", 2)[0], "[select") {
				return
			}
		}
	}
	t.Fatal("no worker back waiting within 5s")
}

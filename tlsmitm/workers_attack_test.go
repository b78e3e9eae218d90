package tlsmitm

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Attack review of the worker pool (workers.go): what a reused goroutine
// may carry from one request (one tenant) to the next, Serve's "every
// goroutine it started has exited", and run never waiting.

// workerGoroutines counts the goroutines in the pool's worker loop.
func workerGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "tlsmitm.(*workerPool).worker(")
}

// finalized waits, collecting, for done to be closed (a finalizer), for
// at most d.
func finalized(done <-chan struct{}, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		runtime.GC()
		select {
		case <-done:
			return true
		case <-time.After(5 * time.Millisecond):
		}
	}
	return false
}

// TestWorkersAttack_IdleWorkerHoldsNoClosure: what a function captured
// (a request, its headers with the real credential) is not reachable from
// a worker waiting for its next function.
func TestWorkersAttack_IdleWorkerHoldsNoClosure(t *testing.T) {
	p := newWorkerPool()
	defer p.stop(true)
	type secret struct{ token [64]byte }
	gone := make(chan struct{})
	ran := make(chan struct{})
	func() {
		s := &secret{}
		copy(s.token[:], realToken)
		runtime.SetFinalizer(s, func(*secret) { close(gone) })
		p.run(func() {
			if s.token[0] == 0 {
				panic("unreachable")
			}
			close(ran)
		})
	}()
	<-ran
	start := time.Now()
	if !finalized(gone, workerIdle/2) {
		t.Fatalf("what the last function captured is still reachable %v after it returned, with its worker idle", time.Since(start))
	}
	if workerGoroutines() == 0 || p.started.Load() != 1 {
		t.Fatalf("the check ran without an idle worker (%d workers, %d started)", workerGoroutines(), p.started.Load())
	}
}

// finalizingInjector is fakeInjector that reports when a request it
// injected into is no longer reachable.
type finalizingInjector struct {
	fakeInjector
	gone chan<- struct{}
}

func (f finalizingInjector) Apply(req *http.Request, host string, c Client) (string, bool, error) {
	if req.Header.Get("X-Mark") == "finalize" {
		runtime.SetFinalizer(req, func(*http.Request) { f.gone <- struct{}{} })
	}
	return f.fakeInjector.Apply(req, host, c)
}

// TestWorkersAttack_IdleWorkerHoldsNoRequest: once a request is answered,
// neither it nor its injected headers stay reachable while the worker that
// served it (an h2 stream) or sent its body (HTTP/1.1 and h2) waits for
// the next one: the next function may be another tenant's.
func TestWorkersAttack_IdleWorkerHoldsNoRequest(t *testing.T) {
	gone := make(chan struct{}, 16)
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.Injector = finalizingInjector{gone: gone} }})
	for _, tc := range []struct {
		name string
		h2   bool
		body bool
	}{{"h2 GET", true, false}, {"h2 POST", true, true}, {"http1.1 POST", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			cl := h.client(tc.h2)
			var body io.Reader
			method := "GET"
			if tc.body {
				method, body = "POST", bytes.NewReader(bytes.Repeat([]byte("x"), 100<<10))
			}
			req, _ := http.NewRequest(method, "https://"+apiHost+"/", body)
			req.Header.Set("X-Mark", "finalize")
			req.Header.Set("x-api-key", placeholder)
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Auth-Is-Real") != "true" {
				t.Fatalf("%d %q", resp.StatusCode, b)
			}
			// The exchange may still be winding down for a moment.
			waitFor(t, 2*time.Second, "the request to end", func() bool { return h.srv.Stats().ActiveRequests == 0 })
			start := time.Now()
			done := make(chan struct{})
			go func() { <-gone; close(done) }()
			if !finalized(done, workerIdle/2) {
				t.Fatalf("the injected request is still reachable %v after its exchange ended (%d workers)", time.Since(start), workerGoroutines())
			}
		})
	}
}

// TestWorkersAttack_GoexitAndRecoveredPanicsEndCleanly: a function that
// ends its goroutine (runtime.Goexit, as t.FailNow does) or recovers its
// own panic leaves the pool working and stop(true) returning.
func TestWorkersAttack_GoexitAndRecoveredPanicsEndCleanly(t *testing.T) {
	p := newWorkerPool()
	ran := make(chan string, 4)
	p.run(func() { ran <- "first" })
	<-ran
	time.Sleep(5 * time.Millisecond)
	p.run(func() { defer func() { ran <- "goexit" }(); runtime.Goexit() })
	<-ran
	p.run(func() {
		defer func() { recover(); ran <- "recovered" }()
		panic("boom")
	})
	<-ran
	p.run(func() { ran <- "after" })
	if got := <-ran; got != "after" {
		t.Fatal(got)
	}
	stopped := make(chan struct{})
	go func() { p.stop(true); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop(true) did not return after a Goexit")
	}
}

// TestWorkersAttack_RunNeverWaitsBehindLongFunctions: functions that never
// return (one tenant's endless event streams) do not hold up another's.
func TestWorkersAttack_RunNeverWaitsBehindLongFunctions(t *testing.T) {
	p := newWorkerPool()
	release := make(chan struct{})
	var running sync.WaitGroup
	for range 64 {
		running.Add(1)
		p.run(func() { running.Done(); <-release })
	}
	running.Wait()
	start := time.Now()
	ran := make(chan struct{})
	p.run(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(2 * time.Second):
		t.Fatal("run waited behind functions that do not return")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("run took %v", d)
	}
	close(release)
	p.stop(true)
}

// TestWorkersAttack_StopWaitsForChainedRuns: functions that hand more work
// to the pool (a stream starting its body sender) while stop(true) waits
// are waited for too, without a WaitGroup misuse (run under -race).
func TestWorkersAttack_StopWaitsForChainedRuns(t *testing.T) {
	for range 50 {
		p := newWorkerPool()
		var ended atomic.Int32
		var chain func(n int)
		chain = func(n int) {
			if n == 0 {
				time.Sleep(time.Millisecond)
				ended.Add(1)
				return
			}
			p.run(func() { chain(n - 1) })
		}
		for range 8 {
			p.run(func() { chain(5) })
		}
		p.stop(true)
		if n := ended.Load(); n != 8 {
			t.Fatalf("stop(true) returned with %d of 8 chains ended", n)
		}
	}
}

// TestWorkersAttack_DrainWithUploadsInFlight: Serve stops while h2 streams
// and HTTP/1.1 and h2 request bodies are being sent (bodies that stall:
// the drain deadline cuts them), and returns within a bound with no
// goroutine of its own left, workers included.
func TestWorkersAttack_DrainWithUploadsInFlight(t *testing.T) {
	base := goleak.IgnoreCurrent()
	func() {
		started := make(chan struct{}, 64)
		h := newHarness(t, harnessOpts{noCleanup: true,
			mutate: func(c *Config) { c.DrainTimeout = 300 * time.Millisecond },
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				io.Copy(io.Discard, r.Body)
				fmt.Fprint(w, "ok")
			})})
		var wg sync.WaitGroup
		var writers []*io.PipeWriter
		for i := range 8 {
			cl := h.client(i%2 == 0)
			pr, pw := io.Pipe()
			writers = append(writers, pw)
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("POST", "https://"+apiHost+"/upload", pr)
				req.ContentLength = -1
				if resp, err := cl.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
			go pw.Write([]byte("first part")) // then the body stalls
		}
		for range 8 {
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("uploads did not reach the upstream")
			}
		}
		start := time.Now()
		h.stop(t)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Serve took %v with a 300ms drain deadline", d)
		}
		for _, pw := range writers {
			pw.CloseWithError(io.ErrUnexpectedEOF)
		}
		wg.Wait()
		if st := h.srv.Stats(); st.ActiveRequests != 0 || st.ActiveHTTPConns != 0 {
			t.Errorf("after Serve returned: %+v", st)
		}
		if n := workerGoroutines(); n != 0 {
			t.Errorf("%d workers running after Serve returned", n)
		}
		h.up.Close()
	}()
	checkGoroutines(t, base)
}

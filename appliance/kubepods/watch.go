package kubepods

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// Run follows the node's pods until ctx is done and returns nil then. It
// watches from the resource version of the last Sync (listing first when
// there is none), watches again from the last version seen when a watch
// ends cleanly, and on any failure marks the stream down (Lookup refuses
// everyone), backs off and relists. Meanwhile it retries the host veths it
// could not find, at most once a second. It returns an error only for
// unusable Options.
func (t *Table) Run(ctx context.Context) error {
	if err := t.check(); err != nil {
		return err
	}
	if t.running.Swap(true) {
		return errors.New("kubepods: Run is already running")
	}
	defer t.running.Store(false)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { t.retryUnresolvedVeths(ctx) })
	t.watchPods(ctx)
	return nil
}

// watchPods is the named watch loop (readable in a goroutine dump).
func (t *Table) watchPods(ctx context.Context) {
	t.syncMu.Lock()
	rv := t.rv
	t.syncMu.Unlock()
	if t.streamDown.Load() {
		rv = "" // Sync never completed: list first
	}
	backoff := t.backoffMin
	for ctx.Err() == nil {
		var err error
		fresh := rv == "" // this watch starts from a list just made
		if fresh {
			rv, err = t.relist(ctx, true)
		}
		start := t.opts.Now()
		if err == nil {
			rv, err = t.watchOnce(ctx, rv)
		}
		if ctx.Err() != nil {
			return
		}
		quick := t.opts.Now().Sub(start) < time.Second
		switch {
		case err == nil && !quick:
			backoff = t.backoffMin
			continue // a clean end (timeoutSeconds): watch on from rv
		case err == nil:
			// A watch that ends at once, cleanly, again and again must not
			// spin: back off, but keep the table (nothing was missed).
		case isGone(err) && !fresh:
			t.markDown(err)
			rv = ""
			continue // too old: relist at once (backing off if a fresh list is too old too)
		default:
			t.markDown(err)
			rv = ""
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(backoff*2, t.backoffMax)
	}
}

func (t *Table) markDown(err error) {
	if !t.streamDown.Swap(true) {
		t.log.Warn("pod watch broke; refusing credentials to every pod until the pods are listed again", "err", err)
	} else {
		t.log.Debug("pod watch still down", "err", err)
	}
}

// watchOnce watches from rv until the server ends the watch (nil error) or
// something fails, applying events as they come. It returns the last
// resource version seen.
func (t *Table) watchOnce(ctx context.Context, rv string) (string, error) {
	timeout := t.watchTimeout()
	q := t.query()
	q.Set("watch", "1")
	q.Set("allowWatchBookmarks", "true")
	q.Set("resourceVersion", rv)
	q.Set("timeoutSeconds", strconv.Itoa(int(timeout/time.Second)))
	// The server ends the watch after timeoutSeconds; a connection that
	// outlives that by half a minute is stuck, not idle.
	wctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	resp, err := t.opts.Client.get(wctx, "/api/v1/pods", q)
	if err != nil {
		return rv, fmt.Errorf("watching the pods of node %s: %w", t.opts.Node, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	// The Scanner allows the larger of the buffer's capacity and max.
	sc.Buffer(make([]byte, 0, min(64<<10, t.maxEvent)), int(t.maxEvent))
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		ev, err := decodeEvent(line)
		if err != nil {
			return rv, err
		}
		if ev.Pod != nil {
			t.syncMu.Lock()
			t.apply(ctx, ev)
			t.syncMu.Unlock()
		}
		if ev.RV != "" {
			rv = ev.RV
			t.syncMu.Lock()
			t.rv = rv
			t.syncMu.Unlock()
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a watch event exceeds %d bytes", t.maxEvent)
		}
		return rv, fmt.Errorf("reading the pod watch: %w", err)
	}
	return rv, nil
}

// retryUnresolvedVeths is the named veth retry loop.
func (t *Table) retryUnresolvedVeths(ctx context.Context) {
	tick := time.NewTicker(t.vethEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.resolveVeths(ctx)
		}
	}
}

// jitteredWatchTimeout spreads the watches of many nodes: 5 to 6 minutes.
func jitteredWatchTimeout() time.Duration {
	return 300*time.Second + rand.N(60*time.Second)
}

// jitter returns d ± 20 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/5 + rand.N(2*d/5+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

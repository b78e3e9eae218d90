package dockertest

import (
	"context"
	"slices"

	"github.com/docker/docker/api/types/events"
)

// Subscriber is one Events call. The fake queues every event for it
// (without bound, so a slow reader never blocks the daemon) and delivers
// them in order from its own goroutine until its context ends or the
// stream fails.
type Subscriber struct {
	d      *Docker
	ctx    context.Context
	opts   events.ListOptions
	msgs   chan events.Message
	errs   chan error
	queue  []events.Message // guarded by d.mu
	failed error            // guarded by d.mu
	wake   chan struct{}
	done   chan struct{}
}

// OnSubscribe makes every later Events call hand its Subscriber to fn
// (synchronously, before Events returns) with the call's context.
func (d *Docker) OnSubscribe(fn func(ctx context.Context, s *Subscriber)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onSubscribe = fn
}

// Subscribers is how many Events streams are live.
func (d *Docker) Subscribers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.subs)
}

// Events streams every later event matching the "type" and "event"
// filters (other filters are ignored). As with the client, the message
// channel is never closed; the error channel gets ctx.Err() or the
// stream's failure once, then is closed.
func (d *Docker) Events(ctx context.Context, o events.ListOptions) (<-chan events.Message, <-chan error) {
	s := &Subscriber{d: d, ctx: ctx, opts: o, msgs: make(chan events.Message), errs: make(chan error, 1),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if err := d.begin(ctx, "Events", ""); err != nil {
		s.errs <- err
		close(s.errs)
		close(s.done)
		return s.msgs, s.errs
	}
	d.mu.Lock()
	d.subs[s] = struct{}{}
	fn := d.onSubscribe
	d.mu.Unlock()
	go s.deliverEvents()
	if fn != nil {
		fn(ctx, s)
	}
	return s.msgs, s.errs
}

// BreakEvents fails every live stream with err, as when dockerd restarts.
func (d *Docker) BreakEvents(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for s := range d.subs {
		s.failLocked(err)
	}
}

// Send queues m for this subscriber only, after what is already queued:
// for events the fake's state does not produce (the tests' own scripts).
func (s *Subscriber) Send(m events.Message) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.queueLocked(m)
}

// Fail ends the stream with err once what is queued has been delivered.
func (s *Subscriber) Fail(err error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.failLocked(err)
}

// Done is closed when the stream has ended and its goroutine exited.
func (s *Subscriber) Done() <-chan struct{} { return s.done }

func (s *Subscriber) failLocked(err error) {
	if s.failed == nil {
		s.failed = err
	}
	s.poke()
}

func (s *Subscriber) queueLocked(m events.Message) {
	s.queue = append(s.queue, m)
	s.poke()
}

func (s *Subscriber) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wants applies the "type" and "event" filters.
func (s *Subscriber) wants(m events.Message) bool {
	f := s.opts.Filters
	if types := f.Get("type"); len(types) > 0 && !slices.Contains(types, string(m.Type)) {
		return false
	}
	if acts := f.Get("event"); len(acts) > 0 && !slices.Contains(acts, string(m.Action)) {
		return false
	}
	return true
}

// next pops the next message, or reports the failure once the queue is
// empty.
func (s *Subscriber) next() (m events.Message, ok bool, failed error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if len(s.queue) > 0 {
		m, s.queue = s.queue[0], s.queue[1:]
		return m, true, nil
	}
	return events.Message{}, false, s.failed
}

// deliverEvents is the subscriber's goroutine: it feeds msgs until the
// context ends or the stream fails, then reports why on errs.
func (s *Subscriber) deliverEvents() {
	defer close(s.done)
	end := func(err error) {
		s.d.mu.Lock()
		delete(s.d.subs, s)
		s.queue = nil
		s.d.mu.Unlock()
		s.errs <- err
		close(s.errs)
	}
	for {
		m, ok, failed := s.next()
		switch {
		case ok:
			select {
			case s.msgs <- m:
			case <-s.ctx.Done():
				end(s.ctx.Err())
				return
			}
		case failed != nil:
			end(failed)
			return
		default:
			select {
			case <-s.wake:
			case <-s.ctx.Done():
				end(s.ctx.Err())
				return
			}
		}
	}
}

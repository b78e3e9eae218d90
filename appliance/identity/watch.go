package identity

import (
	"context"
	"errors"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// Run syncs the table, then follows the Docker events stream until ctx is
// done, reconnecting with backoff (and resyncing, since events may have been
// missed) whenever the stream breaks. From the break until that resync
// succeeds Lookup refuses every address: Docker may have given a stale
// entry's address to a new container meanwhile. It returns nil on
// cancellation.
func (t *Table) Run(ctx context.Context) error {
	return t.watchDockerEvents(ctx)
}

// watchDockerEvents is the named event loop (readable in a goroutine dump).
func (t *Table) watchDockerEvents(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := t.followEvents(ctx)
		if ctx.Err() != nil {
			return nil
		}
		t.streamDown.Store(true)
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		t.log.Warn("docker events stream broke; refusing credentials to every container until it is back and resynced",
			"err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return nil
}

// followEvents subscribes, resyncs, then applies events until the stream ends.
func (t *Table) followEvents(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := t.opts.Docker.Events(sctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("type", string(events.NetworkEventType)),
	)})
	// Subscribe first, then list: nothing that happens in between is lost.
	// The stream counts as back once the resync is in the table, before
	// anyone is told about it: Lookup must not fail closed after that.
	if err := t.syncThen(ctx, t.streamBack); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if err == nil {
				err = errors.New("stream closed")
			}
			return err
		case m, ok := <-msgs:
			if !ok {
				return errors.New("stream closed")
			}
			t.handle(ctx, m)
		}
	}
}

// handle applies one Docker event. An exit or a disconnect from our network
// removes the entry at once, without asking Docker (whose answer could come
// after the address is reused). Connects and disconnects on other networks
// re-read the containers we hold: a second network is a way out that
// disqualifies them (Container.OtherNetworks).
func (t *Table) handle(ctx context.Context, m events.Message) {
	id := ""
	switch m.Type {
	case events.ContainerEventType:
		switch m.Action {
		case events.ActionDie, events.ActionDestroy:
			if t.sharedBy(m.Actor.ID, m.Actor.Attributes["name"]) {
				if err := t.Sync(ctx); err != nil {
					t.log.Warn("resync after a namespace sharer left", "container", shortID(m.Actor.ID), "err", err)
				}
				return
			}
			t.remove(ctx, m.Actor.ID)
			return
		case events.ActionStart, events.ActionRename,
			events.ActionPause, events.ActionUnPause, events.ActionRestart:
			id = m.Actor.ID
		}
	case events.NetworkEventType:
		id = m.Actor.Attributes["container"]
		if m.Actor.Attributes["name"] != t.opts.Network {
			if id == "" || !t.known(id) || (m.Action != events.ActionConnect && m.Action != events.ActionDisconnect) {
				return
			}
			break
		}
		if t.opts.OnNetwork != nil {
			t.opts.OnNetwork(string(m.Action))
		}
		switch m.Action {
		case events.ActionDestroy:
			t.clear(ctx)
			return
		case events.ActionDisconnect:
			t.remove(ctx, id)
			return
		}
	}
	if id == "" {
		return
	}
	if err := t.refresh(ctx, id); err != nil {
		t.log.Warn("updating container after docker event", "action", m.Action, "container", shortID(id), "err", err)
	}
}

func (t *Table) clear(ctx context.Context) {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	t.replace(nil)
	t.notify(ctx)
}

// streamBack clears the fail-closed state after a successful resync.
func (t *Table) streamBack() {
	if t.streamDown.Swap(false) {
		t.log.Info("docker events stream back; table resynced")
	}
}

package kubepods

import (
	"context"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/appliance/internal/testutil"
)

func TestWatch_GoneRelists(t *testing.T) {
	for _, tc := range []struct {
		name string
		gone func(f *fakeAPI)
	}{
		{"error_event_410", func(f *fakeAPI) {
			f.send(watchCmd{line: `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 101 (250)","reason":"Expired","code":410}}`})
		}},
		{"http_410", func(f *fakeAPI) {
			f.setStatus(0, 410)
			f.send(watchCmd{end: true})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.set(mkPod("api", "10.215.0.5"))
			tab := newTestTable(t, f, nil)
			if err := tab.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			startRun(t, tab)
			f.waitWatches(t, 1)
			f.set(mkPod("web", "10.215.0.7")) // missed by the watch
			tc.gone(f)
			testutil.WaitFor(t, "relist", func() bool { l, _ := f.counts(); return l >= 2 })
			f.setStatus(0, 0)
			testutil.WaitFor(t, "web known", func() bool { return lookupName(tab, "10.215.0.7") == "team/web" })
			testutil.WaitFor(t, "a watch from the relist's resource version", func() bool {
				return f.watchQuery().Get("resourceVersion") == "102"
			})
		})
	}
}

// TestWatch_BadEventRelists: an event the table cannot vouch for ends the
// watch; the table fails closed and relists, and never panics.
func TestWatch_BadEventRelists(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
	}{
		{"not_json", `{"type":"ADDED","object":{`},
		{"unknown_type", `{"type":"SURPRISE","object":{}}`},
		{"pod_without_uid", `{"type":"ADDED","object":{"metadata":{"name":"x","namespace":"team"}}}`},
		{"object_not_a_pod", `{"type":"MODIFIED","object":["a"]}`},
		{"bookmark_without_rv", `{"type":"BOOKMARK","object":{"metadata":{}}}`},
		{"error_not_status", `{"type":"ERROR","object":"boom"}`},
		{"oversized", `{"type":"ADDED","object":{"metadata":{"uid":"u","name":"` + strings.Repeat("x", 4096) + `"}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.set(mkPod("api", "10.215.0.5"))
			tab := newTestTable(t, f, nil)
			tab.maxEvent = 1024
			if err := tab.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			startRun(t, tab)
			f.waitWatches(t, 1)
			f.setStatus(500, 0) // hold the relist to see the table fail closed
			f.send(watchCmd{line: tc.line})
			testutil.WaitFor(t, "stream down", tab.StreamDown)
			if lookupName(tab, "10.215.0.5") != "" {
				t.Error("Lookup succeeded after a bad event")
			}
			f.setStatus(0, 0)
			testutil.WaitFor(t, "relisted", func() bool { return !tab.StreamDown() })
			f.waitWatches(t, 2)
			if lookupName(tab, "10.215.0.5") != "team/api" {
				t.Error("pod unknown after the relist")
			}
		})
	}
}

func TestWatch_ErrorEventOtherThanGoneBacksOffAndRelists(t *testing.T) {
	f := newFakeAPI(t)
	tab := newTestTable(t, f, nil)
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	startRun(t, tab)
	f.waitWatches(t, 1)
	f.send(watchCmd{line: `{"type":"ERROR","object":{"kind":"Status","message":"etcd is sad","code":500}}`})
	testutil.WaitFor(t, "relist", func() bool { l, _ := f.counts(); return l >= 2 })
	f.waitWatches(t, 2)
}

func TestWatch_ForbiddenWatchKeepsFailingClosed(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("api", "10.215.0.5"))
	tab := newTestTable(t, f, nil)
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.setStatus(0, 403) // list allowed, watch not: RBAC without "watch"
	startRun(t, tab)
	testutil.WaitFor(t, "stream down", tab.StreamDown)
	testutil.WaitFor(t, "retries", func() bool { _, w := f.counts(); return w >= 3 })
	// Each relist succeeds and the watch after it fails at once, again and
	// again, with backoff; once the watch is allowed the table recovers.
	f.setStatus(0, 0)
	testutil.WaitFor(t, "stream back", func() bool { return !tab.StreamDown() })
}

package kubepods

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/internal/testutil"
)

const (
	testNode   = "node-a"
	testSubnet = "10.215.0.0/24"
)

// fakeAPI is a Kubernetes API server serving one node's pods: lists from
// its map, watches streamed from commands the test sends (one watch at a
// time, as Run makes them).
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	pods        map[string]pod // by uid
	rv          int
	lists       int
	watches     int
	listStatus  int // non-zero: lists answer this status
	watchStatus int // non-zero: watches answer this status
	lastWatch   url.Values
	listQuery   url.Values

	cmds chan watchCmd
}

type watchCmd struct {
	line string
	end  bool // end the watch cleanly (the server's timeout)
	cut  bool // drop the connection mid-stream
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, pods: map[string]pod{}, rv: 100, cmds: make(chan watchCmd)}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.URL.Path != "/api/v1/pods" || q.Get("fieldSelector") != "spec.nodeName="+testNode {
		http.Error(w, "unexpected request "+r.URL.String(), http.StatusBadRequest)
		return
	}
	if q.Get("watch") == "1" {
		f.serveWatch(w, r)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	f.listQuery = q
	if f.listStatus != 0 {
		writeStatus(w, f.listStatus)
		return
	}
	var l podList
	l.Metadata.ResourceVersion = strconv.Itoa(f.rv)
	for _, p := range f.pods {
		l.Items = append(l.Items, p)
	}
	json.NewEncoder(w).Encode(l)
}

func writeStatus(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"fake says %d","reason":"Fake","code":%d}`, code, code)
}

func (f *fakeAPI) serveWatch(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.watches++
	f.lastWatch = r.URL.Query()
	st := f.watchStatus
	f.mu.Unlock()
	if st != 0 {
		writeStatus(w, st)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case c := <-f.cmds:
			switch {
			case c.cut:
				panic(http.ErrAbortHandler) // the connection drops mid-stream
			case c.end:
				return
			}
			io.WriteString(w, c.line+"\n")
			w.(http.Flusher).Flush()
		}
	}
}

// set stores p (as the API server would), bumping the resource version.
func (f *fakeAPI) set(p pod) pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	p.Metadata.ResourceVersion = strconv.Itoa(f.rv)
	f.pods[p.Metadata.UID] = p
	return p
}

func (f *fakeAPI) del(p pod) pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	p.Metadata.ResourceVersion = strconv.Itoa(f.rv)
	delete(f.pods, p.Metadata.UID)
	return p
}

// event updates the fake's state and streams the event to the watch.
func (f *fakeAPI) event(typ string, p pod) {
	f.t.Helper()
	if typ == eventDeleted {
		p = f.del(p)
	} else {
		p = f.set(p)
	}
	b, err := json.Marshal(map[string]any{"type": typ, "object": p})
	if err != nil {
		f.t.Fatal(err)
	}
	f.send(watchCmd{line: string(b)})
}

// send hands c to the running watch, waiting at most 10 s for one.
func (f *fakeAPI) send(c watchCmd) {
	f.t.Helper()
	select {
	case f.cmds <- c:
	case <-time.After(10 * time.Second):
		f.t.Fatalf("no watch took %+v within 10s", c)
	}
}

func (f *fakeAPI) counts() (lists, watches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists, f.watches
}

func (f *fakeAPI) setStatus(list, watch int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listStatus, f.watchStatus = list, watch
}

func (f *fakeAPI) watchQuery() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastWatch
}

func (f *fakeAPI) waitWatches(t *testing.T, n int) {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("watch #%d", n), func() bool { _, w := f.counts(); return w >= n })
}

// mkPod returns a running pod of namespace "team" on testNode.
func mkPod(name, ip string, mods ...func(*pod)) pod {
	var p pod
	p.Metadata.Name, p.Metadata.Namespace, p.Metadata.UID = name, "team", "uid-"+name
	p.Metadata.Labels = map[string]string{"app": name}
	p.Spec.NodeName, p.Spec.ServiceAccountName = testNode, "agent"
	p.Status.Phase, p.Status.PodIP = "Running", ip
	if ip != "" {
		p.Status.PodIPs = []struct {
			IP string `json:"ip"`
		}{{IP: ip}}
	}
	for _, m := range mods {
		m(&p)
	}
	return p
}

func terminating(p *pod) { ts := "2026-01-01T00:00:00Z"; p.Metadata.DeletionTimestamp = &ts }

// fakeVeth names 10.215.0.N's veth "vethN".
func fakeVeth(ip netip.Addr, _ string) (string, error) {
	return fmt.Sprintf("veth%d", ip.As4()[3]), nil
}

// newTestTable returns a Table on f with fast backoff and veth retries.
func newTestTable(t *testing.T, f *fakeAPI, mod func(*Config)) *Table {
	t.Helper()
	o := Config{Client: NewClientForTest(f.srv.URL, f.srv.Client()), Node: testNode,
		Subnet: netip.MustParsePrefix(testSubnet), Veth: fakeVeth,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&o)
	}
	tab := New(o)
	tab.backoffMin, tab.backoffMax, tab.vethEvery = 5*time.Millisecond, 50*time.Millisecond, 20*time.Millisecond
	tab.watchTimeout = func() time.Duration { return 300 * time.Second }
	return tab
}

// startRun runs tab.Run until the test ends (or stop is called), then
// checks it returned nil, and quickly.
func startRun(t *testing.T, tab *Table) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tab.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil on cancel", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func listNames(tab *Table) []string {
	var out []string
	for _, c := range tab.List() {
		out = append(out, c.Name)
	}
	return out
}

func lookupName(tab *Table, ip string) string {
	c, ok := tab.Lookup(netip.MustParseAddr(ip))
	if !ok {
		return ""
	}
	return c.Name
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(slices.Clone(p)))
	return len(p), nil
}

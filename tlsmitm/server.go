package tlsmitm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/localca"
)

// Server is the terminator. Create it with New, run it with Serve, swap its
// routing and injection with Update, and release it with Close (Serve calls
// Close when it returns).
type Server struct {
	cfg    Config // fixed settings (timeouts, StateDir, Logger); see Update
	log    *slog.Logger
	events *slog.Logger // lines a client causes (Config.EventLogger)
	state  atomic.Pointer[state]
	certs  *certManager
	own    *ownAddrs
	proxy  *httputil.ReverseProxy
	tlsCfg *tls.Config
	stats  counters
	// limits applies the fair shares of connections and requests
	// (persource.go).
	limits *sourceLimiter
	// workers run h2 streams and request bodies (workers.go).
	workers *workerPool
	served  atomic.Bool
	// draining is set when Serve starts draining; handleConn checks it
	// after its peek so a hello that raced the drain is not routed.
	draining atomic.Bool

	conns sync.WaitGroup // every goroutine Serve must outlive
	mu    sync.Mutex
	raw   map[net.Conn]bool    // accepted connections → still peeking the hello
	h1    map[*h1Conn]struct{} // HTTP/1.x connections served by the relay
	h2    map[*h2Conn]struct{} // h2 connections (h2serve.go)
	// baseCtx is the parent of every request; cancelled at the drain deadline.
	baseCtx    context.Context
	baseCancel context.CancelFunc
	closeOnce  sync.Once
}

// state is what Update swaps atomically.
type state struct {
	router   Router
	injector Injector
	identity Identity
	auditor  Auditor

	overrides map[string]Upstream
	policy    addrPolicy
	resolver  Resolver
	rootCAs   *x509.CertPool
	sessions  tls.ClientSessionCache

	h2     *http.Transport // for h2 clients: h2 (or HTTP/1.1) upstream, pooled
	h1pool *h1Pool         // for HTTP/1.x clients (the relay): HTTP/1.1 upstream
}

// New loads or creates the CA under cfg.StateDir, issues leaves for the
// router's exact intercept names, and returns a server ready to Serve.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "tlsmitm"),
		events:  cfg.EventLogger.With("component", "tlsmitm"),
		own:     &ownAddrs{list: cfg.InterfaceAddrs},
		raw:     make(map[net.Conn]bool),
		h1:      make(map[*h1Conn]struct{}),
		h2:      make(map[*h2Conn]struct{}),
		limits:  newSourceLimiter(&cfg),
		workers: newWorkerPool(),
	}
	s.baseCtx, s.baseCancel = context.WithCancel(context.Background())
	s.state.Store(s.newState(cfg.reloadable()))
	certs, err := newCertManager(cfg.StateDir, cfg.LeafLifetime, s.log, func(name string) error {
		return decideCert(s.state.Load().router, name)
	})
	if err != nil {
		return nil, fmt.Errorf("starting TLS terminator: %w", err)
	}
	s.certs = certs
	if err := s.certs.manageHosts(context.Background(), interceptHosts(cfg.Router)); err != nil {
		s.certs.stop()
		return nil, fmt.Errorf("starting TLS terminator: %w", err)
	}
	s.proxy = s.newReverseProxy()
	s.tlsCfg = s.newTLSConfig()
	return s, nil
}

func interceptHosts(r Router) []string {
	if hl, ok := r.(HostLister); ok {
		return hl.InterceptHosts()
	}
	return nil
}

// Update swaps what a reload may change (SIGHUP) atomically. Connections
// already established keep the state they started with for their current
// request; pooled upstream connections of the old state are closed when
// idle. New exact intercept names get their leaves before Update returns.
func (s *Server) Update(r Reloadable) error {
	if err := r.validate(); err != nil {
		return err
	}
	r.setDefaults()
	if err := s.certs.manageHosts(context.Background(), interceptHosts(r.Router)); err != nil {
		return fmt.Errorf("updating TLS terminator: %w", err)
	}
	old := s.state.Swap(s.newState(r))
	old.h2.CloseIdleConnections()
	old.h1pool.closeIdle()
	return nil
}

func (s *Server) newState(cfg Reloadable) *state {
	st := &state{
		router: cfg.Router, injector: cfg.Injector, identity: cfg.Identity, auditor: cfg.Auditor,
		overrides: make(map[string]Upstream, len(cfg.Upstreams)),
		policy:    addrPolicy{denied: append([]netip.Prefix(nil), cfg.DeniedPrefixes...), own: s.own},
		resolver:  cfg.Resolver,
		rootCAs:   cfg.RootCAs,
		sessions:  tls.NewLRUClientSessionCache(256),
	}
	for _, u := range cfg.Upstreams {
		st.overrides[normalizeName(u.Host)] = u
	}
	st.h2 = s.newH2Transport(st)
	st.h1pool = newH1Pool(func(ctx context.Context, host string) (net.Conn, error) {
		return s.dialUpstreamTLS(ctx, st, net.JoinHostPort(host, "443"), []string{"http/1.1"})
	})
	return st
}

// CA returns the local CA (for `clauderon ca` and the containers' trust).
func (s *Server) CA() *localca.CA { return s.certs.ca }

// Close stops the certificate cache. It is idempotent; Serve calls it.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.baseCancel()
		s.workers.stop(false)
		s.certs.stop()
		st := s.state.Load()
		st.h2.CloseIdleConnections()
		st.h1pool.closeIdle()
	})
	return nil
}

// Serve accepts connections on ln until ctx is cancelled or ln fails. On
// cancellation it stops accepting, lets in-flight requests and passthrough
// connections finish for up to DrainTimeout, then closes what is left. It
// returns only after every goroutine it started has exited, with nil after
// a cancellation. A Server serves once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("tlsmitm: Serve called twice")
	}
	defer s.Close()
	acceptErr := make(chan error, 1)
	s.conns.Add(1)
	go s.acceptLoop(ln, acceptErr)

	var err error
	select {
	case <-ctx.Done():
	case err = <-acceptErr:
		err = fmt.Errorf("accepting TLS connections on %s: %w", ln.Addr(), err)
	}
	ln.Close()
	s.drain()
	s.workers.stop(true) // idle now: every connection has ended
	return err
}

func (s *Server) acceptLoop(ln net.Listener, errc chan<- error) {
	defer s.conns.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() { // EMFILE and friends surface as temporary
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			errc <- err
			return
		}
		backoff = 0
		if c = s.admitSource(c); c == nil {
			continue
		}
		s.track(c, true, true)
		s.conns.Add(1)
		go s.handleConn(c)
	}
}

// drain implements graceful stop: GOAWAY for h2 connections, idle HTTP/1.1
// keep-alives closed, active requests and passthrough splices waited for,
// all bounded by DrainTimeout; then force.
func (s *Server) drain() {
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	s.draining.Store(true)
	s.closeRaw(true)
	s.closeH1(true)
	s.drainH2(false)
	done := make(chan struct{})
	go waitGroupDone(&s.conns, done)
	select {
	case <-done:
		return
	case <-dctx.Done():
	}
	s.log.Warn("drain deadline reached; closing remaining intercepted connections", "after", s.cfg.DrainTimeout)
	s.baseCancel()
	s.closeRaw(false)
	s.closeH1(false)
	s.drainH2(true)
	<-done
}

func waitGroupDone(wg *sync.WaitGroup, done chan<- struct{}) {
	wg.Wait()
	close(done)
}

func (s *Server) trackRaw(c net.Conn, add bool) { s.track(c, add, false) }

// track adds or removes a connection Serve must close at the drain deadline.
// Connections still peeking a hello are closed as soon as draining starts:
// nothing of theirs is in flight.
func (s *Server) track(c net.Conn, add, peeking bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.raw[c] = peeking
		s.stats.active.Add(1)
	} else if _, ok := s.raw[c]; ok {
		delete(s.raw, c)
		s.stats.active.Add(-1)
	}
}

func (s *Server) closeRaw(onlyPeeking bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, peeking := range s.raw {
		if peeking || !onlyPeeking {
			c.Close()
		}
	}
}

func (s *Server) donePeeking(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.raw[c]; ok {
		s.raw[c] = false
	}
}

// connInfo is what the accept path learned about a connection.
type connInfo struct {
	start   time.Time
	src     netip.AddrPort
	origDst netip.AddrPort
	sni     string
	alpn    []string
	client  Client
	rule    string
	st      *state
	source  *source // the fair-share record of the client address
}

// handleConn peeks, routes and dispatches one accepted connection. It
// recovers from panics: the connection fails closed, the daemon lives.
func (s *Server) handleConn(c net.Conn) {
	defer s.conns.Done()
	handedOff := false
	defer func() {
		if !handedOff {
			s.trackRaw(c, false)
			c.Close()
		}
	}()
	defer s.recoverConn("connection", c.RemoteAddr())

	// The connection's goroutine serves it to its end from here; what is
	// decided before that is left to classify, so that its frame is not
	// under the serving one (an idle h2 connection's stack shrinks to
	// 8 KiB only while it uses less than 3.2 KiB).
	hello, info, decision := s.classify(c)
	switch decision {
	case Intercept:
		handedOff = s.intercept(c, hello, info)
	case Passthrough:
		s.passthrough(c, hello, info)
	}
}

// classify peeks at a new connection's ClientHello and routes it by its
// SNI. A connection refused (a bad hello, a drain, no route) is answered
// and reported Deny.
func (s *Server) classify(c net.Conn) (hello []byte, info *connInfo, decision Decision) {
	st := s.state.Load()
	info = &connInfo{start: time.Now(), src: addrPortOf(c.RemoteAddr()), origDst: originalDst(c), st: st, source: sourceOf(c)}
	if st.identity != nil {
		info.client, _ = st.identity.Lookup(info.src.Addr().Unmap())
	}
	c.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	ch, err := peekClientHello(c, s.cfg.MaxHelloBytes)
	c.SetReadDeadline(time.Time{})
	s.donePeeking(c)
	if err == nil && s.draining.Load() {
		err = errors.New("server is shutting down")
	}
	if err != nil {
		s.stats.helloErrors.Add(1)
		s.refuse(c, info, err, false)
		return nil, info, Deny
	}
	info.sni, info.alpn = ch.SNI, ch.ALPN
	if err := checkSNI(ch.SNI); err != nil {
		s.refuse(c, info, err, true)
		return nil, info, Deny
	}
	decision, info.rule = st.router.Route(ch.SNI)
	if decision != Intercept && decision != Passthrough {
		s.refuse(c, info, fmt.Errorf("%w: %s (%s)", ErrNoRoute, ch.SNI, info.rule), true)
		return nil, info, Deny
	}
	return ch.Raw, info, decision
}

// recoverConn logs a panic's stack once, counts it and lets the deferred
// Close fail the connection closed.
func (s *Server) recoverConn(what string, remote net.Addr) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.recordPanic(v, "panic serving "+what, "remote", remote.String())
}

// recordPanic counts a recovered panic and logs it once with its stack;
// the one place every recover in this package reports to.
func (s *Server) recordPanic(v any, msg string, attrs ...any) {
	s.stats.panics.Add(1)
	s.events.Error(msg, append(attrs, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))...)
}

// audit hands ev to the Auditor, with the fields a client controls bounded
// and made printable (boundEvent).
func (s *Server) audit(st *state, ev Event) {
	if st.auditor != nil {
		boundEvent(&ev)
		st.auditor.Record(ev)
	}
}

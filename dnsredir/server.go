package dnsredir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Server defaults, used for zero fields.
const (
	DefaultReadTimeout          = 2 * time.Second
	DefaultWriteTimeout         = 2 * time.Second
	DefaultIdleTimeout          = 5 * time.Second
	DefaultMaxTCPQueries        = 128
	DefaultMaxTCPConns          = 256
	DefaultMaxTCPConnsPerClient = 16
	DefaultShutdownGrace        = 3 * time.Second

	// udpReadBuffer is the largest UDP query read; longer datagrams are
	// cut and then fail to unpack.
	udpReadBuffer = 4096
	// maxExtra bounds the additional records a query may carry before the
	// server refuses to unpack it (OPT, and TSIG that we do not serve).
	maxExtra = 2
)

// ServerConfig configures a Server. Zero values take the defaults above.
type ServerConfig struct {
	// ReadTimeout bounds reading the first query on a TCP connection (and
	// is the UDP read poll interval).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one TCP reply, so a client that never
	// reads cannot pin a goroutine.
	WriteTimeout time.Duration
	// IdleTimeout bounds the wait for each further query on a TCP
	// connection.
	IdleTimeout time.Duration
	// MaxTCPQueries is the number of queries served on one TCP connection
	// before it is closed.
	MaxTCPQueries int
	// MaxTCPConns and MaxTCPConnsPerClient bound concurrent TCP
	// connections overall and per source address; connections beyond them
	// are closed as soon as they are accepted.
	MaxTCPConns          int
	MaxTCPConnsPerClient int
	// ShutdownGrace is how long Serve waits for queries in flight once its
	// context is cancelled, before it closes the remaining connections.
	ShutdownGrace time.Duration
	// Logger takes the server's lifecycle lines (listening, stopped);
	// nil discards them. Per-query lines go to the Handler's EventLogger.
	Logger *slog.Logger
}

// Server serves a Handler over UDP and TCP on sockets the caller opened (the
// appliance binds them on the bridge gateway; tests on 127.0.0.1:0).
type Server struct {
	cfg     ServerConfig
	h       *Handler
	once    sync.Once
	ready   chan struct{}
	pending int // servers not yet started; guarded by mu
	mu      sync.Mutex
}

// NewServer returns a Server for h.
func NewServer(h *Handler, cfg ServerConfig) *Server {
	cfg.setDefaults()
	return &Server{cfg: cfg, h: h, ready: make(chan struct{})}
}

// Ready is closed once every socket handed to Serve is being served.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// run is one dns.Server (UDP or TCP) and its lifecycle signals.
type run struct {
	proto   string
	srv     *dns.Server
	started chan struct{}
	exited  chan struct{}
	err     error
}

// Serve serves DNS on pc (UDP) and ln (TCP); either may be nil, not both.
// It takes ownership of both and closes them. It returns once both servers
// and all their goroutines have stopped: nil when ctx was cancelled, an
// error when a server failed. Serve may be called once; a second call
// returns an error and leaves pc and ln to the caller.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	if pc == nil && ln == nil {
		return errors.New("dnsredir: serve: neither a PacketConn nor a Listener")
	}
	first := false
	s.once.Do(func() { first = true })
	if !first {
		return errors.New("dnsredir: serve: already called")
	}
	var runs []*run
	var limited *limitListener
	if pc != nil {
		runs = append(runs, s.newRun("udp", &dns.Server{PacketConn: pc}))
	}
	if ln != nil {
		limited = newLimitListener(ln, s.cfg.MaxTCPConns, s.cfg.MaxTCPConnsPerClient, s.cfg.WriteTimeout, s.h.stats.tcpRejected.Add)
		runs = append(runs, s.newRun("tcp", &dns.Server{Listener: limited}))
	}
	s.pending = len(runs)
	exits := make(chan *run, len(runs))
	for _, r := range runs {
		go serveDNSServer(r, exits)
	}
	var errs []error
	select {
	case <-ctx.Done():
	case r := <-exits:
		errs = append(errs, fmt.Errorf("dnsredir: %s server stopped unexpectedly: %w", r.proto, r.err))
	}
	s.shutdown(runs, limited)
	if pc != nil {
		_ = pc.Close() // already closed unless the server failed to start
	}
	return errors.Join(errs...)
}

func (s *ServerConfig) setDefaults() {
	s.ReadTimeout = orDefault(s.ReadTimeout, DefaultReadTimeout)
	s.WriteTimeout = orDefault(s.WriteTimeout, DefaultWriteTimeout)
	s.IdleTimeout = orDefault(s.IdleTimeout, DefaultIdleTimeout)
	s.MaxTCPQueries = orDefault(s.MaxTCPQueries, DefaultMaxTCPQueries)
	s.MaxTCPConns = orDefault(s.MaxTCPConns, DefaultMaxTCPConns)
	s.MaxTCPConnsPerClient = orDefault(s.MaxTCPConnsPerClient, DefaultMaxTCPConnsPerClient)
	s.ShutdownGrace = orDefault(s.ShutdownGrace, DefaultShutdownGrace)
	s.Logger = componentLogger(s.Logger)
}

// newRun completes srv with the Server's settings and hooks.
func (s *Server) newRun(proto string, srv *dns.Server) *run {
	r := &run{proto: proto, srv: srv, started: make(chan struct{}), exited: make(chan struct{})}
	idle := s.cfg.IdleTimeout
	srv.Handler = s.h
	srv.UDPSize = udpReadBuffer
	srv.ReadTimeout = s.cfg.ReadTimeout
	srv.WriteTimeout = s.cfg.WriteTimeout
	srv.IdleTimeout = func() time.Duration { return idle }
	srv.MaxTCPQueries = s.cfg.MaxTCPQueries
	srv.MsgAcceptFunc = s.acceptMsg
	srv.MsgInvalidFunc = s.invalidMsg
	srv.NotifyStartedFunc = func() { s.started(r) }
	return r
}

// started marks r as serving and closes Ready when all are.
func (s *Server) started(r *run) {
	close(r.started)
	s.cfg.Logger.Info("dns server listening", "proto", r.proto, "addr", listenAddr(r.srv))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending--; s.pending == 0 {
		close(s.ready)
	}
}

// serveDNSServer runs one dns.Server until it stops.
func serveDNSServer(r *run, exits chan<- *run) {
	r.err = r.srv.ActivateAndServe()
	if r.err == nil {
		r.err = errors.New("server returned")
	}
	close(r.exited)
	exits <- r
}

// shutdown stops every server that started, waits ShutdownGrace for queries
// in flight, then closes what is left and waits for every server to return.
func (s *Server) shutdown(runs []*run, limited *limitListener) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	for _, r := range runs {
		select {
		case <-r.started:
		case <-r.exited:
			continue
		}
		if err := r.srv.ShutdownContext(ctx); err != nil {
			s.cfg.Logger.Warn("dns server shutdown", "proto", r.proto, "err", err)
		}
	}
	if limited != nil {
		limited.closeAll() // connections still open after the grace period
	}
	for _, r := range runs {
		<-r.exited
	}
	s.cfg.Logger.Info("dns server stopped")
}

// acceptMsg screens a message by its header before it is unpacked: responses
// are dropped silently, and queries claiming more records than any query we
// serve needs are refused with FORMERR without being unpacked. Everything
// else reaches the Handler, which applies the precise rules and audits.
func (s *Server) acceptMsg(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		s.h.stats.dropped.Add(1)
		return dns.MsgIgnore
	}
	if dh.Qdcount > 1 || dh.Ancount > 0 || dh.Nscount > 0 || dh.Arcount > maxExtra {
		s.h.stats.malformed.Add(1)
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// invalidMsg counts messages that could not be parsed (miekg/dns answers
// those with FORMERR when the header was readable, and drops the rest).
func (s *Server) invalidMsg(m []byte, err error) {
	s.h.stats.malformed.Add(1)
	s.h.events.LogAttrs(context.Background(), slog.LevelDebug, "unparsable dns message", slog.Int("bytes", len(m)), slog.String("err", err.Error()))
}

func listenAddr(srv *dns.Server) string {
	if srv.PacketConn != nil {
		return srv.PacketConn.LocalAddr().String()
	}
	return srv.Listener.Addr().String()
}

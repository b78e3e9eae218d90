package tlsmitm

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Client identifies the container a connection came from.
type Client struct {
	ID, Name, Profile string
	Known             bool
}

// Identity maps a source address to a container. Implementations must be
// safe for concurrent use and fast (it is called once per connection).
type Identity interface {
	Lookup(addr netip.Addr) (Client, bool)
}

// Injector rewrites intercepted requests. Apply is called once per request,
// on the outgoing request already addressed to host (the SNI name, which has
// been checked against the Host header). It returns the rule name and whether
// a credential was injected. An error that wraps ErrForbidden becomes a 403,
// one that wraps ErrSNIMismatch a 421, any other error a 500; none reaches
// the upstream. RedactResponse removes
// any credential the upstream echoes in response headers. Implementations
// must never put a credential in the returned error.
type Injector interface {
	Apply(req *http.Request, host string, c Client) (rule string, injected bool, err error)
	RedactResponse(host string, h http.Header)
}

// Event is one audit record: one per intercepted request, one per passthrough
// or refused connection. It never holds a header value. The fields a client
// controls (SNI, Host, Method, Path) reach the Auditor as at most 512 bytes
// of printable ASCII (other bytes as \xNN, a cut marked "…[truncated]"),
// and Err as at most 2048.
type Event struct {
	Time         time.Time // start of the request or connection
	Client       Client
	SrcIP        netip.AddrPort
	OrigDst      netip.AddrPort // the address the container dialled
	SNI          string
	Host         string // HTTP Host (intercept only)
	Method, Path string // Path as the client sent it (not percent-decoded), without the query string (it may hold secrets)
	Status       int    // HTTP status (intercept); 0 for connections
	Decision     Decision
	Rule         string
	AuthInjected bool
	Duration     time.Duration
	Err          string
	BytesIn      int64 // from the client (request body, or all bytes for passthrough)
	BytesOut     int64 // to the client
}

// Auditor receives events. Record must not block for long; it is called on
// the request path after the response is complete.
type Auditor interface {
	Record(Event)
}

// Resolver resolves upstream names (net.DefaultResolver fits).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Upstream overrides where an SNI host is forwarded: Address (host:port,
// usually an IP) instead of the resolved name on 443, verified against
// RootCAs (nil: system roots) for the name Host. An override's exact address
// is allowed even when the address policy would refuse it (e.g. loopback).
type Upstream struct {
	Host    string
	Address string
	RootCAs *x509.CertPool
}

// Reloadable is what Update swaps (SIGHUP): routing, injection, identity,
// audit and where upstreams are. The fields mean what Config's of the same
// names do; Router and Injector are required.
type Reloadable struct {
	Router         Router
	Injector       Injector
	Identity       Identity
	Auditor        Auditor
	Upstreams      []Upstream
	DeniedPrefixes []netip.Prefix
	Resolver       Resolver
	RootCAs        *x509.CertPool
}

// Config configures a Server. Router and Injector are required. Zero
// durations and limits take the defaults below. The fields from Router to
// RootCAs are those a reload may change (Reloadable); they stay plain
// fields here, not an embedded Reloadable, because code outside this
// module (../shared/bench's adapter) writes tlsmitm.Config{Router: …}.
type Config struct {
	// StateDir holds the CA (proxy-ca.pem, proxy-ca-key.pem) and the leaf
	// storage (StateDir/certs). Required.
	StateDir string

	Router   Router
	Injector Injector
	Identity Identity // nil: every client is unknown
	Auditor  Auditor  // nil: events are dropped

	Upstreams      []Upstream
	DeniedPrefixes []netip.Prefix // refused by the upstream dialer, e.g. the bridge subnet
	Resolver       Resolver       // nil: net.DefaultResolver
	// RootCAs verifies upstreams without an override's pool; nil: system roots.
	RootCAs *x509.CertPool

	// Logger takes the terminator's lifecycle lines. EventLogger takes the
	// lines a client can cause, one per connection or request (a malformed
	// request, a connection over its limit, a refusal, a panic serving one):
	// the caller rate-limits it (the appliance: appliance/ratelog, a budget
	// per component and level). nil: Logger, which this package does not
	// rate-limit.
	Logger      *slog.Logger
	EventLogger *slog.Logger

	HelloTimeout      time.Duration // reading the ClientHello; default 10s
	MaxHelloBytes     int           // default 64 KiB
	HandshakeTimeout  time.Duration // client TLS handshake; default 10s
	ReadHeaderTimeout time.Duration // per request; default 10s
	IdleTimeout       time.Duration // client keep-alive; default 120s
	MaxHeaderBytes    int           // request headers; default 64 KiB (431 beyond)
	// ParkAfter is how long an idle keep-alive connection waits for its
	// next request on the goroutine that served it before it parks: a new
	// goroutine waits on a 2–4 KiB stack instead (park.go). Default 1s.
	ParkAfter time.Duration
	// WriteIdleTimeout cuts a response the client has not accepted a byte
	// of for this long, to within 1/64 of it (a client that stops reading,
	// or never opens its h2 flow-control window): the upstream response
	// is abandoned and its buffers freed. Default 60s.
	WriteIdleTimeout time.Duration
	// BodyIdleTimeout fails a request whose body makes no progress for this
	// long, to within 1/64 of it (a stalled upload holds buffers on both
	// legs): 408 to the client if no response has started, and the
	// upstream request is cancelled. Default 30s.
	BodyIdleTimeout    time.Duration
	DialTimeout        time.Duration // upstream TCP connect; default 10s
	UpstreamTLSTimeout time.Duration // upstream TLS handshake; default 10s
	// ResponseHeaderTimeout bounds the wait for upstream response headers.
	// Default 0 (none): model APIs may think for minutes before answering.
	ResponseHeaderTimeout  time.Duration
	PassthroughIdleTimeout time.Duration // no bytes either way; default 10m
	DrainTimeout           time.Duration // graceful stop; default 10s
	// MaxConns caps open client connections (peeking, spliced or held by
	// the HTTP server); beyond it new connections are closed. Default 4096.
	MaxConns int
	// MaxConnsPerSource caps open connections from one client address.
	// Default 256. The last quarter of MaxConns is kept for sources
	// holding fewer than MaxConns/64 (the fair-share rule in doc.go), so
	// a few containers cannot take every slot from the others.
	MaxConnsPerSource int
	// MaxRequests caps intercepted requests in flight (HTTP/1.1 and h2
	// alike), MaxRequestsPerSource those of one client address; the same
	// fair-share rule applies. A request beyond them is answered 503 with
	// Retry-After, audited and counted (Stats.RefusedRequests). They bound
	// the memory requests hold (h2 buffers on both legs, up to about
	// 1 MiB each). Defaults 512 and 48.
	MaxRequests          int
	MaxRequestsPerSource int
	LeafLifetime         time.Duration // default localca.DefaultLeafLifetime

	// DialContext dials upstream TCP; nil: a net.Dialer. It must hand
	// control to net.Dialer.ControlContext (the address policy); the peer
	// address is checked again after the dial in any case. Tests inject a
	// failing dialer to prove issuance never dials.
	DialContext func(ctx context.Context, network, addr string, control ControlFunc) (net.Conn, error)
	// InterfaceAddrs lists the host's own addresses; nil: net.InterfaceAddrs.
	InterfaceAddrs func() ([]net.Addr, error)
}

// Defaults of the fair-share limits (see Config and the package doc).
const (
	DefaultMaxConnsPerSource    = 256
	DefaultMaxRequests          = 512
	DefaultMaxRequestsPerSource = 48
)

// ControlFunc is net.Dialer.ControlContext's signature.
type ControlFunc = func(ctx context.Context, network, address string, c syscall.RawConn) error

func (c *Config) validate() error {
	if c.StateDir == "" {
		return errors.New("tlsmitm config: StateDir is required")
	}
	r := c.reloadable()
	return r.validate()
}

// SetReloadable sets the fields of c that a reload may change to r's.
func (c *Config) SetReloadable(r Reloadable) {
	c.Router, c.Injector, c.Identity, c.Auditor = r.Router, r.Injector, r.Identity, r.Auditor
	c.Upstreams, c.DeniedPrefixes, c.Resolver, c.RootCAs = r.Upstreams, r.DeniedPrefixes, r.Resolver, r.RootCAs
}

// reloadable is the part of c that Update may change.
func (c *Config) reloadable() Reloadable {
	return Reloadable{Router: c.Router, Injector: c.Injector, Identity: c.Identity, Auditor: c.Auditor,
		Upstreams: c.Upstreams, DeniedPrefixes: c.DeniedPrefixes, Resolver: c.Resolver, RootCAs: c.RootCAs}
}

func (c *Reloadable) validate() error {
	if c.Router == nil {
		return errors.New("tlsmitm config: Router is required")
	}
	if c.Injector == nil {
		return errors.New("tlsmitm config: Injector is required")
	}
	for _, u := range c.Upstreams {
		if normalizeName(u.Host) == "" {
			return errors.New("tlsmitm config: upstream override without host")
		}
		if _, _, err := net.SplitHostPort(u.Address); err != nil {
			return fmt.Errorf("tlsmitm config: upstream %s: address %q: %w", u.Host, u.Address, err)
		}
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HelloTimeout, 10*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.IdleTimeout, 120*time.Second)
	def(&c.ParkAfter, time.Second)
	def(&c.WriteIdleTimeout, 60*time.Second)
	def(&c.BodyIdleTimeout, 30*time.Second)
	def(&c.DialTimeout, 10*time.Second)
	def(&c.UpstreamTLSTimeout, 10*time.Second)
	def(&c.PassthroughIdleTimeout, 10*time.Minute)
	def(&c.DrainTimeout, 10*time.Second)
	if c.MaxHelloBytes <= 0 {
		c.MaxHelloBytes = DefaultMaxHelloBytes
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 4096
	}
	if c.MaxConnsPerSource <= 0 {
		c.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if c.MaxRequests <= 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	if c.MaxRequestsPerSource <= 0 {
		c.MaxRequestsPerSource = DefaultMaxRequestsPerSource
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.InterfaceAddrs == nil {
		c.InterfaceAddrs = net.InterfaceAddrs
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.EventLogger == nil {
		c.EventLogger = c.Logger
	}
}

func (r *Reloadable) setDefaults() {
	if r.Resolver == nil {
		r.Resolver = net.DefaultResolver
	}
}

package dnsredir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Decision is what a Policy says about a query name.
type Decision string

const (
	// Intercept: a credential rule names the host; its connections are
	// terminated by the TLS terminator, so the name is answered.
	Intercept Decision = "intercept"
	// Allow: the host is on the egress allowlist (passthrough); answered.
	Allow Decision = "allow"
	// Deny: everything else; answered with the deny rcode and never
	// resolved.
	Deny Decision = "deny"
)

// Audit decisions carried in Event.Decision.
const (
	AuditAllow = "dns-allow"
	AuditDeny  = "dns-deny"
)

// Policy decides what happens to a normalised query name (lower case, no
// trailing dot). It returns the decision and the name of the rule or policy
// that made it, for the audit. It is called concurrently.
type Policy interface {
	Decide(name string) (Decision, string)
}

// Resolver looks up the addresses of a name the Policy allows. Handler only
// ever calls it with network "ip4". *net.Resolver and *UpstreamResolver
// satisfy it. Errors for which IsNotFound reports true become NXDOMAIN;
// other errors become SERVFAIL.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Identity names the container behind a source address, for the audit.
type Identity interface {
	Lookup(addr netip.Addr) (client string, ok bool)
}

// Event is one audited query. It never holds anything but the query's own
// metadata.
type Event struct {
	Time     time.Time
	SrcIP    netip.Addr
	Client   string // from Identity, "" when unknown
	Proto    string // "udp" or "tcp"
	Name     string // normalised name; for an invalid name, its escaped form (cut at 300 bytes)
	Qtype    uint16
	Decision string   // AuditAllow or AuditDeny
	Policy   Decision // what the Policy said; "" when the query never reached it
	Rule     string   // rule or policy name from the Policy
	Rcode    int
	Answers  int
	Duration time.Duration
	Err      string
}

// Auditor receives one Event per answered query (rate-limited refusals are
// sampled: see Config.RatePerSecond). RecordDNS is called on the query's
// goroutine and must not block for long.
type Auditor interface {
	RecordDNS(Event)
}

// Defaults for Config's zero values.
const (
	DefaultTTL                  = 30 * time.Second
	DefaultMaxAnswers           = 32
	DefaultRatePerSecond        = 500
	DefaultBurst                = 1000
	DefaultMaxClients           = 4096
	DefaultLookupTimeout        = 2 * time.Second
	DefaultMaxConcurrentLookups = 256
	DefaultMaxInFlightPerClient = 32

	// MaxUDPSize caps the client's advertised EDNS0 buffer size (the DNS
	// flag day 2020 value, which avoids IP fragmentation).
	MaxUDPSize = 1232
)

// Reloadable is the part of Config that Update swaps (SIGHUP).
type Reloadable struct {
	// Policy decides every query name. Required.
	Policy Policy
	// InterceptAnswer, when set and returning at least one address, answers
	// A queries for intercepted names without a lookup (the appliance
	// returns the bridge gateway for hosts whose upstream is overridden to
	// loopback). Only IPv4 addresses are used.
	InterceptAnswer func(name string) []netip.Addr
}

// Config configures a Handler: what a reload may change (Reloadable) and
// what is fixed at NewHandler. Zero values take the defaults above.
type Config struct {
	Reloadable
	// Resolver resolves allowed and intercepted names to IPv4 addresses.
	// nil means net.DefaultResolver.
	Resolver Resolver
	// DenyRcode answers denied names: dns.RcodeNameError (NXDOMAIN, the
	// default) or dns.RcodeRefused. NXDOMAIN is the better default: stub
	// resolvers move on to the next search-domain candidate, where REFUSED
	// makes glibc try the next server and report a temporary failure.
	DenyRcode int
	// TTL of every answer record.
	TTL time.Duration
	// MaxAnswers bounds the A records in one answer.
	MaxAnswers int
	// RatePerSecond and Burst size each source address's token bucket.
	// Over the limit a query gets REFUSED; those refusals are counted, and
	// at most a few per second are audited (each carrying how many were
	// suppressed). A negative RatePerSecond disables rate limiting. The
	// limit protects the daemon, not the network (answers come from policy
	// and no query leaves the host), so the default is generous: a build
	// that opens a connection per fetch (npm, pip, Go's resolver without a
	// cache) asks two questions per connection, hundreds a second.
	RatePerSecond float64
	Burst         int
	// MaxClients bounds the rate limiter's table of source addresses.
	MaxClients int
	// LookupTimeout bounds one Resolver call.
	LookupTimeout time.Duration
	// MaxConcurrentLookups bounds Resolver calls in flight; beyond it a
	// query gets SERVFAIL at once.
	MaxConcurrentLookups int
	// MaxInFlightPerClient bounds the queries one source address has in
	// flight at once (UDP and TCP together; only queries waiting on a
	// lookup stay in flight for long). Beyond it a query gets REFUSED at
	// once, counted as Busy, so one client cannot hold every goroutine
	// and lookup slot while it waits on slow names; the rate limit bounds
	// how many it starts, this how many it holds.
	MaxInFlightPerClient int
	// Identity and Auditor are optional.
	Identity Identity
	Auditor  Auditor
	// EventLogger takes the lines a client causes, one per query (debug;
	// warn for SERVFAIL) and one per panic: the caller rate-limits it (the
	// appliance: appliance/ratelog, a budget per component and level). nil
	// discards them.
	EventLogger *slog.Logger
}

// Handler answers DNS queries according to a Policy. It implements
// dns.Handler and is safe for concurrent use.
type Handler struct {
	cfg     Config
	policy  atomic.Pointer[Reloadable]
	limiter *clientLimiter // nil when rate limiting is off
	lookups chan struct{}  // semaphore of MaxConcurrentLookups
	flight  inFlight       // per-client queries in flight
	stats   counters
	events  *slog.Logger // Config.EventLogger
	rlAudit *throttle    // samples audit events for rate-limited queries
	now     func() time.Time
}

var _ dns.Handler = (*Handler)(nil)

// NewHandler validates cfg, fills in defaults and returns a Handler.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Policy == nil {
		return nil, errors.New("dnsredir: config: Policy is required")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("dnsredir: config: %w", err)
	}
	h := &Handler{
		cfg:     cfg,
		lookups: make(chan struct{}, cfg.MaxConcurrentLookups),
		flight:  inFlight{max: cfg.MaxInFlightPerClient, n: make(map[netip.Addr]int)},
		events:  cfg.EventLogger,
		now:     time.Now,
	}
	h.policy.Store(&cfg.Reloadable)
	if cfg.RatePerSecond > 0 {
		h.limiter = newClientLimiter(cfg.RatePerSecond, cfg.Burst, cfg.MaxClients)
	}
	h.rlAudit = newThrottle(5, 10, h.clock)
	return h, nil
}

func (c *Config) setDefaults() error {
	switch c.DenyRcode {
	case 0:
		c.DenyRcode = dns.RcodeNameError
	case dns.RcodeNameError, dns.RcodeRefused:
	default:
		return fmt.Errorf("DenyRcode %d: want NXDOMAIN (%d) or REFUSED (%d)", c.DenyRcode, dns.RcodeNameError, dns.RcodeRefused)
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	c.TTL = orDefault(c.TTL, DefaultTTL)
	c.MaxAnswers = orDefault(c.MaxAnswers, DefaultMaxAnswers)
	c.RatePerSecond = orDefault(c.RatePerSecond, DefaultRatePerSecond)
	c.Burst = orDefault(c.Burst, DefaultBurst)
	c.MaxClients = orDefault(c.MaxClients, DefaultMaxClients)
	c.LookupTimeout = orDefault(c.LookupTimeout, DefaultLookupTimeout)
	c.MaxConcurrentLookups = orDefault(c.MaxConcurrentLookups, DefaultMaxConcurrentLookups)
	c.MaxInFlightPerClient = orDefault(c.MaxInFlightPerClient, DefaultMaxInFlightPerClient)
	if c.TTL < time.Second || c.MaxAnswers < 1 || c.Burst < 1 || c.MaxClients < 1 || c.LookupTimeout < 0 || c.MaxConcurrentLookups < 1 || c.MaxInFlightPerClient < 1 {
		return errors.New("TTL, MaxAnswers, Burst, MaxClients, LookupTimeout, MaxConcurrentLookups and MaxInFlightPerClient must be positive (TTL at least 1s)")
	}
	c.EventLogger = componentLogger(c.EventLogger)
	return nil
}

// componentLogger returns l, or for nil a logger that discards, with every
// line tagged component=dnsredir.
func componentLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", "dnsredir")
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Update swaps the Policy and InterceptAnswer (on reload). Queries in flight
// finish with the old ones.
func (h *Handler) Update(r Reloadable) error {
	if r.Policy == nil {
		return errors.New("dnsredir: update: Policy is required")
	}
	h.policy.Store(&r)
	return nil
}

// Stats returns a snapshot of the counters.
func (h *Handler) Stats() Stats { return h.stats.snapshot() }

func (h *Handler) clock() time.Time { return h.now() }

// inFlight counts each source address's queries in flight. An address
// leaves the map when its last query finishes, so the map holds at most
// as many entries as there are queries in flight.
type inFlight struct {
	mu  sync.Mutex
	max int
	n   map[netip.Addr]int
}

func (f *inFlight) enter(a netip.Addr) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[a] >= f.max {
		return false
	}
	f.n[a]++
	return true
}

func (f *inFlight) leave(a netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[a] <= 1 {
		delete(f.n, a)
		return
	}
	f.n[a]--
}

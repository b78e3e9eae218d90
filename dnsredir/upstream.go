package dnsredir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// UpstreamResolver defaults, used for zero UpstreamConfig fields.
const (
	DefaultResolvConf        = "/etc/resolv.conf"
	DefaultUpstreamTimeout   = 2 * time.Second
	DefaultUpstreamCacheSize = 1024
	DefaultUpstreamMaxTTL    = 5 * time.Minute

	maxCNAMEHops = 8
)

// UpstreamConfig configures an UpstreamResolver.
type UpstreamConfig struct {
	// Servers are the upstream DNS servers, "host:port" or a bare IP (port
	// 53), tried in order. Empty means the nameservers in ResolvConf.
	Servers []string
	// ResolvConf is read when Servers is empty.
	ResolvConf string
	// Timeout bounds one exchange with one server (UDP, then TCP if the
	// answer was truncated).
	Timeout time.Duration
	// CacheSize bounds the number of names cached.
	CacheSize int
	// MaxTTL caps how long a positive answer is cached, whatever its TTL.
	MaxTTL time.Duration
	// Dialer, if set, dials the upstream servers (source address, Control).
	Dialer *net.Dialer
	// Logger is optional.
	Logger *slog.Logger
}

// UpstreamResolver is a small stub resolver for A records only: it asks the
// configured upstream servers (UDP, falling back to TCP on truncation),
// follows the CNAME chain in the answer, and caches positive answers for
// their TTL (capped at MaxTTL) in a bounded cache. Concurrent lookups of the
// same name share one exchange. It does not read /etc/hosts, search domains
// or ndots: names are absolute. It satisfies Resolver and the resolver
// interface tlsmitm takes, so the appliance can use one for both.
type UpstreamResolver struct {
	servers []string
	udp     *dns.Client
	tcp     *dns.Client
	timeout time.Duration
	maxTTL  time.Duration
	log     *slog.Logger
	now     func() time.Time

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // resolveUpstream goroutines

	mu       sync.Mutex
	cache    map[string]cacheEntry
	capacity int
	inflight map[string]*lookupCall
	closed   bool
}

type cacheEntry struct {
	addrs   []netip.Addr
	expires time.Time
}

// lookupCall is one exchange shared by every concurrent lookup of a name.
type lookupCall struct {
	done  chan struct{}
	addrs []netip.Addr
	err   error
}

// NewUpstreamResolver returns a resolver for cfg; it reads ResolvConf when
// no Servers are given.
func NewUpstreamResolver(cfg UpstreamConfig) (*UpstreamResolver, error) {
	servers, err := upstreamServers(cfg)
	if err != nil {
		return nil, fmt.Errorf("dnsredir: upstream resolver: %w", err)
	}
	timeout := orDefault(cfg.Timeout, DefaultUpstreamTimeout)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &UpstreamResolver{
		ctx:      ctx,
		cancel:   cancel,
		servers:  servers,
		udp:      &dns.Client{Net: "udp", Timeout: timeout, Dialer: cfg.Dialer, UDPSize: MaxUDPSize},
		tcp:      &dns.Client{Net: "tcp", Timeout: timeout, Dialer: cfg.Dialer},
		timeout:  timeout,
		maxTTL:   orDefault(cfg.MaxTTL, DefaultUpstreamMaxTTL),
		log:      logger.With("component", "dnsredir.upstream"),
		now:      time.Now,
		cache:    make(map[string]cacheEntry),
		capacity: max(orDefault(cfg.CacheSize, DefaultUpstreamCacheSize), 1),
		inflight: make(map[string]*lookupCall),
	}, nil
}

// upstreamServers returns cfg.Servers as host:port, or resolv.conf's.
func upstreamServers(cfg UpstreamConfig) ([]string, error) {
	if len(cfg.Servers) == 0 {
		path := orDefault(cfg.ResolvConf, DefaultResolvConf)
		cc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		if len(cc.Servers) == 0 {
			return nil, fmt.Errorf("reading %s: no nameserver lines", path)
		}
		for _, s := range cc.Servers {
			cfg.Servers = append(cfg.Servers, net.JoinHostPort(s, cc.Port))
		}
	}
	out := make([]string, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		if _, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, s)
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("server %q: want an IP address or IP:port", s)
		}
		out = append(out, netip.AddrPortFrom(ip, 53).String())
	}
	return out, nil
}

// Close cancels the exchanges in flight and waits for them to finish.
// Lookups after Close fail. Close is idempotent.
func (r *UpstreamResolver) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

// Servers returns the upstream servers in the order they are tried.
func (r *UpstreamResolver) Servers() []string { return slices.Clone(r.servers) }

// LookupNetIP returns host's IPv4 addresses. network is "ip" or "ip4"
// ("ip6" finds nothing: this resolver asks for A records only). An IP
// literal is returned as is. A name that does not exist, or has no A
// records, yields a *net.DNSError with IsNotFound set.
func (r *UpstreamResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return literal(network, host, ip.Unmap())
	}
	switch network {
	case "ip", "ip4":
	case "ip6":
		return nil, notFound(host)
	default:
		return nil, fmt.Errorf("dnsredir: lookup %s: unsupported network %q", host, network)
	}
	name, err := NormalizeName(host)
	if err != nil || name == "" {
		return nil, &net.DNSError{Err: "invalid domain name", Name: host}
	}
	if addrs, ok := r.cached(name); ok {
		return addrs, nil
	}
	c := r.join(name)
	select {
	case <-c.done:
		return slices.Clone(c.addrs), c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("dnsredir: lookup %s: %w", name, ctx.Err())
	}
}

func literal(network, host string, ip netip.Addr) ([]netip.Addr, error) {
	if (network == "ip4" && !ip.Is4()) || (network == "ip6" && !ip.Is6()) {
		return nil, notFound(host)
	}
	return []netip.Addr{ip}, nil
}

func notFound(host string) error {
	return &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// join returns the exchange in flight for name, starting one if there is
// none. The exchange runs on its own goroutine with its own deadline, so a
// caller that gives up does not cancel it for the others (or for the cache).
func (r *UpstreamResolver) join(name string) *lookupCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.inflight[name]; ok {
		return c
	}
	c := &lookupCall{done: make(chan struct{})}
	if r.closed {
		c.err = fmt.Errorf("dnsredir: lookup %s: resolver closed", name)
		close(c.done)
		return c
	}
	r.inflight[name] = c
	r.wg.Add(1)
	go r.resolveUpstream(name, c)
	return c
}

// resolveUpstream performs one shared exchange and publishes its result.
func (r *UpstreamResolver) resolveUpstream(name string, c *lookupCall) {
	defer r.wg.Done()
	budget := r.timeout * time.Duration(2*len(r.servers))
	ctx, cancel := context.WithTimeout(r.ctx, budget)
	defer cancel()
	addrs, ttl, err := r.query(ctx, name)
	r.mu.Lock()
	delete(r.inflight, name)
	if err == nil {
		r.store(name, addrs, ttl)
	}
	r.mu.Unlock()
	c.addrs, c.err = addrs, err
	close(c.done)
}

// query asks each server in turn until one gives a definitive answer.
func (r *UpstreamResolver) query(ctx context.Context, name string) ([]netip.Addr, time.Duration, error) {
	var errs []error
	for _, server := range r.servers {
		addrs, ttl, err := r.queryServer(ctx, server, name)
		if err == nil || isNotFound(err) {
			return addrs, ttl, err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, fmt.Errorf("dnsredir: lookup %s: %w", name, errors.Join(errs...))
}

// queryServer asks one server for name's A records.
func (r *UpstreamResolver) queryServer(ctx context.Context, server, name string) ([]netip.Addr, time.Duration, error) {
	fqdn := dns.Fqdn(name)
	m := new(dns.Msg)
	m.SetQuestion(fqdn, dns.TypeA)
	m.SetEdns0(MaxUDPSize, false)
	resp, err := exchange(ctx, r.udp, m, server)
	if err == nil && resp.Truncated {
		resp, err = exchange(ctx, r.tcp, m, server)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("asking %s: %w", server, err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, fqdn) || resp.Question[0].Qtype != dns.TypeA {
		return nil, 0, fmt.Errorf("asking %s: answer is for another question", server)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, 0, notFound(name)
	default:
		return nil, 0, fmt.Errorf("asking %s: %s", server, dns.RcodeToString[resp.Rcode])
	}
	addrs, ttl := followChain(fqdn, resp.Answer)
	if len(addrs) == 0 {
		return nil, 0, notFound(name)
	}
	return addrs, ttl, nil
}

// exchange sends m to server and reads the answer. Unlike
// dns.Client.ExchangeContext, it honours ctx cancellation, not only its
// deadline, by closing the connection.
func exchange(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

// followChain collects the A records for qname, following CNAMEs in the
// answer section; records for names off the chain are ignored. The TTL is
// the smallest along the chain.
func followChain(qname string, answer []dns.RR) ([]netip.Addr, time.Duration) {
	target := strings.ToLower(qname)
	minTTL := uint32(1<<31 - 1)
	var addrs []netip.Addr
	for range maxCNAMEHops {
		next := ""
		for _, rr := range answer {
			if !strings.EqualFold(rr.Header().Name, target) {
				continue
			}
			switch v := rr.(type) {
			case *dns.A:
				if ip, ok := netip.AddrFromSlice(v.A); ok && ip.Unmap().Is4() {
					addrs = append(addrs, ip.Unmap())
					minTTL = min(minTTL, v.Hdr.Ttl)
				}
			case *dns.CNAME:
				next = strings.ToLower(v.Target)
				minTTL = min(minTTL, v.Hdr.Ttl)
			}
		}
		if len(addrs) > 0 || next == "" {
			break
		}
		target = next
	}
	return addrs, time.Duration(minTTL) * time.Second
}

// cached returns a copy of name's unexpired cached addresses.
func (r *UpstreamResolver) cached(name string) ([]netip.Addr, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[name]
	if !ok {
		return nil, false
	}
	if !r.now().Before(e.expires) {
		delete(r.cache, name)
		return nil, false
	}
	return slices.Clone(e.addrs), true
}

// store caches addrs for ttl (capped at maxTTL; zero TTLs are not cached).
// When the cache is full it drops expired entries, then arbitrary ones.
// r.mu is held.
func (r *UpstreamResolver) store(name string, addrs []netip.Addr, ttl time.Duration) {
	ttl = min(ttl, r.maxTTL)
	if ttl <= 0 {
		return
	}
	now := r.now()
	if len(r.cache) >= r.capacity {
		for k, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, k)
			}
		}
	}
	for k := range r.cache {
		if len(r.cache) < r.capacity {
			break
		}
		delete(r.cache, k)
	}
	r.cache[name] = cacheEntry{addrs: slices.Clone(addrs), expires: now.Add(ttl)}
}

// cacheLen returns the number of cached names.
func (r *UpstreamResolver) cacheLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the daemon's own Prometheus registry (no global state).
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec   // host (rule pattern), decision, status
	injections *prometheus.CounterVec   // host
	denials    *prometheus.CounterVec   // kind (tls|dns), rule
	dns        *prometheus.CounterVec   // decision
	latency    *prometheus.HistogramVec // decision
	ready      prometheus.Gauge
	enforced   prometheus.Gauge

	// placeholderMismatch counts another container's placeholder seen
	// (honeytoken.go), by where: header, sni, dns.
	placeholderMismatch *prometheus.CounterVec
}

// statsSource is what the collectors read at scrape time.
type statsSource struct {
	tls        func() tlsmitm.Stats
	dns        func() dnsredir.Stats
	nft        func(ctx context.Context) ([]netfilter.Counter, error)
	reapplies  func() uint64
	containers func() int
}

func newMetrics(src statsSource) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clauderon_requests_total",
		Help: "Requests and connections by host pattern, decision and HTTP status (0 for connections)."},
		[]string{"host", "decision", "status"})
	m.injections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clauderon_injections_total",
		Help: "Requests that got a real credential injected, by host pattern."}, []string{"host"})
	m.denials = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clauderon_denials_total",
		Help: "Refused connections, requests and DNS queries, by kind and rule or policy."}, []string{"kind", "rule"})
	m.dns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clauderon_dns_queries_total",
		Help: "DNS queries by audit decision."}, []string{"decision"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "clauderon_request_duration_seconds",
		Help: "Duration of intercepted requests and passthrough connections.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12)},
		[]string{"decision"})
	m.placeholderMismatch = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clauderon_placeholder_mismatch_total",
		Help: "Per-container placeholders seen from another container than the one they were handed to, by where (header, sni, dns)."},
		[]string{"seen_in"})
	m.ready = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clauderon_ready", Help: "1 once the daemon is ready."})
	m.enforced = prometheus.NewGauge(prometheus.GaugeOpts{Name: "clauderon_enforcement_intact",
		Help: "1 while the kernel ruleset matches the desired one, 0 when degraded."})
	m.reg.MustRegister(m.requests, m.injections, m.denials, m.dns, m.latency, m.placeholderMismatch, m.ready, m.enforced,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "clauderon_panics_total",
			Help: "Recovered panics in connection and query handlers."}, func() float64 {
			return float64(src.tls().Panics) + float64(src.dns().Panics)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "clauderon_ruleset_reapplies_total",
			Help: "Ruleset re-applies after drift."}, func() float64 { return float64(src.reapplies()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "clauderon_containers",
			Help: "Running containers on the bridge."}, func() float64 { return float64(src.containers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "clauderon_intercepted_connections",
			Help: "Open intercepted client connections (HTTP/1.x and h2)."}, func() float64 { return float64(src.tls().ActiveHTTPConns) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "clauderon_parked_connections",
			Help: "Of the intercepted connections, those idle long enough to wait for their next request on a small stack."},
			func() float64 { return float64(src.tls().ParkedConns) }),
		&nftCollector{counters: src.nft},
	)
	return m
}

// nftCollector exports the kernel's per-rule counters at scrape time.
type nftCollector struct {
	counters func(ctx context.Context) ([]netfilter.Counter, error)
}

var (
	nftPackets = prometheus.NewDesc("clauderon_nft_packets_total", "Packets matched per nftables rule (reset on re-apply).", []string{"rule"}, nil)
	nftBytes   = prometheus.NewDesc("clauderon_nft_bytes_total", "Bytes matched per nftables rule (reset on re-apply).", []string{"rule"}, nil)
)

func (c *nftCollector) Describe(ch chan<- *prometheus.Desc) { ch <- nftPackets; ch <- nftBytes }

func (c *nftCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cs, err := c.counters(ctx)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, k := range cs {
		if seen[k.Rule] { // one series per comment
			continue
		}
		seen[k.Rule] = true
		ch <- prometheus.MustNewConstMetric(nftPackets, prometheus.CounterValue, float64(k.Packets), k.Rule)
		ch <- prometheus.MustNewConstMetric(nftBytes, prometheus.CounterValue, float64(k.Bytes), k.Rule)
	}
}

// observe counts one audit record.
func (m *metrics) observe(r record) {
	if r.PlaceholderFrom != "" {
		m.placeholderMismatch.WithLabelValues(r.placeholderIn).Inc()
	}
	switch r.Kind {
	case "dns":
		m.dns.WithLabelValues(r.Decision).Inc()
		if r.Decision == "dns-deny" {
			m.denials.WithLabelValues("dns", r.Rule).Inc()
		}
		return
	}
	host := r.Rule
	if r.Decision == "deny" || host == "" {
		host = "-"
	}
	m.requests.WithLabelValues(host, r.Decision, strconv.Itoa(r.Status)).Inc()
	if r.AuthInjected {
		m.injections.WithLabelValues(host).Inc()
	}
	if r.Decision == "deny" || r.Status == http.StatusForbidden || r.Status == http.StatusMisdirectedRequest {
		m.denials.WithLabelValues("tls", r.Rule).Inc()
	}
	m.latency.WithLabelValues(r.Decision).Observe(r.Duration.Seconds())
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// checkMetricsAddress refuses a metrics listener on the bridge.
func checkMetricsAddress(addr string, subnet netip.Prefix, gw netip.Addr) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics.address %q: %w; expected e.g. 127.0.0.1:9464", addr, err)
	}
	if host == "" {
		return fmt.Errorf("metrics.address %q listens on every address, including the bridge; use e.g. 127.0.0.1:9464", addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a host name: resolved at listen time, checked below
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || subnet.Contains(ip) || ip == gw {
		return fmt.Errorf("metrics.address %q would be reachable from the containers' bridge %s; use e.g. 127.0.0.1:9464", addr, subnet)
	}
	return nil
}

// serveMetrics serves /metrics, /healthz (the daemon answers: liveness)
// and /readyz (ready and enforcing: readiness) on ln until ctx is done.
// ready says why the daemon is not ready, "" when it is.
func serveMetrics(ctx context.Context, ln net.Listener, m *metrics, ready func() string, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := ready(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return serveHTTP(ctx, srv, ln)
}

// serveHTTP runs srv on ln; cancel shuts it down gracefully (5s) and returns nil.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

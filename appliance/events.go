package appliance

import (
	"github.com/miekg/dns"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/tlsmitm"
)

// record is one audit line in the appliance's words; auditwire.go turns it
// into the audit package's Record. It never holds a header value.
type record struct {
	TS                        time.Time
	Container, Profile, SrcIP string
	Owner                     string // who made the container through clauderond
	Namespace, Pod, SA        string // a Kubernetes pod's (node mode)
	OrigDst                   string
	SNI, Host, Method, Path   string
	Status                    int
	Decision, Rule            string
	AuthInjected              bool
	Duration                  time.Duration
	Error                     string
	Kind                      string // "http" | "conn" | "dns"
	ContainerID, QType, RCode string
	BytesIn, BytesOut         int64
	// PlaceholderFrom names the container another container's placeholder
	// was handed to (honeytoken.go); placeholderIn says where it was seen.
	PlaceholderFrom string
	placeholderIn   string
	placeholders    []string // suffixes the injector saw (cut from the rule)
}

// sink receives audit records (the audit writer, plus metrics).
type sink interface{ write(record) }

// eventAdapter satisfies tlsmitm.Auditor and dnsredir.Auditor: one record
// per event, to the audit sink and the metrics.
type eventAdapter struct {
	out     sink
	metrics *metrics
	// owner names who made the container (by ID, else by source
	// address) through clauderond; nil or "" for anyone else's.
	owner func(id string, src netip.Addr) string
	// workload finds the pod (by ID, else by source address) to name its
	// namespace and service account; nil in host mode.
	workload func(id string, src netip.Addr) (identity.Container, bool)
	// placeholders checks the per-container placeholders a record carries;
	// nil checks nothing.
	placeholders *placeholderWatch

	mu     sync.Mutex
	counts map[string]uint64 // by decision, for status
}

var (
	_ tlsmitm.Auditor  = (*eventAdapter)(nil)
	_ dnsredir.Auditor = (*eventAdapter)(nil)
)

func (a *eventAdapter) Record(e tlsmitm.Event) {
	r := fromTLS(e)
	if a.owner != nil {
		r.Owner = a.owner(e.Client.ID, e.SrcIP.Addr())
	}
	a.namePod(&r, e.Client.ID, e.SrcIP.Addr())
	if from := a.placeholders.foreign(e.Client.ID, e.Client.Name, e.SrcIP.Addr(), seenInHeader, r.placeholders, true); from != "" {
		r.PlaceholderFrom, r.placeholderIn = from, seenInHeader
	} else if from := a.placeholders.foreign(e.Client.ID, e.Client.Name, e.SrcIP.Addr(), seenInSNI, suffixCandidates(e.SNI), false); from != "" {
		r.PlaceholderFrom, r.placeholderIn = from, seenInSNI
	}
	a.emit(r)
}

func (a *eventAdapter) RecordDNS(e dnsredir.Event) {
	r := fromDNS(e)
	if a.owner != nil {
		r.Owner = a.owner("", e.SrcIP)
	}
	a.namePod(&r, "", e.SrcIP)
	if from := a.placeholders.foreign("", e.Client, e.SrcIP, seenInDNS, suffixCandidates(e.Name), false); from != "" {
		r.PlaceholderFrom, r.placeholderIn = from, seenInDNS
	}
	a.emit(r)
}

// namePod fills a pod's namespace, name and service account into r.
func (a *eventAdapter) namePod(r *record, id string, src netip.Addr) {
	if a.workload == nil {
		return
	}
	if c, ok := a.workload(id, src); ok && c.Namespace != "" {
		r.Namespace, r.Pod, r.SA = c.Namespace, strings.TrimPrefix(c.Name, c.Namespace+"/"), c.ServiceAccount
	}
}

func (a *eventAdapter) emit(r record) {
	a.mu.Lock()
	if a.counts == nil {
		a.counts = map[string]uint64{}
	}
	a.counts[r.Decision]++
	a.mu.Unlock()
	if a.out != nil {
		a.out.write(r)
	}
	if a.metrics != nil {
		a.metrics.observe(r)
	}
}

// decisions returns how many records each decision had.
func (a *eventAdapter) decisions() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.counts)
}

func fromTLS(e tlsmitm.Event) record {
	r := record{TS: e.Time, Container: e.Client.Name, ContainerID: e.Client.ID, Profile: e.Client.Profile, SNI: e.SNI, Host: e.Host,
		Method: e.Method, Path: e.Path, Status: e.Status, Decision: string(e.Decision), Rule: e.Rule,
		AuthInjected: e.AuthInjected, Duration: e.Duration, Error: e.Err, BytesIn: e.BytesIn, BytesOut: e.BytesOut,
		Kind: "conn"}
	if e.SrcIP.IsValid() {
		r.SrcIP = e.SrcIP.Addr().String()
	}
	if e.OrigDst.IsValid() {
		r.OrigDst = e.OrigDst.String()
	}
	if e.Method != "" {
		r.Kind = "http"
	}
	r.Rule, r.placeholders = cutPlaceholders(r.Rule)
	if rest, ok := strings.CutPrefix(r.Rule, wouldDeny); ok {
		r.Decision, r.Rule = "would-deny", rest
	}
	return r
}

func fromDNS(e dnsredir.Event) record {
	r := record{TS: e.Time, Container: e.Client, Host: e.Name, Decision: e.Decision, Rule: e.Rule,
		Duration: e.Duration, Error: e.Err, Kind: "dns", QType: dns.TypeToString[e.Qtype], RCode: dns.RcodeToString[e.Rcode]}
	if e.SrcIP.IsValid() {
		r.SrcIP = e.SrcIP.String()
	}
	if rest, ok := strings.CutPrefix(e.Rule, wouldDeny); ok {
		r.Decision, r.Rule = "would-deny", rest
	}
	return r
}

package tlsmitm

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/clauderon/clauderond/tlsmitm/localca"
)

// certManager serves leaf certificates for intercepted names: certmagic
// keeps them (in memory and under StateDir/certs) and renews them; the
// local CA issues them. Nothing here touches the network.
type certManager struct {
	ca    *localca.CA
	cache *certmagic.Cache
	// handshake is the on-demand config used during handshakes: names not
	// issued at start-up (wildcard rules) are issued on first use if the
	// DecisionFunc agrees. manage has no OnDemand so ManageSync issues now.
	handshake *certmagic.Config
	manage    *certmagic.Config
	// issueLimit caps on-demand issuance: a wildcard rule would otherwise
	// let a container mint a leaf (a key, a signature, a file under
	// StateDir/certs) for every random name under the suffix.
	issueLimit *windowLimiter
}

// Bounds of on-demand issuance (names under wildcard intercept rules; exact
// names are issued at start-up and on reload, outside these bounds).
const (
	onDemandPerMinute = 60
	leafCacheCapacity = 4096 // leaves in memory; certmagic evicts beyond
)

// admitOnDemand applies issueLimit to a name about to be issued or loaded
// on demand.
func (m *certManager) admitOnDemand(name string, logger *slog.Logger) error {
	ok, suppressed := m.issueLimit.allow(time.Now())
	if !ok {
		return fmt.Errorf("%w: %s: more than %d on-demand certificates in a minute", ErrCertificate, name, onDemandPerMinute)
	}
	if suppressed > 0 {
		logger.Warn("on-demand certificate issuance was rate-limited", "refused", suppressed, "limit_per_minute", onDemandPerMinute)
	}
	return nil
}

// newCertManager loads or creates the CA in stateDir and builds certmagic
// around it. allow is the DecisionFunc's policy (is name intercepted now?).
func newCertManager(stateDir string, lifetime time.Duration, logger *slog.Logger, allow func(name string) error) (*certManager, error) {
	ca, err := localca.LoadOrCreate(stateDir)
	if err != nil {
		return nil, err
	}
	issuer := localca.NewIssuer(ca, lifetime)
	zl := newZapToSlog(logger.With("subcomponent", "certmagic"))
	m := &certManager{ca: ca, issueLimit: newWindowLimiter(onDemandPerMinute, time.Minute)}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.manage, nil },
		Capacity:         leafCacheCapacity,
		Logger:           zl,
	})
	base := certmagic.Config{
		Issuers:    []certmagic.Issuer{issuer},
		KeySource:  certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		OCSP:       certmagic.OCSPConfig{DisableStapling: true},
		DisableARI: true,
		Storage:    &certmagic.FileStorage{Path: filepath.Join(stateDir, "certs")},
		Logger:     zl,
	}
	m.manage = certmagic.New(m.cache, base)
	onDemand := base
	onDemand.OnDemand = &certmagic.OnDemandConfig{
		DecisionFunc: func(_ context.Context, name string) error {
			if err := allow(name); err != nil {
				return err
			}
			return m.admitOnDemand(name, logger)
		},
	}
	m.handshake = certmagic.New(m.cache, onDemand)
	return m, nil
}

// decide is the DecisionFunc policy: never an IP, only names the router
// intercepts right now.
func decideCert(r Router, name string) error {
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("%w: %s is an IP address", ErrCertificate, name)
	}
	if d, _ := r.Route(normalizeName(name)); d != Intercept {
		return fmt.Errorf("%w: %s is not intercepted", ErrCertificate, name)
	}
	return nil
}

// manageHosts issues (or loads from storage) the leaves for hosts now.
func (m *certManager) manageHosts(ctx context.Context, hosts []string) error {
	if len(hosts) == 0 {
		return nil
	}
	if err := m.manage.ManageSync(ctx, hosts); err != nil {
		return fmt.Errorf("issuing leaf certificates for %v: %w", hosts, err)
	}
	return nil
}

// getCertificate is the terminator's tls.Config.GetCertificate.
func (m *certManager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := m.handshake.GetCertificate(hello)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCertificate, hello.ServerName, err)
	}
	return cert, nil
}

func (m *certManager) stop() { m.cache.Stop() }

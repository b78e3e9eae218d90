package tlsmitm_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/clauderon/clauderond/tlsmitm"
)

// injector is what appliance's ten-line adapter around the injector package
// looks like from here.
type injector struct{}

func (injector) Apply(req *http.Request, host string, c tlsmitm.Client) (string, bool, error) {
	req.Header.Set("Authorization", "Bearer "+os.Getenv("CLAUDE_CODE_OAUTH_TOKEN"))
	return "anthropic", true, nil
}

func (injector) RedactResponse(host string, h http.Header) {}

// Wiring the terminator: a StaticRouter from the config's rules and egress
// allow list, the injector adapter, the bridge subnet denied to upstream
// dials, and the listener the nftables redirect points at.
func ExampleNew() {
	router, err := tlsmitm.NewStaticRouter(
		[]string{"api.anthropic.com", "api.github.com"}, // rules: intercepted
		[]string{"registry.npmjs.org", "*.pkg.dev"},     // egress.allow: passed through
	)
	if err != nil {
		panic(err)
	}
	srv, err := tlsmitm.New(tlsmitm.Config{
		StateDir:       "/root/.clauderon",
		Router:         router,
		Injector:       injector{},
		DeniedPrefixes: []netip.Prefix{netip.MustParsePrefix("10.213.0.0/24")},
		Logger:         slog.Default(),
	})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "10.213.0.1:8443")
	if err != nil {
		panic(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	_ = srv.Serve(ctx, ln) // nil after SIGTERM and a drain
}

package tlsmitm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"syscall"
)

// Sentinel errors. Code that returns them wraps them with context; this file
// is the one place that maps them to an HTTP status, a TLS alert and an
// audit decision.
var (
	// ErrNoSNI: the ClientHello carried no server name.
	ErrNoSNI = errors.New("client hello has no server name")
	// ErrIPLiteralSNI: the server name is an IP address.
	ErrIPLiteralSNI = errors.New("server name is an IP address")
	// ErrNoRoute: the router denies the server name (no rule, no allow entry):
	// a TLS alert for a new connection, a 403 for a request on a kept-alive
	// connection whose name a reload stopped intercepting.
	ErrNoRoute = errors.New("no route for server name")
	// ErrNotClientHello: the first bytes are not a TLS ClientHello.
	ErrNotClientHello = errors.New("not a TLS client hello")
	// ErrHelloTooLarge: the ClientHello exceeded the size cap.
	ErrHelloTooLarge = errors.New("client hello exceeds size limit")
	// ErrSNIMismatch: an intercepted request's Host differs from the SNI.
	ErrSNIMismatch = errors.New("request host does not match TLS server name")
	// ErrUpstreamDenied: the upstream address is refused by the address policy.
	ErrUpstreamDenied = errors.New("upstream address denied by policy")
	// ErrForbidden: the Injector refuses the request (wrap it to get a 403).
	ErrForbidden = errors.New("request forbidden by policy")
	// ErrUpstreamDNS: the upstream name did not resolve to any address.
	ErrUpstreamDNS = errors.New("upstream name did not resolve")
	// ErrCertificate: no leaf certificate could be obtained for the name.
	ErrCertificate = errors.New("no certificate for server name")
	// ErrMethodNotAllowed: TRACE, TRACK or (h2) CONNECT on an intercepted
	// connection. It is refused with 405 before the Injector runs: an
	// upstream that echoes TRACE would hand the credential back, and
	// CONNECT would tunnel past it. Audited as a deny.
	ErrMethodNotAllowed = errors.New("method not allowed on an intercepted connection")
)

// TLS alert descriptions (RFC 8446 section 6.2).
const (
	alertInternalError    uint8 = 80
	alertAccessDenied     uint8 = 49
	alertUnrecognizedName uint8 = 112
)

// Upstream error kinds, as sent in the 502 body and X-Clauderon-Error.
const (
	KindDNS     = "dns"
	KindConnect = "connect"
	KindTLS     = "tls"
	KindTimeout = "timeout"
	KindRefused = "refused"
)

// alertFor returns the TLS alert sent when a connection is refused for err.
func alertFor(err error) uint8 {
	switch {
	case errors.Is(err, ErrNoSNI), errors.Is(err, ErrIPLiteralSNI):
		return alertUnrecognizedName
	case errors.Is(err, ErrNoRoute):
		return alertAccessDenied
	default:
		return alertInternalError
	}
}

// httpError is what errorResponse writes for an error.
type httpError struct {
	status  int
	typ     string // "error.type" in the JSON body
	kind    string // "error.kind" and X-Clauderon-Error; empty for non-upstream errors
	message string
}

// classifyHTTP maps an error from the request path (Rewrite, Injector,
// transport, dialer) to the response the client gets.
func classifyHTTP(err error) httpError {
	switch {
	case errors.Is(err, errBadRequest):
		return httpError{http.StatusBadRequest, "clauderon_bad_request", "", err.Error()}
	case errors.Is(err, ErrMethodNotAllowed):
		return httpError{http.StatusMethodNotAllowed, "clauderon_method_not_allowed", "", err.Error()}
	case errors.Is(err, ErrSNIMismatch):
		return httpError{http.StatusMisdirectedRequest, "clauderon_misdirected_request", "", err.Error()}
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrNoRoute):
		return httpError{http.StatusForbidden, "clauderon_forbidden", "", err.Error()}
	case errors.Is(err, errInjector):
		return httpError{http.StatusInternalServerError, "clauderon_injector_error", "", err.Error()}
	case errors.Is(err, errTooMany):
		return httpError{http.StatusServiceUnavailable, "clauderon_overloaded", "", err.Error()}
	case errors.Is(err, errBodyIdle):
		return httpError{http.StatusRequestTimeout, "clauderon_request_timeout", "", err.Error()}
	case errors.Is(err, errExpectation):
		return httpError{http.StatusExpectationFailed, "clauderon_expectation_failed", "", err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, errClientClosed):
		// The client went away; nobody reads this, but the audit gets 499.
		return httpError{statusClientClosed, "clauderon_client_closed", "", "client closed the request"}
	}
	return httpError{http.StatusBadGateway, "clauderon_upstream_error", upstreamKind(err), err.Error()}
}

// auditDecision is the audit decision of an intercepted request that
// failed with err: a method the terminator itself refuses is a deny.
func auditDecision(err error) Decision {
	if errors.Is(err, ErrMethodNotAllowed) {
		return Deny
	}
	return Intercept
}

// closesConnection reports whether the daemon's own answer with status
// ends the client connection: after a 421 the client must open a new
// connection for the other name (it may have coalesced them), and after a
// 403 or 405 there is nothing more this connection should be used for
// (HTTP/1.x only: on h2 a GOAWAY sent with a 403 trips clients, and the
// next stream gets its own decision anyway).
func closesConnection(status int) bool {
	switch status {
	case http.StatusMisdirectedRequest, http.StatusForbidden, http.StatusMethodNotAllowed:
		return true
	}
	return false
}

// statusClientClosed is nginx's 499, used only in audit records.
const statusClientClosed = 499

// errInjector marks errors returned by Injector.Apply that do not wrap
// ErrForbidden.
var errInjector = errors.New("injector failed")

// upstreamKind names the failing stage of an upstream exchange.
func upstreamKind(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recHdr tls.RecordHeaderError
	var alertErr tls.AlertError
	switch {
	case errors.Is(err, ErrUpstreamDenied):
		return KindRefused
	case errors.Is(err, ErrUpstreamDNS), errors.As(err, &dnsErr):
		return KindDNS
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return KindTimeout
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr),
		errors.As(err, &recHdr), errors.As(err, &alertErr), errors.Is(err, errTLSHandshake):
		return KindTLS
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindConnect
	}
	return KindConnect
}

// errBodyIdle: the request body made no progress for BodyIdleTimeout; 408
// when no response has started, and the upstream request is cancelled.
var errBodyIdle = errors.New("request body idle")

// retryAfterSeconds is the Retry-After of a 503 for a fair-share limit: the
// requests holding the slots are usually API calls of seconds.
const retryAfterSeconds = "1"

// errBadRequest marks a request the terminator will not relay as sent
// (400).
var errBadRequest = errors.New("malformed request")

// errTLSHandshake marks failures of the upstream TLS handshake.
var errTLSHandshake = errors.New("upstream TLS handshake failed")

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) { // the common case, without errors.As's reflection
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

package tlsmitm

import (
	"errors"
	"io"
	"net"
	"time"
)

// PolicyBadHello is the audit rule for connections without a usable hello.
const PolicyBadHello = "bad-client-hello"

// refuse audits a refused connection and, for a parsed hello, sends a fatal
// TLS alert (unrecognized_name for hellos we cannot route by name,
// access_denied for names the policy denies). A 403 page would need a
// certificate for a name we do not intercept, so there is none.
func (s *Server) refuse(c net.Conn, info *connInfo, err error, alert bool) {
	rule := info.rule
	switch {
	case errors.Is(err, ErrNoSNI):
		rule = PolicyNoSNI
	case errors.Is(err, ErrIPLiteralSNI):
		rule = PolicyIPLiteral
	case !alert:
		rule = PolicyBadHello
	}
	if alert {
		s.stats.denied.Add(1)
	}
	s.audit(info.st, Event{
		Time: info.start, Client: info.client, SrcIP: info.src, OrigDst: info.origDst,
		SNI: info.sni, Decision: Deny, Rule: rule,
		Duration: time.Since(info.start), Err: err.Error(),
	})
	s.events.Debug("refused connection", "src", info.src.String(), "sni", info.sni, "alpn", info.alpn, "rule", rule, "err", err.Error())
	if alert {
		sendAlert(c, alertFor(err))
	}
}

// sendAlert writes a fatal TLS alert record, half-closes, and drains briefly
// so the client reads the alert instead of a reset.
func sendAlert(c net.Conn, desc uint8) {
	c.SetDeadline(time.Now().Add(time.Second))
	// ContentType alert(21), legacy version TLS 1.2, length 2, fatal(2), desc.
	if _, err := c.Write([]byte{21, 3, 3, 0, 2, 2, desc}); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

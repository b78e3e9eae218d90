package tlsmitm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"syscall"
	"time"
)

// roundTrip writes the request head (and starts the body) on x.uc and reads
// the response head, skipping interim responses (103 is forwarded).
func (x *h1Exchange) roundTrip(upgrade string, teTrailers bool) (*http.Response, error) {
	r, uc := x.r, x.uc
	writeRequestHead(uc.bw, r, upgrade, teTrailers)
	x.bodyDone = nil
	if hasBody(r) {
		x.bodyDone = make(chan error, 1)
		x.bd = bodyDeadline{conn: x.tc, rd: slidingDeadline{idle: x.s.cfg.BodyIdleTimeout}}
		// Flushed whenever the client has sent nothing more yet, and after
		// every chunk of a chunked body (a chunk header that arrived only in
		// part leaves bytes buffered while the next read waits for the rest).
		hooks := pumpHooks{
			beforeRead: x.bd.extend,
			flushNow:   func() bool { return r.ContentLength < 0 || x.br.Buffered() == 0 },
		}
		readErr, client, done := x.bd.readErr, &x.hc.socket.batchConn, x.bodyDone
		x.s.workers.run(func() { x.s.sendBody(uc, r, hooks, readErr, client, done) })
	} else if err := uc.bw.Flush(); err != nil {
		return nil, fmt.Errorf("writing request to upstream: %w", err)
	}
	if d := x.s.cfg.ResponseHeaderTimeout; d > 0 {
		uc.conn.SetReadDeadline(time.Now().Add(d))
		defer uc.conn.SetReadDeadline(time.Time{})
	}
	watch := &x.hc.watch
	watch.start(uc)
	defer watch.stop()
	for interim := 0; ; interim++ {
		resp, err := uc.readHead(r, interim)
		if errors.Is(err, errTooManyInterim) {
			return nil, err
		}
		if err != nil && watch.stop() {
			err = fmt.Errorf("%w while waiting for the upstream: %w", errClientClosed, err)
		}
		if err != nil {
			if x.bodyDone != nil {
				// A failed request body (the client went away) is the cause.
				uc.Close()
				berr := <-x.bodyDone
				x.bodyDone = nil
				x.bodyOutOfStep = true // the request body may be partly read
				if errors.Is(berr, errClientClosed) || errors.Is(berr, errBodyIdle) {
					return nil, berr
				}
			}
			return nil, fmt.Errorf("reading response from upstream: %w", err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if resp.StatusCode == http.StatusEarlyHints {
			x.st.injector.RedactResponse(x.rs.info.sni, resp.Header)
			x.writeHead(resp, "")
			if err := x.flushClient(); err != nil {
				return nil, err
			}
		}
	}
}

// maxInterimResponses caps 1xx responses before the final one (as
// http.Transport does).
const maxInterimResponses = 5

var errTooManyInterim = fmt.Errorf("reading response from upstream: more than %d interim (1xx) responses", maxInterimResponses)

// readHead reads the response head that follows interim earlier ones,
// bounded by maxResponseHeadBytes and maxInterimResponses.
func (uc *upstreamConn) readHead(r *http.Request, interim int) (*http.Response, error) {
	if interim > maxInterimResponses {
		return nil, errTooManyInterim
	}
	uc.limitHead()
	resp, err := http.ReadResponse(uc.br, r)
	uc.unlimit()
	if errors.Is(err, errHeaderTooLarge) {
		err = fmt.Errorf("upstream response head exceeds %d bytes", maxResponseHeadBytes)
	}
	return resp, err
}

// sendBody streams the request body upstream (re-chunked when its length is
// unknown), flushing when hooks.flushNow says so; readErr names a failed
// read of the client's body (the idle deadline, or the client gone). With
// client, the socket the body is read from, a bulk body is batched both
// ways (batchio.go). It runs on a worker of its own (workers.go), reports
// on done, and touches the Server only to report a panic.
func (s *Server) sendBody(uc *upstreamConn, r *http.Request, hooks pumpHooks, readErr func(error) error, client *batchConn, done chan<- error) {
	batched := client != nil && uc.bc != nil && mayBeLarge(r.ContentLength)
	if batched {
		uc.bc.corkWrites()
		client.onBlock = uc.bc
	}
	var err error
	defer func() {
		if v := recover(); v != nil {
			s.recordPanic(v, "panic sending an intercepted request body")
			uc.Close()
			err = fmt.Errorf("internal error sending request body: %v", v)
		}
		if batched { // before done: the exchange goes on with both sockets
			client.onBlock = nil
			if cerr := uc.bc.uncork(); err == nil && cerr != nil {
				err = fmt.Errorf("writing request body to upstream: %w", cerr)
			}
		}
		done <- err
	}()
	err = copyRequestBody(uc, r, hooks, readErr)
}

func copyRequestBody(uc *upstreamConn, r *http.Request, hooks pumpHooks, readErr func(error) error) error {
	var w io.Writer = uc.bw
	var cw io.WriteCloser
	if r.ContentLength < 0 {
		cw = httputil.NewChunkedWriter(uc.bw)
		w = cw
	}
	_, rerr, werr := pumpBody(r.Body, w, uc.bw, hooks)
	if werr != nil {
		return fmt.Errorf("writing request body to upstream: %w", werr)
	}
	if rerr != nil {
		// The upstream must not take a truncated body for a whole one,
		// nor answer it before the exchange stops reading: close the
		// socket under TLS, with no close_notify to answer.
		uc.abort()
		return readErr(rerr)
	}
	if cw != nil {
		// "0\r\n\r\n": request trailers are not forwarded (they would
		// bypass the Injector's header rules, and APIs do not use them).
		cw.Close()
		uc.bw.WriteString("\r\n")
	}
	if err := uc.bw.Flush(); err != nil {
		return fmt.Errorf("writing request body to upstream: %w", err)
	}
	return nil
}

// bodyGrace is how long a complete response waits for the request body
// sender to report. It normally has already, or is about to (its last read
// returning EOF can come after the upstream answered); a sender still busy
// after that is stuck on an upstream that answered without reading the
// whole body, or on a client still sending one.
const bodyGrace = time.Second

// waitBody waits for the request body sender. When the upstream has not
// taken the whole body, the upstream connection is closed to stop the
// sender (and is not reused), and so is the client's.
func (x *h1Exchange) waitBody() error {
	if x.bodyDone == nil {
		return nil
	}
	err := waitSender(x.bodyDone, func() {
		x.uc.Close()
		x.bd.stop() // a sender waiting on the client
	})
	x.bodyDone = nil
	if err != nil {
		x.bodyOutOfStep = true
		x.uc.Close()
		x.setUpstream(nil)
	}
	return err
}

// waitSender returns the request body sender's result, stopping it with
// stop when it has not finished within bodyGrace.
func waitSender(done <-chan error, stop func()) error {
	select {
	case err := <-done:
		return err
	default:
	}
	grace := time.NewTimer(bodyGrace)
	defer grace.Stop()
	select {
	case err := <-done:
		return err
	case <-grace.C:
		stop()
		if err := <-done; err != nil {
			return err
		}
		return errors.New("upstream answered before reading the whole request body")
	}
}

// abortUpstream closes the upstream connection still held (a failed or
// cut exchange) and waits for the body sender.
func (x *h1Exchange) abortUpstream() {
	if x.uc == nil {
		return
	}
	x.uc.Close()
	if x.bodyDone != nil {
		x.bd.stop() // a sender waiting on the client
		<-x.bodyDone
		x.bodyDone = nil
		x.bodyOutOfStep = true
	}
	x.setUpstream(nil)
}

// isStaleConnError reports whether a request on a reused upstream
// connection failed the way a connection the peer had already closed does.
func isStaleConnError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

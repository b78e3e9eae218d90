package tlsmitm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The upstream leg of h2 clients. The h2 frontend (h2serve.go) runs each
// request on a worker of its own (workers.go), which sends it to the
// upstream over the HTTP/1.1 relay's pool: no ReverseProxy, and no
// http.Transport with its own h2 connection, reader goroutine and channel
// handoffs, which were half of an h2 request's cost. gRPC
// (application/grpc…) needs h2 to its upstream and keeps ReverseProxy and
// the h2 transport (intercept_h2.go).

// needsH2Upstream reports whether a request from an h2 client must reach
// its upstream over h2 too.
func needsH2Upstream(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// h2Exchange is one request of an h2 client relayed to an HTTP/1.1
// upstream.
type h2Exchange struct {
	s  *Server
	st *state
	rs *reqState
	r  *http.Request
	w  *statusWriter

	uc       *upstreamConn
	up       atomic.Pointer[upstreamConn] // what cut closes
	bodyDone chan error                   // the request body sender's result; nil without a body
}

// relayH2 relays r (whose context is rs) and answers on rs.sw. A failure
// after the response head was sent resets the stream (http.ErrAbortHandler),
// so the client cannot take a cut body for a whole one.
func (s *Server) relayH2(rs *reqState, r *http.Request) {
	x := &h2Exchange{s: s, st: rs.st, rs: rs, r: r, w: &rs.sw}
	defer x.abortUpstream()
	// The client gone (stream reset, connection closed) or the drain
	// deadline: close the upstream connection, so the upstream stops
	// working for nobody and a blocked read returns.
	stopCut := context.AfterFunc(rs.Context, x.cut)
	defer stopCut()

	delete(r.Header, "Expect") // the frontend answers 100-continue when the body is first read
	teTrailers := s.prepareRelay(rs, r)
	if rs.err != nil {
		s.errorResponse(x.w, r, rs.err)
		return
	}

	var resp *http.Response
	for attempt := 0; ; attempt++ {
		// A client gone already (a stream reset at once, over and over)
		// must not take pooled connections only to close them: the pool
		// serves every client of the host.
		if rs.Context.Err() != nil {
			s.errorResponse(x.w, r, x.cause(context.Canceled))
			return
		}
		uc, err := x.st.h1pool.get(rs, rs.host, attempt > 0)
		if err != nil {
			s.errorResponse(x.w, r, x.cause(err))
			return
		}
		if rs.Context.Err() != nil { // nothing written on it: it goes back
			x.st.h1pool.put(uc)
			s.errorResponse(x.w, r, x.cause(context.Canceled))
			return
		}
		x.setUpstream(uc)
		if rs.Context.Err() != nil { // cut may have run before uc was there to close
			s.errorResponse(x.w, r, x.cause(context.Canceled))
			return
		}
		resp, err = x.roundTrip(teTrailers)
		if err == nil {
			break
		}
		// A pooled connection the upstream closed meanwhile: sent again
		// once, on a new connection, when that is harmless (h1relay.go).
		stale := uc.reused && attempt == 0 && replayable(r) && isStaleConnError(err) && rs.Context.Err() == nil
		x.abortUpstream()
		if !stale {
			s.errorResponse(x.w, r, err)
			return
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		s.errorResponse(x.w, r, errors.New("upstream switched protocols on a request that did not ask to"))
		return
	}
	x.respond(resp, stopCut)
}

// cause is err, or errClientClosed when the client is what went away.
func (x *h2Exchange) cause(err error) error {
	if x.rs.Context.Err() != nil && !errors.Is(err, errClientClosed) {
		return fmt.Errorf("%w while waiting for the upstream: %w", errClientClosed, err)
	}
	return err
}

func (x *h2Exchange) setUpstream(uc *upstreamConn) {
	x.uc = uc
	x.up.Store(uc)
}

// cut runs when the request's context ends first.
func (x *h2Exchange) cut() {
	if uc := x.up.Load(); uc != nil {
		uc.abort()
	}
}

// roundTrip writes the request head (and starts the body) on x.uc and reads
// the response head; a 103 is forwarded, other interim responses skipped.
func (x *h2Exchange) roundTrip(teTrailers bool) (*http.Response, error) {
	r, uc := x.r, x.uc
	writeRequestHead(uc.bw, r, "", teTrailers)
	if hasBody(r) {
		x.bodyDone = make(chan error, 1)
		// Each read is what the client's DATA frames delivered: send it on
		// (the stream's own idle deadline is countingBody's, serveRequest).
		hooks := pumpHooks{flushNow: func() bool { return true }}
		done := x.bodyDone
		x.s.workers.run(func() { x.s.sendBody(uc, r, hooks, h2BodyReadErr, nil, done) })
	} else if err := uc.bw.Flush(); err != nil {
		return nil, x.cause(fmt.Errorf("writing request to upstream: %w", err))
	}
	if d := x.s.cfg.ResponseHeaderTimeout; d > 0 {
		uc.conn.SetReadDeadline(time.Now().Add(d))
		defer uc.conn.SetReadDeadline(time.Time{})
	}
	for interim := 0; ; interim++ {
		resp, err := uc.readHead(r, interim)
		if errors.Is(err, errTooManyInterim) {
			return nil, err
		}
		if err != nil {
			if x.bodyDone != nil {
				// A body that stalled (errBodyIdle) is the cause; a sender
				// cut here reports nothing of interest.
				if berr := x.stopBody(); errors.Is(berr, errBodyIdle) {
					return nil, berr
				}
			}
			return nil, x.cause(fmt.Errorf("reading response from upstream: %w", err))
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if resp.StatusCode == http.StatusEarlyHints {
			x.st.injector.RedactResponse(x.rs.info.sni, resp.Header)
			h := x.w.Header()
			maps.Copy(h, resp.Header)
			x.w.WriteHeader(resp.StatusCode)
			clear(h) // not part of the final response (ReverseProxy does the same)
		}
	}
}

// h2BodyReadErr names a failed read of an h2 client's request body: the
// idle deadline (countingBody already says so), or the client gone.
func h2BodyReadErr(err error) error {
	if errors.Is(err, errBodyIdle) {
		return err
	}
	return fmt.Errorf("%w: reading request body: %w", errClientClosed, err)
}

// respond relays a final response: head, body, trailers.
func (x *h2Exchange) respond(resp *http.Response, stopCut func() bool) {
	rs, r, w := x.rs, x.r, x.w
	rs.st.injector.RedactResponse(rs.info.sni, resp.Header)
	removeHopByHop(resp.Header)
	h := w.Header()
	maps.Copy(h, resp.Header)
	hasBody := r.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent &&
		resp.StatusCode != http.StatusNotModified
	if hasBody {
		// The length as the upstream framed it (a HEAD's or 304's
		// Content-Length describes another entity and passes as sent).
		delete(h, "Content-Length")
		if resp.ContentLength >= 0 {
			h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
		}
	}
	w.WriteHeader(resp.StatusCode)
	if !hasBody {
		x.finish(resp, stopCut)
		return
	}
	// Unknown length or an event stream: every write goes out at once, as
	// ReverseProxy does. Known length: whenever the upstream has nothing
	// more buffered and more is to come; the last bytes go with
	// END_STREAM when the handler returns.
	streaming := resp.ContentLength < 0 || isEventStream(resp.Header)
	flush := streamFlusher{w}
	if x.uc.br.Buffered() == 0 { // the body is not here yet: send the head now
		flush.Flush()
	}
	_, rerr, werr := pumpBody(resp.Body, w, flush, pumpHooks{
		flushNow: func() bool { return streaming || (x.uc.br.Buffered() == 0 && w.n < resp.ContentLength) },
	})
	if werr != nil {
		rs.err = fmt.Errorf("%w: writing response: %w", errClientClosed, werr)
		return
	}
	if rerr != nil {
		rs.err = x.cause(fmt.Errorf("reading response body from upstream: %w", rerr))
		x.abortUpstream()
		panic(http.ErrAbortHandler) // reset the stream: the body is cut
	}
	if len(resp.Trailer) > 0 {
		rs.st.injector.RedactResponse(rs.info.sni, resp.Trailer)
		for k, vv := range resp.Trailer {
			h[http.TrailerPrefix+k] = vv
		}
	}
	x.finish(resp, stopCut)
}

// finish waits for the request body sender and pools the upstream
// connection when the exchange left it in step.
func (x *h2Exchange) finish(resp *http.Response, stopCut func() bool) {
	if x.bodyDone != nil {
		err := waitSender(x.bodyDone, x.stopSender)
		x.bodyDone = nil
		if err != nil {
			if errors.Is(err, errClientClosed) || errors.Is(err, errBodyIdle) {
				x.rs.err = err
			}
			return // abortUpstream closes it
		}
	}
	// stopCut false: the client went away meanwhile and cut may be
	// closing the connection.
	if !resp.Close && stopCut() {
		x.st.h1pool.put(x.uc)
		x.setUpstream(nil)
	}
}

// stopSender makes a request body sender that is still running return:
// its writes fail on the closed upstream connection, its reads on the
// closed body.
func (x *h2Exchange) stopSender() {
	x.uc.abort()
	x.r.Body.Close()
}

// stopBody stops the sender and returns its result.
func (x *h2Exchange) stopBody() error {
	x.stopSender()
	err := <-x.bodyDone
	x.bodyDone = nil
	return err
}

// abortUpstream closes the upstream connection still held (a failed or
// cut exchange) and waits for the body sender.
func (x *h2Exchange) abortUpstream() {
	if x.uc == nil {
		return
	}
	x.uc.abort()
	if x.bodyDone != nil {
		x.stopBody()
	}
	x.setUpstream(nil)
}

// streamFlusher flushes an h2 response writer for pumpBody; a failed
// flush shows as the next write's error.
type streamFlusher struct{ w *statusWriter }

func (f streamFlusher) Flush() error {
	f.w.Flush()
	return nil
}

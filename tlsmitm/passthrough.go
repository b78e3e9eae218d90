package tlsmitm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// passthrough splices c, untouched, to the SNI host's real address on 443
// (resolved here, never the address the client dialled), starting with the
// recorded hello bytes. It audits one Event per connection.
func (s *Server) passthrough(c net.Conn, hello []byte, info *connInfo) {
	s.stats.passthrough.Add(1)
	ev := Event{
		Time: info.start, Client: info.client, SrcIP: info.src, OrigDst: info.origDst,
		SNI: info.sni, Decision: Passthrough, Rule: info.rule,
	}
	defer func() {
		ev.Duration = time.Since(info.start)
		s.audit(info.st, ev)
	}()
	ctx, cancel := context.WithTimeout(s.baseCtx, s.cfg.DialTimeout)
	up, err := s.dialUpstream(ctx, info.st, info.sni, "443")
	cancel()
	if err != nil {
		s.stats.upstreamErrors.Add(1)
		ev.Err = fmt.Sprintf("%s: %v", upstreamKind(err), err)
		return
	}
	s.trackRaw(up, true)
	defer func() {
		s.trackRaw(up, false)
		up.Close()
	}()
	sp := &splice{client: c, upstream: up, idle: s.cfg.PassthroughIdleTimeout}
	sp.touch()
	ev.BytesIn, ev.BytesOut, err = sp.run(hello)
	if err != nil {
		ev.Err = err.Error()
	}
}

// splice copies both ways with half-close and a shared idle timeout: a
// direction that has been quiet for idle only gives up if the other one
// has been quiet too.
type splice struct {
	client, upstream net.Conn
	idle             time.Duration
	last             atomic.Int64 // unix nanos of the last byte either way
}

func (sp *splice) touch() { sp.last.Store(time.Now().UnixNano()) }

func (sp *splice) run(hello []byte) (in, out int64, err error) {
	sp.upstream.SetWriteDeadline(time.Now().Add(sp.idle))
	if _, err := sp.upstream.Write(hello); err != nil {
		return 0, 0, fmt.Errorf("writing client hello upstream: %w", err)
	}
	var wg sync.WaitGroup
	var upErr error
	wg.Add(1)
	go spliceUpstreamToClient(sp, &out, &upErr, &wg)
	in, inErr := spliceClientToUpstream(sp)
	wg.Wait()
	return in + int64(len(hello)), out, errors.Join(inErr, upErr)
}

// spliceClientToUpstream copies client → upstream, then half-closes upstream.
func spliceClientToUpstream(sp *splice) (int64, error) {
	n, err := sp.copy(sp.upstream, sp.client)
	closeWrite(sp.upstream)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		sp.upstream.Close() // unblock the other direction
		return n, fmt.Errorf("client to upstream: %w", err)
	}
	return n, nil
}

// spliceUpstreamToClient copies upstream → client, then half-closes client.
func spliceUpstreamToClient(sp *splice, n *int64, errp *error, wg *sync.WaitGroup) {
	defer wg.Done()
	var err error
	*n, err = sp.copy(sp.client, sp.upstream)
	closeWrite(sp.client)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		sp.client.Close()
		*errp = fmt.Errorf("upstream to client: %w", err)
	}
}

func (sp *splice) copy(dst, src net.Conn) (int64, error) {
	buf := make([]byte, 32<<10)
	var total int64
	for {
		src.SetReadDeadline(time.Now().Add(sp.idle))
		n, err := src.Read(buf)
		if n > 0 {
			sp.touch()
			dst.SetWriteDeadline(time.Now().Add(sp.idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return total, nil
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, sp.last.Load())) < sp.idle:
			// the other direction is alive; keep waiting
		case errors.Is(err, os.ErrDeadlineExceeded):
			return total, fmt.Errorf("idle for %s: %w", sp.idle, err)
		default:
			return total, err
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

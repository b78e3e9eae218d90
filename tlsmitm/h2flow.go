package tlsmitm

import (
	"golang.org/x/net/http2"
)

// The h2 connection's SETTINGS and its flow control toward the client:
// what the client may send (the windows this side grants as the requests
// read their bodies) and the client's own windows and frame size, which
// bound what the streams write (h2wire.go).

func (c *h2Conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	// As net/http's server: a frame of more than 100 settings, or one
	// setting twice, is an attack on the work each one costs.
	if f.NumSettings() > 100 || f.HasDuplicates() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			return c.w.setInitialWindow(s.Val, c.openStreams())
		case http2.SettingMaxFrameSize:
			c.w.mu.Lock()
			c.w.maxFrame = min(int(s.Val), h2MaxDataFrame)
			c.w.mu.Unlock()
		case http2.SettingHeaderTableSize:
			c.w.mu.Lock()
			c.w.henc.SetMaxDynamicTableSizeLimit(s.Val)
			c.w.mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.w.control(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
}

func (c *h2Conn) onData(f *http2.DataFrame) error {
	n := int32(f.Length)
	c.mu.Lock()
	if n > c.recvWindow {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	c.mu.Unlock()
	st, err := c.stream(f.StreamID)
	if st == nil {
		c.consumed(n, 0, 0)
		return err
	}
	code, kept := st.onData(f)
	switch {
	case code != 0:
		c.consumed(n, 0, 0)
		c.resetStream(st, code)
	case !kept:
		c.consumed(n, 0, 0)
	default:
		if pad := n - int32(len(f.Data())); pad > 0 {
			c.consumed(pad, 0, 0)
		}
	}
	return nil
}

// consumed gives n bytes of connection window back once a quarter of it
// is due, and grant bytes of stream id's window now.
func (c *h2Conn) consumed(n int32, id uint32, grant int32) {
	c.mu.Lock()
	c.unacked += n
	var conn int32
	if c.unacked >= h2UploadConnWindow/4 {
		conn, c.unacked = c.unacked, 0
		c.recvWindow += conn
	}
	c.mu.Unlock()
	if conn == 0 && grant == 0 {
		return
	}
	c.w.flushed(func(fr *http2.Framer) error {
		if grant > 0 {
			if err := fr.WriteWindowUpdate(id, uint32(grant)); err != nil {
				return err
			}
		}
		if conn > 0 {
			return fr.WriteWindowUpdate(0, uint32(conn))
		}
		return nil
	})
}

func (c *h2Conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID == 0 {
		return c.w.addConnWindow(f.Increment)
	}
	st, err := c.stream(f.StreamID)
	if st != nil && !c.w.addStreamWindow(st, f.Increment) {
		c.resetStream(st, http2.ErrCodeFlowControl)
	}
	return err
}

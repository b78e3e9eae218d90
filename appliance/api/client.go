package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls a daemon's API over its Unix socket. It mirrors Backend, so it
// satisfies it. Errors from the daemon are *Error with the server's message;
// failing to connect wraps ErrUnreachable.
type Client struct {
	socket string
	hc     *http.Client
}

var _ Backend = (*Client)(nil)

// NewClient returns a client for the daemon listening on socketPath.
func NewClient(socketPath string) *Client { return NewClientVerifying(socketPath, nil) }

// NewClientVerifying is NewClient, with verify (when not nil) called on
// every new connection before a byte is sent: an error closes the
// connection and fails the request. The CLI uses it to refuse a socket
// that is not served by the daemon's user.
func NewClientVerifying(socketPath string, verify func(net.Conn) error) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", socketPath)
			if err != nil || verify == nil {
				return c, err
			}
			if err := verify(c); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
		DisableCompression: true,
		MaxIdleConns:       2,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// Socket is the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// do sends a request; the caller closes the body of a 2xx response.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := "http://clauderond" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, fmt.Errorf("%w: connecting to %s: %v", ErrUnreachable, c.socket, opErr.Err)
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	return resp, nil
}

func responseError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	var eb errorBody
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	if msg == "" {
		msg = resp.Status
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

// call sends a request and decodes a JSON reply into out (nil: discard).
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, nil, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding %s reply: %w", path, err)
	}
	return nil
}

// stream copies a streaming reply to w and reports an error from the trailer.
func (c *Client) stream(ctx context.Context, path string, q url.Values, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("reading %s stream: %w", path, err)
	}
	if msg := resp.Trailer.Get(TrailerError); msg != "" {
		return &Error{Status: http.StatusInternalServerError, Message: msg}
	}
	return nil
}

func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.call(ctx, http.MethodGet, PathStatus, nil, &st)
	return st, err
}

func (c *Client) CreateSession(ctx context.Context, req CreateRequest) (Session, error) {
	var s Session
	err := c.call(ctx, http.MethodPost, PathSessions, req, &s)
	return s, err
}

func (c *Client) ListSessions(ctx context.Context) ([]Session, error) {
	var ss []Session
	err := c.call(ctx, http.MethodGet, PathSessions, nil, &ss)
	return ss, err
}

func (c *Client) RemoveSession(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, PathSessions+"/"+url.PathEscape(name), nil, nil)
}

func (c *Client) ControlSession(ctx context.Context, name, action string) (Session, error) {
	var s Session
	err := c.call(ctx, http.MethodPost, PathSessions+"/"+url.PathEscape(name)+"/"+url.PathEscape(action), nil, &s)
	return s, err
}

func (c *Client) PrepareWorkspace(ctx context.Context, name string) (Workspace, error) {
	var ws Workspace
	err := c.call(ctx, http.MethodPost, PathSessions+"/"+url.PathEscape(name)+"/workspace", nil, &ws)
	return ws, err
}

func (c *Client) SessionLogs(ctx context.Context, name string, follow bool, w io.Writer) error {
	q := url.Values{}
	if follow {
		q.Set("follow", "true")
	}
	return c.stream(ctx, PathSessions+"/"+url.PathEscape(name)+"/logs", q, w)
}

func (c *Client) RunArgs(ctx context.Context, req RunRequest) (RunArgs, error) {
	var a RunArgs
	err := c.call(ctx, http.MethodPost, PathRunArgs, req, &a)
	return a, err
}

func (c *Client) Doctor(ctx context.Context) (DoctorReport, error) {
	var r DoctorReport
	err := c.call(ctx, http.MethodGet, PathDoctor, nil, &r)
	return r, err
}

func (c *Client) CA(ctx context.Context) (CA, error) {
	var ca CA
	err := c.call(ctx, http.MethodGet, PathCA, nil, &ca)
	return ca, err
}

func (c *Client) Audit(ctx context.Context, q AuditQuery, w io.Writer) error {
	v := url.Values{}
	if q.Follow {
		v.Set("follow", "true")
	}
	if q.Container != "" {
		v.Set("container", q.Container)
	}
	if q.Host != "" {
		v.Set("host", q.Host)
	}
	if q.Lines > 0 {
		v.Set("lines", strconv.Itoa(q.Lines))
	}
	return c.stream(ctx, PathAudit, v, w)
}

func (c *Client) Reload(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, PathReload, nil, nil)
}

var _ AuditVerifier = (*Client)(nil)

// AuditVerify asks the daemon to check the audit chain.
func (c *Client) AuditVerify(ctx context.Context) (AuditVerification, error) {
	var v AuditVerification
	err := c.call(ctx, http.MethodGet, PathAuditVerify, nil, &v)
	return v, err
}

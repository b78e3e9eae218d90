package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"syscall"
)

// KeySize is the length of the chain key in bytes.
const KeySize = 32

// Key is the secret the chain MACs are computed with. It knows how to
// hide: every way of printing it (String, GoString, LogValue, %v) says
// "[REDACTED]".
type Key struct{ b []byte }

func (Key) String() string               { return "[REDACTED]" }
func (Key) GoString() string             { return "audit.Key{[REDACTED]}" }
func (Key) LogValue() slog.Value         { return slog.StringValue("[REDACTED]") }
func (Key) MarshalText() ([]byte, error) { return []byte("[REDACTED]"), nil }

// NewKey wraps raw key bytes (KeySize of them); for tests and tools.
func NewKey(b []byte) (*Key, error) {
	if len(b) != KeySize {
		return nil, fmt.Errorf("audit key is %d bytes, want %d", len(b), KeySize)
	}
	return &Key{b: bytes.Clone(b)}, nil
}

// LoadOrCreateKey reads the chain key at path, creating it (KeySize random
// bytes, 0600) on first use. Like the writer it never follows a symlink
// and refuses a file that is not the daemon's own; a key anyone else could
// read is refused too (whoever read it can forge lines), with the fix.
func LoadOrCreateKey(path string) (*Key, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("audit key %s is a symbolic link; remove it (clauderond creates the key itself)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening audit key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil {
		err = checkOwnFile(path, fi)
	}
	if err != nil {
		return nil, fmt.Errorf("opening audit key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s has mode %v: others may have read it and could forge audit lines; remove it (a new chain starts, visibly) or `chmod 600 %s` if you are sure it was not read", path, fi.Mode().Perm(), path)
	}
	b := make([]byte, KeySize+1)
	n, err := io.ReadFull(f, b)
	if n != KeySize || (err != io.ErrUnexpectedEOF && err != nil) {
		return nil, fmt.Errorf("audit key %s is not %d bytes; remove it (a new chain starts, visibly)", path, KeySize)
	}
	return &Key{b: b[:KeySize]}, nil
}

func createKey(path string) (*Key, error) {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("creating audit key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating audit key: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o600) // whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("creating audit key %s: %w", path, err)
	}
	return &Key{b: b}, nil
}

// chainSuffix is what the writer puts in place of a line's closing brace:
// `,"chain":"<64 hex>"}`.
const (
	chainOpen   = `,"chain":"`
	chainHexLen = 2 * sha256.Size
	chainSuffix = len(chainOpen) + chainHexLen + len(`"}`)
)

// chainer computes the MAC chain; the writer holds it under its lock.
type chainer struct {
	mac  hash.Hash
	prev []byte // last MAC written (nil before the first line of a new chain)
	sum  []byte
}

func newChainer(k *Key) *chainer {
	return &chainer{mac: hmac.New(sha256.New, k.b)}
}

// macOf returns HMAC(key, prev || body) into c.sum.
func (c *chainer) macOf(prev, body []byte) []byte {
	c.mac.Reset()
	c.mac.Write(prev)
	c.mac.Write(body)
	c.sum = c.mac.Sum(c.sum[:0])
	return c.sum
}

// seal turns line (a JSON object ending in "}\n") into the chained line
// appended to dst, and advances the chain.
func (c *chainer) seal(dst, line []byte) []byte {
	body := line[:len(line)-2] // without "}\n"
	sum := c.macOf(c.prev, line[:len(line)-1])
	c.prev = append(c.prev[:0], sum...)
	dst = append(dst, body...)
	dst = append(dst, chainOpen...)
	dst = hex.AppendEncode(dst, sum)
	return append(dst, '"', '}', '\n')
}

// splitChain returns a chained line's body (the line without its chain
// member, as MACed) and the MAC it carries; ok is false for a line
// without a well-formed trailing chain member.
func splitChain(line []byte) (body, mac []byte, ok bool) {
	if len(line) < chainSuffix+1 || !bytes.HasSuffix(line, []byte(`"}`)) {
		return nil, nil, false
	}
	start := len(line) - chainSuffix
	if !bytes.Equal(line[start:start+len(chainOpen)], []byte(chainOpen)) {
		return nil, nil, false
	}
	h := line[start+len(chainOpen) : len(line)-2]
	mac = make([]byte, sha256.Size)
	if _, err := hex.Decode(mac, h); err != nil || hex.EncodeToString(mac) != string(h) {
		return nil, nil, false // the writer writes lowercase hex only
	}
	body = make([]byte, 0, start+1)
	body = append(append(body, line[:start]...), '}')
	return body, mac, true
}

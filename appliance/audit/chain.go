package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"log/slog"

	"github.com/clauderon/clauderond/appliance/internal/keyfile"
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
	b, err := keyfile.LoadOrCreate(path, keyfile.Spec{Name: "audit key", Size: KeySize,
		Exposed: "could forge audit lines", Reset: "a new chain starts, visibly"})
	if err != nil {
		return nil, err
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

package dnsredir

import (
	"errors"
	"fmt"
	"strings"
)

// Name limits (RFC 1035 section 2.3.4, in presentation form without the
// trailing dot).
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

var errInvalidName = errors.New("invalid query name")

// NormalizeName turns a query name as it appears in a DNS question
// ("API.Anthropic.com.") into the form handed to the Policy and the Resolver
// ("api.anthropic.com"): ASCII lower case, no trailing dot. The root name
// normalises to "".
//
// It refuses names a host name lookup can never legitimately use: any byte
// outside letters, digits, '-' and '_' (including the escaped binary labels
// miekg/dns produces for arbitrary wire bytes), empty labels, labels longer
// than 63 bytes and names longer than 253 bytes.
func NormalizeName(qname string) (string, error) {
	if qname == "." || qname == "" {
		return "", nil
	}
	name := strings.TrimSuffix(qname, ".")
	if len(name) > maxNameLen {
		return "", fmt.Errorf("%w: %d bytes long, limit %d", errInvalidName, len(name), maxNameLen)
	}
	b := []byte(name)
	labelLen := 0
	for i, c := range b {
		switch {
		case c >= 'A' && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			if labelLen == 0 {
				return "", fmt.Errorf("%w: empty label", errInvalidName)
			}
			labelLen = 0
			continue
		default:
			return "", fmt.Errorf("%w: byte 0x%02x at offset %d", errInvalidName, c, i)
		}
		labelLen++
		if labelLen > maxLabelLen {
			return "", fmt.Errorf("%w: label longer than %d bytes", errInvalidName, maxLabelLen)
		}
	}
	if labelLen == 0 {
		return "", fmt.Errorf("%w: empty label", errInvalidName)
	}
	return string(b), nil
}

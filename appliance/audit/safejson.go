package audit

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// SafeJSON returns the JSON text line with DEL and every non-ASCII rune that is
// not printable (C1 controls, bidi and other format characters such as
// U+202E, line and paragraph separators, private use, unassigned) written
// as a \uXXXX escape. encoding/json already escapes the C0 controls and DEL
// is harmless there; this closes the rest, so `tail audit.jsonl` or
// `clauderon audit --json` on a terminal cannot be steered by a tenant's
// path or name. The result decodes to the same values. In encoding/json's
// output non-ASCII bytes occur only inside strings, which is what makes
// the rewrite safe; line is returned as is when it is all ASCII.
func SafeJSON(line []byte) []byte {
	i := 0
	for i < len(line) && line[i] < utf8.RuneSelf && line[i] != 0x7f {
		i++
	}
	if i == len(line) {
		return line
	}
	out := make([]byte, 0, len(line)+16)
	return appendSafeJSON(append(out, line[:i]...), line[i:])
}

func appendSafeJSON(dst, s []byte) []byte {
	for len(s) > 0 {
		c := s[0]
		if c == 0x7f {
			dst = append(dst, `\u007f`...)
			s = s[1:]
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			s = s[1:]
			continue
		}
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, `\ufffd`...)
		} else if unicode.IsPrint(r) {
			dst = append(dst, s[:n]...)
		} else {
			dst = appendUEscape(dst, r)
		}
		s = s[n:]
	}
	return dst
}

func appendUEscape(dst []byte, r rune) []byte {
	const hexDigits = "0123456789abcdef"
	one := func(dst []byte, u rune) []byte {
		return append(dst, '\\', 'u', hexDigits[u>>12&0xf], hexDigits[u>>8&0xf], hexDigits[u>>4&0xf], hexDigits[u&0xf])
	}
	if r > 0xffff {
		hi, lo := utf16.EncodeRune(r)
		return one(one(dst, hi), lo)
	}
	return one(dst, r)
}

package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"go.yaml.in/yaml/v3"
)

// decodeHook is what viper's UnmarshalExact runs on every value before it is
// stored: a mapping where a list or a value belongs is refused, environment
// strings become lists ("a,b", or a YAML/JSON list; lists of structs such as
// CLAUDERON_RULES only the latter), typed values (EgressMode, Rcode,
// DNSServer, Subnet, CIDR) parse themselves through UnmarshalText (numbers
// and booleans too, as text), and "10s" becomes a time.Duration.
func decodeHook() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(
		notAMapping,
		stringToList,
		scalarToText,
		mapstructure.TextUnmarshallerHookFunc(),
		mapstructure.StringToTimeDurationHookFunc(),
	)
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// notAMapping refuses a mapping given for a list or a single value, which
// mapstructure would otherwise read as a struct's fields or report in its own
// words.
func notAMapping(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.Map {
		return data, nil
	}
	switch k := to.Kind(); {
	case k == reflect.Slice:
		return nil, errors.New("expected a list, not a mapping (write it as a YAML list: - item)")
	case reflect.PointerTo(to).Implements(textUnmarshaler) || (k != reflect.Struct && k != reflect.Map && k != reflect.Interface):
		return nil, errors.New("expected a list or a value, not a mapping")
	}
	return data, nil
}

// scalarToText hands a YAML number or boolean given for a typed value to its
// UnmarshalText as text (subnet: 10 is refused as "10", not as a mapping
// expected; mode: 1 is checked like any other word).
func scalarToText(from, to reflect.Type, data any) (any, error) {
	switch from.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		if reflect.PointerTo(to).Implements(textUnmarshaler) {
			return fmt.Sprint(data), nil
		}
	}
	return data, nil
}

func stringToList(from, to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	if !ok || from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return []any{}, nil
	}
	if strings.HasPrefix(s, "[") || to.Elem().Kind() == reflect.Struct {
		var out []any
		if err := yaml.Unmarshal([]byte(s), &out); err != nil {
			return nil, fmt.Errorf("expected a YAML/JSON list, e.g. [{host: api.example.com, credential: example}]: %w", err)
		}
		return out, nil
	}
	var out []any
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out, nil
}

// fieldError is a problem with one key: a value that did not decode, an
// unknown key, or a value Validate refuses. It prints "key: problem".
type fieldError struct {
	key     string
	err     error
	unknown bool // the key is not in the schema (nothing failed to decode)
}

func (e *fieldError) Error() string { return e.key + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// decodeErrors turns UnmarshalExact's error into one fieldError per key, each
// named by mapstructure's DecodeError. Unknown keys get the closest known key
// as a suggestion; nodeMode picks network.subnet's advice.
func decodeErrors(err error, known []string, nodeMode bool) []error {
	var out []error
	for _, e := range leafErrors(err) {
		var de *mapstructure.DecodeError
		if !errors.As(e, &de) {
			out = append(out, fmt.Errorf("decoding config: %w", e))
			continue
		}
		inner := de.Unwrap()
		// mapstructure has no type for unused keys: ErrorUnused reports
		// them as "has invalid keys: a, b" on the enclosing struct.
		if list, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
			for _, k := range strings.Split(list, ", ") {
				out = append(out, unknownKey(joinKey(de.Name(), k), known))
			}
			continue
		}
		var bs *badSubnet
		if errors.As(inner, &bs) && nodeMode {
			inner = bs.nodeMode()
		}
		out = append(out, &fieldError{key: de.Name(), err: inner})
	}
	return out
}

// leafErrors flattens joined errors, and wrappers around mapstructure's or
// Validate's errors ("decoding failed due to the following error(s)", a
// DecodeError of a list that holds its items'), into the innermost ones.
func leafErrors(err error) []error {
	var de *mapstructure.DecodeError
	var fe *fieldError
	switch e := err.(type) {
	case nil:
		return nil
	case interface{ Unwrap() []error }:
		var out []error
		for _, inner := range e.Unwrap() {
			out = append(out, leafErrors(inner)...)
		}
		return out
	case *fieldError:
		return []error{e}
	case *mapstructure.DecodeError:
		if errors.As(e.Unwrap(), &de) {
			return leafErrors(e.Unwrap())
		}
		return []error{e}
	case interface{ Unwrap() error }:
		if errors.As(e.Unwrap(), &de) || errors.As(e.Unwrap(), &fe) {
			return leafErrors(e.Unwrap())
		}
	}
	return []error{err}
}

func joinKey(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

func unknownKey(k string, known []string) error {
	msg := "unknown config key"
	if s := closest(k, known); s != "" {
		msg += fmt.Sprintf("; did you mean %s?", s)
	}
	return &fieldError{key: k, err: errors.New(msg), unknown: true}
}

// validationBesides returns Validate's errors except those about a key that
// did not decode (or a key inside it): they describe the zero value left in
// its place, not what the operator wrote.
func validationBesides(verr error, decoded []error) []error {
	var failed []string
	for _, e := range decoded {
		if fe, ok := e.(*fieldError); ok && !fe.unknown {
			failed = append(failed, fe.key)
		}
	}
	var out []error
	for _, e := range leafErrors(verr) {
		fe, ok := e.(*fieldError)
		if !ok || !under(fe.key, failed) {
			out = append(out, e)
		}
	}
	return out
}

func under(key string, parents []string) bool {
	for _, p := range parents {
		if key == p || strings.HasPrefix(key, p+".") || strings.HasPrefix(key, p+"[") {
			return true
		}
	}
	return false
}

// closest is the known key nearest to k by edit distance, if it is within 3
// edits (viper suggests nothing itself).
func closest(k string, known []string) string {
	best, bestD := "", 4
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// emptyUnknownKeys reports the unknown keys written with no value ("foo:"):
// viper leaves nulls out of what UnmarshalExact sees, so only its key list
// still shows them. A bare known section ("network:") is not one.
func emptyUnknownKeys(v interface {
	AllKeys() []string
	Get(string) any
}, known []string) []error {
	var out []error
	for _, k := range v.AllKeys() {
		if v.Get(k) != nil || slices.Contains(known, k) || slices.ContainsFunc(known, func(c string) bool { return strings.HasPrefix(c, k+".") }) {
			continue
		}
		out = append(out, unknownKey(k, known))
	}
	return out
}

// Package injector decides which real credential goes on an intercepted
// request, and makes sure it goes nowhere else.
//
// It owns three things:
//
//   - Rules: a host pattern (exact, or "*.suffix") bound to a credential
//     name, the header it is written to and its format (bearer, x-api-key,
//     basic-x-access-token, anthropic, template), the placeholder headers to
//     strip first, and what to do when the client sent a credential of its
//     own (replace, keep, reject). DefaultRules covers api.anthropic.com,
//     api.openai.com, api.github.com, github.com and registry.npmjs.org.
//   - Credential sources: the process environment first, then files under
//     the state directory's secrets/ (0700 directory, 0600 files; anything
//     looser is refused with the chmod that fixes it). A Store keeps an
//     immutable snapshot that Reload and Watch replace atomically. Named
//     profiles (secrets/profiles/<P>/, CLAUDERON_PROFILE_<P>_<ENV>) never
//     fall back to the default profile: a tenant whose profile lacks a
//     credential gets none rather than someone else's.
//   - Redaction: credential values live in Secret, which prints, marshals
//     and logs as "[REDACTED]" through every fmt verb, encoding/json,
//     encoding.TextMarshaler and slog. The raw value leaves a Secret in
//     exactly one place, where the request header is written. RedactResponse
//     scrubs any credential an upstream echoes back.
//
// What it refuses to do:
//
//   - put a credential on a request for a host its rule does not name
//     (Apply returns ErrNoRule), or on a request whose Host header differs
//     from the host the caller routed it to (ErrHostMismatch);
//   - send a credential that cannot work: a malformed value (whitespace,
//     control characters, a placeholder, an anthropic value that is neither
//     an OAuth token nor an API key) is ErrMalformedCredential, naming the
//     credential and its source, never the value, and is logged once;
//   - put a credential value into an error, a log line or a summary
//     (Summary reports a short SHA-256 fingerprint instead);
//   - decide routing, terminate TLS, dial, or read configuration files: the
//     appliance hands it rules and a Store, and tlsmitm calls Apply through
//     a small adapter. It imports nothing but the standard library, so it
//     can be fuzzed and reasoned about alone.
package injector

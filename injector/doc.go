// Package injector decides which real credential goes on an intercepted
// request, and makes sure it goes nowhere else.
//
// It owns three things:
//
//   - Rules: a host pattern (exact, or "*.suffix") bound to a credential
//     name, the header it is written to and its format (bearer, x-api-key,
//     basic-x-access-token, anthropic, template), the placeholder headers to
//     strip first, and what to do when the client sent a credential of its
//     own (replace, keep, reject), and which requests the credential is
//     never used for (deny) or the only ones it is used for (allow).
//     DefaultRules covers api.anthropic.com, api.openai.com,
//     api.github.com, github.com and registry.npmjs.org, with deny lists
//     for the endpoints that mint or manage credentials.
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
//   - accept a wildcard rule whose suffix is a public suffix ("*.github.io",
//     "*.co.uk"): anyone can register a name under it;
//   - put a credential on a TRACE, TRACK or CONNECT request, or on one its
//     rule's deny list matches or its allow list does not (ErrRequestDenied).
//     Method and path are normalized before matching (method upper-cased;
//     path compared ignoring case in every form an upstream might read it:
//     as sent, percent-decoded including encoded slashes, ";params" cut,
//     duplicate slashes collapsed, dot segments resolved), and on rules with
//     either list, method and path overrides (X-HTTP-Method-Override and
//     kin, X-Original-URL, X-Rewrite-URL, a `_method` query parameter) are
//     refused rather than guessed at;
//   - send a credential that cannot work: a malformed value (whitespace,
//     control characters, a placeholder, an anthropic value that is neither
//     an OAuth token nor an API key) is ErrMalformedCredential, naming the
//     credential and its source, never the value, and is logged once;
//   - put a credential value into an error, a log line or a summary
//     (Summary reports a short SHA-256 fingerprint instead);
//   - decide routing, terminate TLS, dial, or read configuration files: the
//     appliance hands it rules and a Store, and tlsmitm calls Apply through
//     a small adapter. It imports nothing but the standard library and
//     golang.org/x/net/publicsuffix (the public suffix list, data and a
//     lookup), so it can be fuzzed and reasoned about alone.
package injector

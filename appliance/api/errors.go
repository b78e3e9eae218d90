package api

import (
	"errors"
	"net/http"
)

// Sentinel errors a Backend wraps (fmt.Errorf("session %q: %w", name,
// api.ErrNotFound)) so the handler picks the status code; the client's *Error
// matches them again with errors.Is.
var (
	ErrInvalid     = errors.New("invalid request")    // 400
	ErrNotFound    = errors.New("not found")          // 404
	ErrConflict    = errors.New("already exists")     // 409
	ErrForbidden   = errors.New("not allowed")        // 403: the caller may not do this
	ErrUnavailable = errors.New("daemon not ready")   // 503
	ErrUnreachable = errors.New("daemon unreachable") // client side: cannot connect to the socket
)

// Error is an error returned by the daemon: the HTTP status and the server's
// message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is lets errors.Is(err, api.ErrNotFound) work on errors from the Client.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Status == http.StatusBadRequest
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrUnavailable:
		return e.Status == http.StatusServiceUnavailable
	}
	return false
}

// statusOf maps a Backend error to an HTTP status, once.
func statusOf(err error) int {
	var apiErr *Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Status != 0:
		return apiErr.Status
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// errorBody is the JSON body of every non-2xx response.
type errorBody struct {
	Error string `json:"error"`
}

// TrailerError carries an error that happened after a stream started.
const TrailerError = "X-Clauderon-Error"

package appliance

import "context"

// wireSessions connects appliance/session and appliance/doctor to the
// backend once those packages are available.
func (d *daemon) wireSessions(ctx context.Context, b *backend) {}

//go:build !linux

package edge

import (
	"net"
	"net/netip"
	"time"
)

// flow is the splicer's connection on Linux; elsewhere passthrough copies with a goroutine
// per direction.
type flow struct {
	end func(sent, received int64)
}

func newFlow(net.Conn, net.Conn, func(sent, received int64)) *flow { return nil }

func newDialFlow(net.Conn, netip.AddrPort, []byte, time.Time, func(error), func(sent, received int64)) *flow {
	return nil
}

func (*flow) start() error { return nil }

func (*flow) Close() error { return nil }

// newAcceptor: the splicers accept only on Linux.
func newAcceptor(*passthrough, net.Listener) net.Listener { return nil }

//go:build !linux

package edge

import "net"

// newRawIOConn: raw system calls only on Linux.
func newRawIOConn(conn net.Conn) net.Conn { return conn }

// newRequestConn: raw system calls only on Linux.
func newRequestConn(conn net.Conn) net.Conn { return conn }

package edge

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The splicer's system calls on its own goroutine never wait: every descriptor is
// non-blocking and epoll_wait is asked not to. So they go to the kernel without Go's system
// call bookkeeping (entersyscall and exitsyscall): the processor stays with the splicer for
// the length of a call, and Go's monitor thread (sysmon) does not take it away to hand it
// to another thread, as it does with a processor that sits in a system call while goroutines
// wait, waking a thread for it each time. A system call with that bookkeeping also wakes
// sysmon from its deep sleep when the process was idle, after which it polls every 20 µs for
// a millisecond or more: the accepts, connects and epoll_ctl calls of a passthrough connection
// are raw too, so that a connection makes no such call at all.

func rawResult(r uintptr, errno unix.Errno) (int, error) {
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// epollPoll returns the events epfd holds now, without waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	return rawResult(r, errno)
}

// writeNonblock writes p to a non-blocking fd.
func writeNonblock(fd int, p []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return rawResult(r, errno)
}

func shutdownSocket(fd, how int) {
	_, _, _ = unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
}

func closeFD(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// readNonblock reads from a non-blocking fd into p.
func readNonblock(fd int, p []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return rawResult(r, errno)
}

// accept4Nonblock accepts a connection on a non-blocking listening socket; the new socket is
// non-blocking and close-on-exec, and sockaddr gets its peer's address.
func accept4Nonblock(fd int, sockaddr *unix.RawSockaddrAny) (int, error) {
	size := uint32(unix.SizeofSockaddrAny)
	r, _, errno := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(sockaddr)),
		uintptr(unsafe.Pointer(&size)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	return rawResult(r, errno)
}

// epollCtl adds, changes or removes fd's registration in epfd.
func epollCtl(epfd, op, fd int, event *unix.EpollEvent) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(event)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// socketNonblock opens a non-blocking, close-on-exec socket.
func socketNonblock(family, kind, protocol int) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), uintptr(kind|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC), uintptr(protocol))
	return rawResult(r, errno)
}

// setsockoptInt sets an integer socket option.
func setsockoptInt(fd, level, option, value int) {
	v := int32(value)
	_, _, _ = unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(option), uintptr(unsafe.Pointer(&v)), 4, 0)
}

// connectNonblock starts connecting a non-blocking socket to address; EINPROGRESS is the
// usual answer.
func connectNonblock(fd int, address netip.AddrPort) error {
	var errno unix.Errno
	port := address.Port()
	if ip := address.Addr().Unmap(); ip.Is4() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.As4()}
		sa.Port = port>>8 | port<<8 // network byte order
		_, _, errno = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
		sa.Port = port>>8 | port<<8
		_, _, errno = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet6)
	}
	if errno != 0 {
		return errno
	}
	return nil
}

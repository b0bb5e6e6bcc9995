package edge

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The splicer's system calls on its own goroutine never wait: every descriptor is
// non-blocking and epoll_wait is asked not to. So they go to the kernel without Go's system
// call bookkeeping (entersyscall and exitsyscall): the processor stays with the splicer for
// the length of a splice, and Go's monitor thread (sysmon) does not take it away to hand it
// to another thread, as it does with a processor that sits in a system call while goroutines
// wait, waking a thread for it each time.

func rawResult(r uintptr, errno unix.Errno) (int, error) {
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// spliceNonblock moves at most n bytes from in to out (one of them a pipe).
func spliceNonblock(in, out, n int) (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n),
		unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return rawResult(r, errno)
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

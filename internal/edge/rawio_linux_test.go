package edge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// loopbackPair returns the two ends of a loopback TCP connection: the one dialed and the one
// accepted.
func loopbackPair(t *testing.T) (dialed, accepted net.Conn) {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	accepts := make(chan net.Conn, 1)
	go func() {
		conn, _ := listener.Accept()
		accepts <- conn
	}()
	dialed, err = net.Dial("tcp", listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted = <-accepts
	if accepted == nil {
		t.Fatal("no connection accepted")
	}
	return dialed, accepted
}

// tcpPair returns the two ends of a loopback TCP connection, the first wrapped in rawIOConn.
func tcpPair(t *testing.T) (wrapped net.Conn, peer *net.TCPConn) {
	t.Helper()
	dialed, server := loopbackPair(t)
	wrapped = newRawIOConn(server)
	if _, ok := wrapped.(*rawIOConn); !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", wrapped)
	}
	t.Cleanup(func() {
		_ = wrapped.Close()
		_ = dialed.Close()
	})
	for _, conn := range []net.Conn{wrapped, dialed} {
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	}
	return wrapped, dialed.(*net.TCPConn)
}

// TestRawIOConn: reads and writes through raw system calls behave as the net package's: every
// byte of a write larger than the socket buffers arrives in order, a read returns what the
// peer sent and then io.EOF, deadlines end waits with a timeout, and writes to a reset
// connection fail.
func TestRawIOConn(t *testing.T) {
	t.Run("large write, read back", func(t *testing.T) {
		wrapped, peer := tcpPair(t)
		data := make([]byte, 16<<20)
		for i := range data {
			data[i] = byte(i * 7)
		}
		received := make(chan []byte, 1)
		go func() {
			read, _ := io.ReadAll(peer)
			received <- read
		}()
		if n, err := wrapped.Write(data); n != len(data) || err != nil {
			t.Fatalf("Write: %d, %v; want %d", n, err, len(data))
		}
		_ = wrapped.(*rawIOConn).Conn.(*net.TCPConn).CloseWrite()
		if got := <-received; !bytes.Equal(got, data) {
			t.Errorf("peer read %d bytes, not the %d written", len(got), len(data))
		}
		if _, err := peer.Write([]byte("answer")); err != nil {
			t.Fatal(err)
		}
		_ = peer.CloseWrite()
		if answer, err := io.ReadAll(wrapped); err != nil || string(answer) != "answer" {
			t.Errorf("read %q, %v; want the answer, then the end", answer, err)
		}
	})

	t.Run("read deadline", func(t *testing.T) {
		wrapped, _ := tcpPair(t)
		_ = wrapped.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := wrapped.Read(make([]byte, 10))
		var netErr net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &netErr) || !netErr.Timeout() {
			t.Errorf("Read: %v, want a timeout", err)
		}
	})

	t.Run("write deadline", func(t *testing.T) {
		wrapped, _ := tcpPair(t) // the peer never reads
		_ = wrapped.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := wrapped.Write(make([]byte, 64<<20))
		if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n == 64<<20 {
			t.Errorf("Write: %d, %v; want part of it written, then a timeout", n, err)
		}
	})

	t.Run("reset", func(t *testing.T) {
		wrapped, peer := tcpPair(t)
		_ = peer.SetLinger(0)
		_ = peer.Close() // a reset
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = wrapped.Write([]byte("after the reset"))
			time.Sleep(time.Millisecond)
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) || opErr.Op != "write" {
			t.Errorf("Write: %v, want a write error", err)
		}
		if _, err := wrapped.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read: %v, want the reset", err)
		}
	})

	t.Run("closed", func(t *testing.T) {
		wrapped, _ := tcpPair(t)
		_ = wrapped.Close()
		if _, err := wrapped.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v, want net.ErrClosed", err)
		}
	})
}

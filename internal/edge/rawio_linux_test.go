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

	// A write that ends a request waits for the reply (awaitReply); the read after it gets
	// the reply, or the peer's end.
	exchange := func(t *testing.T, wrapped net.Conn, request string) {
		t.Helper()
		wrapped.(*rawIOConn).awaitReply(true)
		n, err := wrapped.Write([]byte(request))
		wrapped.(*rawIOConn).awaitReply(false)
		if n != len(request) || err != nil {
			t.Fatalf("Write: %d, %v; want %d", n, err, len(request))
		}
	}
	answer := func(peer net.Conn, request, reply string) <-chan error {
		done := make(chan error, 1)
		go func() {
			buffer := make([]byte, len(request))
			_, err := io.ReadFull(peer, buffer)
			if err == nil && string(buffer) != request {
				err = errors.New("the peer read " + string(buffer))
			}
			if err == nil {
				_, err = peer.Write([]byte(reply))
			}
			done <- err
		}()
		return done
	}
	readReply := func(t *testing.T, wrapped net.Conn, want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(wrapped, got); err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}

	t.Run("reply awaited", func(t *testing.T) {
		wrapped, peer := tcpPair(t)
		wrapped.(*rawIOConn).replies = true // as newRequestConn
		for range 3 {
			done := answer(peer, "request", "reply")
			exchange(t, wrapped, "request")
			readReply(t, wrapped, "reply")
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		_ = peer.Close()
		exchange(t, wrapped, "request")
		if n, err := wrapped.Read(make([]byte, 16)); err == nil {
			t.Errorf("Read after the peer closed: %d bytes", n)
		}
	})

	t.Run("answered before the request ended", func(t *testing.T) {
		// The peer answers the request's first write; the write that ends the request must
		// not wait for a reply that has come already.
		wrapped, peer := tcpPair(t)
		wrapped.(*rawIOConn).replies = true
		done := answer(peer, "head ", "early answer")
		if _, err := wrapped.Write([]byte("head ")); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Not a wait for the answer, which has arrived: with every goroutine parked, Go's
		// poller takes the socket's readiness now, the case where a wait would miss it.
		time.Sleep(10 * time.Millisecond)
		_ = wrapped.SetReadDeadline(time.Now().Add(5 * time.Second)) // a wait would end here
		exchange(t, wrapped, "body")
		readReply(t, wrapped, "early answer")
	})

	t.Run("reply deadline", func(t *testing.T) {
		wrapped, _ := tcpPair(t) // the peer never answers
		wrapped.(*rawIOConn).replies = true
		_ = wrapped.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		exchange(t, wrapped, "request")
		if _, err := wrapped.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read: %v, want a timeout", err)
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

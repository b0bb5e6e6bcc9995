package edge

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// splicedPair is a flow on a splicer between two loopback connections: client is the far end
// of the flow's client socket, upstream the far end of its upstream socket.
type splicedPair struct {
	client, upstream *net.TCPConn
	flow             *flow
	ended            chan [2]int64 // sent to the client, received from it
}

func startSplicedPair(t *testing.T) *splicedPair {
	t.Helper()
	accept := func(listener net.Listener) <-chan net.Conn {
		accepted := make(chan net.Conn, 1)
		go func() {
			conn, err := listener.Accept()
			if err != nil {
				t.Error(err)
			}
			accepted <- conn
		}()
		return accepted
	}
	dial := func(address string) *net.TCPConn {
		conn, err := net.Dial("tcp", address)
		if err != nil {
			t.Fatal(err)
		}
		return conn.(*net.TCPConn)
	}
	clientListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer clientListener.Close()
	upstreamListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upstreamListener.Close()

	accepted := accept(clientListener)
	pair := &splicedPair{client: dial(clientListener.Addr().String()), ended: make(chan [2]int64, 1)}
	edgeClient := <-accepted
	accepted = accept(upstreamListener)
	edgeUpstream := dial(upstreamListener.Addr().String())
	pair.upstream = (<-accepted).(*net.TCPConn)
	t.Cleanup(func() {
		_ = pair.client.Close()
		_ = pair.upstream.Close()
	})
	if edgeClient == nil || pair.upstream == nil {
		t.FailNow()
	}

	pair.flow = newFlow(edgeClient, edgeUpstream, func(sent, received int64) { pair.ended <- [2]int64{sent, received} })
	if pair.flow == nil {
		t.Fatal("no splicer")
	}
	if err := pair.flow.start(); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []*net.TCPConn{pair.client, pair.upstream} {
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	}
	return pair
}

// waitEnded returns what the flow reported when it ended, after both of its sockets closed.
func (p *splicedPair) waitEnded(t *testing.T) (sent, received int64) {
	t.Helper()
	select {
	case moved := <-p.ended:
		return moved[0], moved[1]
	case <-time.After(20 * time.Second):
		t.Fatal("the flow did not end")
		return 0, 0
	}
}

func TestSplicerHalfClose(t *testing.T) {
	t.Run("client ends first", func(t *testing.T) {
		pair := startSplicedPair(t)
		if _, err := io.WriteString(pair.client, "request"); err != nil {
			t.Fatal(err)
		}
		_ = pair.client.CloseWrite()
		// The upstream sees the client's end and can still answer.
		request, err := io.ReadAll(pair.upstream)
		if err != nil || string(request) != "request" {
			t.Fatalf("upstream read %q, %v", request, err)
		}
		if _, err := io.WriteString(pair.upstream, "answer"); err != nil {
			t.Fatal(err)
		}
		_ = pair.upstream.Close()
		answer, err := io.ReadAll(pair.client)
		if err != nil || string(answer) != "answer" {
			t.Fatalf("client read %q, %v", answer, err)
		}
		if sent, received := pair.waitEnded(t); sent != 6 || received != 7 {
			t.Errorf("flow reported %d sent, %d received; want 6 and 7", sent, received)
		}
	})

	t.Run("upstream ends first", func(t *testing.T) {
		pair := startSplicedPair(t)
		if _, err := io.WriteString(pair.upstream, "greeting"); err != nil {
			t.Fatal(err)
		}
		_ = pair.upstream.CloseWrite()
		greeting, err := io.ReadAll(pair.client)
		if err != nil || string(greeting) != "greeting" {
			t.Fatalf("client read %q, %v", greeting, err)
		}
		if _, err := io.WriteString(pair.client, "late request"); err != nil {
			t.Fatal(err)
		}
		_ = pair.client.CloseWrite()
		request, err := io.ReadAll(pair.upstream)
		if err != nil || string(request) != "late request" {
			t.Fatalf("upstream read %q, %v", request, err)
		}
		if sent, received := pair.waitEnded(t); sent != 8 || received != 12 {
			t.Errorf("flow reported %d sent, %d received; want 8 and 12", sent, received)
		}
	})
}

// sendRandom writes size pseudo-random bytes from seed to conn, half-closes it and returns
// their checksum.
func sendRandom(conn *net.TCPConn, seed uint64, size int64) ([sha256.Size]byte, error) {
	hash := sha256.New()
	source := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, err := io.CopyN(io.MultiWriter(conn, hash), source, size)
	_ = conn.CloseWrite()
	return [sha256.Size]byte(hash.Sum(nil)), err
}

// receiveAll reads conn to its end and returns the checksum and size of what it read.
func receiveAll(conn net.Conn) ([sha256.Size]byte, int64, error) {
	hash := sha256.New()
	n, err := io.Copy(hash, conn)
	return [sha256.Size]byte(hash.Sum(nil)), n, err
}

// TestSplicerIntegrity: many MiB both ways at once arrive complete and unchanged.
func TestSplicerIntegrity(t *testing.T) {
	const size = 48 << 20
	pair := startSplicedPair(t)
	type result struct {
		sum [sha256.Size]byte
		n   int64
		err error
	}
	sentUp, sentDown, readUp, readDown := make(chan result, 1), make(chan result, 1), make(chan result, 1), make(chan result, 1)
	go func() { sum, err := sendRandom(pair.client, 1, size); sentUp <- result{sum, size, err} }()
	go func() { sum, err := sendRandom(pair.upstream, 2, size+1); sentDown <- result{sum, size + 1, err} }()
	go func() { sum, n, err := receiveAll(pair.upstream); readUp <- result{sum, n, err} }()
	go func() { sum, n, err := receiveAll(pair.client); readDown <- result{sum, n, err} }()
	for _, way := range []struct {
		name       string
		sent, read chan result
	}{{"client to upstream", sentUp, readUp}, {"upstream to client", sentDown, readDown}} {
		sent, read := <-way.sent, <-way.read
		if sent.err != nil || read.err != nil {
			t.Fatalf("%s: sending: %v, receiving: %v", way.name, sent.err, read.err)
		}
		if read.n != sent.n || read.sum != sent.sum {
			t.Errorf("%s: received %d bytes (sha256 %x), sent %d (%x)", way.name, read.n, read.sum[:8], sent.n, sent.sum[:8])
		}
	}
	if sent, received := pair.waitEnded(t); sent != size+1 || received != size {
		t.Errorf("flow reported %d sent, %d received; want %d and %d", sent, received, size+1, size)
	}
}

// TestSplicerConcurrent: many flows at once, one of them a bulk transfer, each exchange
// completes unchanged (no flow waits for another to finish).
func TestSplicerConcurrent(t *testing.T) {
	const flows, rounds = 200, 20
	bulk := startSplicedPair(t)
	bulkDone := make(chan error, 1)
	go func() {
		_, err := sendRandom(bulk.upstream, 9, 256<<20)
		bulkDone <- err
	}()
	go func() { _, _, _ = receiveAll(bulk.client) }()

	var wg sync.WaitGroup
	errs := make(chan error, flows)
	for i := range flows {
		pair := startSplicedPair(t)
		wg.Add(2)
		go func() { // the upstream echoes
			defer wg.Done()
			_, _ = io.Copy(pair.upstream, pair.upstream)
			_ = pair.upstream.CloseWrite()
		}()
		go func() {
			defer wg.Done()
			buffer := make([]byte, 64)
			for round := range rounds {
				message := fmt.Appendf(nil, "flow %d round %d", i, round)
				if _, err := pair.client.Write(message); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(pair.client, buffer[:len(message)]); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buffer[:len(message)], message) {
					errs <- fmt.Errorf("flow %d: echoed %q, sent %q", i, buffer[:len(message)], message)
					return
				}
			}
			_ = pair.client.CloseWrite()
			if rest, err := io.ReadAll(pair.client); err != nil || len(rest) != 0 {
				errs <- fmt.Errorf("flow %d: after the exchanges read %q, %v", i, rest, err)
			}
			select {
			case <-pair.ended:
			case <-time.After(20 * time.Second):
				errs <- fmt.Errorf("flow %d did not end", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The bulk transfer went on meanwhile; it may still be running, and ends with the test.
	_ = bulk.client.Close()
	<-bulkDone
}

// TestSplicerReset: a peer that resets its connection ends the flow; the other side sees the
// end instead of waiting forever.
func TestSplicerReset(t *testing.T) {
	t.Run("client resets, upstream idle", func(t *testing.T) {
		pair := startSplicedPair(t)
		if _, err := io.WriteString(pair.client, "partial"); err != nil {
			t.Fatal(err)
		}
		_ = pair.client.SetLinger(0)
		_ = pair.client.Close()
		// The upstream gets what was sent and then the end (passed on as a half-close) ...
		read, err := io.ReadAll(pair.upstream)
		if err != nil || string(read) != "partial" {
			t.Fatalf("upstream read %q, %v", read, err)
		}
		// ... and its answer, which can no longer be delivered, ends the flow.
		_, _ = io.WriteString(pair.upstream, "answer")
		pair.waitEnded(t)
	})

	t.Run("client resets while the upstream sends", func(t *testing.T) {
		pair := startSplicedPair(t)
		sending := make(chan error, 1)
		go func() {
			_, err := sendRandom(pair.upstream, 3, 1<<30) // more than the buffers hold
			sending <- err
		}()
		if _, err := io.ReadFull(pair.client, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		_ = pair.client.SetLinger(0)
		_ = pair.client.Close()
		pair.waitEnded(t)
		// The upstream's writes fail once the flow closed its socket.
		if err := <-sending; err == nil {
			t.Error("the upstream sent 1 GiB to a client that had reset")
		}
	})
}

// TestSplicerClose: Close (what a shutdown does at its deadline) ends an idle flow: both peers
// see the end, and the flow reports it.
func TestSplicerClose(t *testing.T) {
	pair := startSplicedPair(t)
	if _, err := io.WriteString(pair.client, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(pair.upstream, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	_ = pair.flow.Close()
	for name, conn := range map[string]net.Conn{"client": pair.client, "upstream": pair.upstream} {
		if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s read %v, want the end of the connection", name, err)
		}
	}
	if sent, received := pair.waitEnded(t); sent != 0 || received != 4 {
		t.Errorf("flow reported %d sent, %d received; want 0 and 4", sent, received)
	}
	_ = pair.flow.Close() // after the end: nothing to do
}

// TestSplicerDial: a flow that connects to its upstream itself writes its prefix first, and
// reports a refused or timed-out connect, closing the client.
func TestSplicerDial(t *testing.T) {
	// dialPair connects a client to a flow that dials upstream with prefix.
	dialPair := func(t *testing.T, upstream string, timeout time.Duration) (client net.Conn, connected chan error, ended chan [2]int64) {
		t.Helper()
		client, edgeClient := loopbackPair(t)
		t.Cleanup(func() { _ = client.Close() })
		_ = client.SetDeadline(time.Now().Add(20 * time.Second))
		connected, ended = make(chan error, 1), make(chan [2]int64, 1)
		f := newDialFlow(edgeClient, netip.MustParseAddrPort(upstream), []byte("prefix "), time.Now().Add(timeout),
			func(err error) { connected <- err }, func(sent, received int64) { ended <- [2]int64{sent, received} })
		if f == nil {
			t.Fatal("no splicer")
		}
		if err := f.start(); err != nil {
			connected <- err
			_ = edgeClient.Close()
		}
		return client, connected, ended
	}
	wait := func(t *testing.T, connected chan error) error {
		t.Helper()
		select {
		case err := <-connected:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("the connect did not end")
			return nil
		}
	}

	t.Run("connected", func(t *testing.T) {
		received := make(chan string, 1)
		upstream := listenOnce(t, func(conn net.Conn) {
			read, _ := io.ReadAll(conn)
			received <- string(read)
		})
		client, connected, ended := dialPair(t, upstream, 5*time.Second)
		if err := wait(t, connected); err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(client, "from the client")
		_ = client.(*net.TCPConn).CloseWrite()
		if got := <-received; got != "prefix from the client" {
			t.Errorf("upstream read %q, want the prefix first", got)
		}
		if rest, err := io.ReadAll(client); err != nil || len(rest) != 0 {
			t.Errorf("client read %q, %v; want the end", rest, err)
		}
		if moved := <-ended; moved != [2]int64{0, 15} {
			t.Errorf("flow reported %v, want 0 sent and 15 received", moved)
		}
	})

	t.Run("refused", func(t *testing.T) {
		closed, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		address := closed.Addr().String()
		_ = closed.Close()
		client, connected, _ := dialPair(t, address, 5*time.Second)
		if err := wait(t, connected); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect: %v, want connection refused", err)
		}
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("client read %v, want the end of the connection", err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		// A listening socket with a full accept queue, never accepting: the kernel drops
		// further SYNs, so a connect neither completes nor fails.
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Close(fd) })
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Listen(fd, 0); err != nil {
			t.Fatal(err)
		}
		sockaddr, _ := syscall.Getsockname(fd)
		address := fmt.Sprintf("127.0.0.1:%d", sockaddr.(*syscall.SockaddrInet4).Port)
		for full := false; !full; { // fill the queue: a connect that does not complete within 100 ms
			conn, err := net.DialTimeout("tcp", address, 100*time.Millisecond)
			if err != nil {
				full = true
				continue
			}
			t.Cleanup(func() { _ = conn.Close() })
		}
		started := time.Now()
		client, connected, _ := dialPair(t, address, 300*time.Millisecond)
		if err := wait(t, connected); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("connect: %v, want a timeout", err)
		}
		if waited := time.Since(started); waited < 300*time.Millisecond {
			t.Errorf("the connect timed out after %v, before its deadline", waited)
		}
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("client read %v, want the end of the connection", err)
		}
	})
}

// listenOnce serves one connection on loopback with handle and returns the address.
func listenOnce(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = listener.Close() })
	go func() {
		conn, err := listener.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		handle(conn)
	}()
	return listener.Addr().String()
}

package acme_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certpilot/certpilot/internal/acme"
	"github.com/certpilot/certpilot/internal/netguard"
	"github.com/certpilot/certpilot/internal/pki"
)

// secret is what an internal service answers; it must never appear in an error.
const secret = "db_password=hunter2-do-not-leak"

// countingServer is a listener on loopback that counts the connections it accepts: a test of
// "the client never dialled it" reads Connections.
type countingServer struct {
	*httptest.Server
	connections atomic.Int64
}

func newCountingServer(t *testing.T, handler http.Handler) *countingServer {
	t.Helper()
	server := &countingServer{}
	server.Server = httptest.NewUnstartedServer(handler)
	server.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			server.connections.Add(1)
		}
	}
	server.Start()
	t.Cleanup(server.Close)
	return server
}

// internalService stands for a cluster-internal HTTP service that answers anything with a secret.
func internalService(t *testing.T) *countingServer {
	return newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, secret)
	}))
}

// hostileCA is an ACME-looking server whose endpoints a test replaces one by one.
type hostileCA struct {
	*countingServer
	mux *http.ServeMux
	// directory overrides the directory's entries (newOrder, ...), by key.
	directory map[string]string
}

func newHostileCA(t *testing.T) *hostileCA {
	t.Helper()
	ca := &hostileCA{mux: http.NewServeMux(), directory: map[string]string{}}
	ca.countingServer = newCountingServer(t, ca.mux)
	ca.mux.HandleFunc("GET /dir", func(w http.ResponseWriter, _ *http.Request) {
		directory := map[string]string{
			"newNonce": ca.URL + "/nonce", "newAccount": ca.URL + "/new-acct", "newOrder": ca.URL + "/new-order",
			"revokeCert": ca.URL + "/revoke", "keyChange": ca.URL + "/key-change",
		}
		for key, value := range ca.directory {
			directory[key] = value
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(directory)
	})
	ca.mux.HandleFunc("/nonce", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Replay-Nonce", fmt.Sprintf("nonce-%d", time.Now().UnixNano()))
		w.Header().Set("Cache-Control", "no-store")
	})
	return ca
}

// order writes an order object with status 201, as newOrder does.
func (ca *hostileCA) order(w http.ResponseWriter, identifiers []string, authzURLs []string) {
	type identifier struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	}
	body := struct {
		Status         string       `json:"status"`
		Identifiers    []identifier `json:"identifiers"`
		Authorizations []string     `json:"authorizations"`
		Finalize       string       `json:"finalize"`
	}{Status: "pending", Authorizations: authzURLs, Finalize: ca.URL + "/finalize/1"}
	for _, name := range identifiers {
		body.Identifiers = append(body.Identifiers, identifier{Type: "dns", Value: name})
	}
	w.Header().Set("Location", ca.URL+"/order/1")
	w.Header().Set("Replay-Nonce", "n")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(body)
}

func hostileClient(ctx context.Context, t *testing.T, ca *hostileCA) (*acme.Client, error) {
	t.Helper()
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	return acme.New(ctx, acme.Options{DirectoryURL: ca.URL + "/dir", AccountKey: key, AccountURI: ca.URL + "/acct/1"})
}

// checkMessage fails when err is nil, says more than an ACME error may, or does not say want.
func checkMessage(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	message := err.Error()
	if strings.Contains(message, "db_password") || strings.Contains(message, "hunter2") {
		t.Fatalf("the error repeats the server's body: %q", message)
	}
	if len(message) > 2048 {
		t.Fatalf("the error has %d bytes, want at most 2048", len(message))
	}
	if !strings.Contains(message, want) {
		t.Fatalf("error %q does not say %q", message, want)
	}
}

// TestHostileServer runs the client against servers that try to make it read without bound,
// dial elsewhere, or repeat what an internal service answered.
func TestHostileServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("a 1 GiB directory is cut at the cap", func(t *testing.T) {
		var written atomic.Int64
		ca := newHostileCA(t)
		ca.mux.HandleFunc("GET /huge", func(w http.ResponseWriter, _ *http.Request) {
			// A JSON string that never ends: a decoder reads on until the cap stops it.
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"newOrder":"`)
			chunk := []byte(strings.Repeat("x", 64<<10))
			for written.Load() < 1<<30 {
				n, err := w.Write(chunk)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
		key, _ := pki.GenerateKey(pki.ECDSA, 256)
		started := time.Now()
		_, err := acme.New(ctx, acme.Options{DirectoryURL: ca.URL + "/huge", AccountKey: key})
		checkMessage(t, err, "larger than")
		ca.CloseClientConnections()
		// The server's writes stop once the client hangs up; socket buffers hold a few MiB.
		if got := written.Load(); got > 64<<20 {
			t.Errorf("the server wrote %d MiB before the client hung up", got>>20)
		}
		t.Logf("refused after %v, the server wrote %d KiB", time.Since(started).Round(time.Millisecond), written.Load()>>10)
	})

	t.Run("an error body of 1 GiB is cut at the cap", func(t *testing.T) {
		ca := newHostileCA(t)
		ca.mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Replay-Nonce", "n")
			w.WriteHeader(http.StatusInternalServerError)
			chunk := []byte(strings.Repeat(secret, 4096))
			for sent := 0; sent < 1<<30; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		})
		client, err := hostileClient(ctx, t, ca)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.NewOrder(ctx, []string{"a.example"}, "")
		checkMessage(t, err, "500")
	})

	t.Run("a redirect to http is not followed", func(t *testing.T) {
		target := internalService(t)
		ca := newHostileCA(t)
		ca.mux.HandleFunc("GET /moved", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/dir", http.StatusFound)
		})
		key, _ := pki.GenerateKey(pki.ECDSA, 256)
		_, err := acme.New(ctx, acme.Options{DirectoryURL: ca.URL + "/moved", AccountKey: key})
		checkMessage(t, err, "follows no redirects")
		if !acme.IsPermanent(err) {
			t.Errorf("IsPermanent(%v) = false, want true", err)
		}
		if n := target.connections.Load(); n != 0 {
			t.Errorf("the redirect target got %d connections, want 0", n)
		}
	})

	t.Run("a directory naming an internal newOrder is refused", func(t *testing.T) {
		internal := internalService(t)
		ca := newHostileCA(t)
		ca.directory["newOrder"] = internal.URL + "/anything"
		_, err := hostileClient(ctx, t, ca)
		checkMessage(t, err, "only to the directory's scheme and host")
		if !acme.IsPermanent(err) {
			t.Errorf("IsPermanent(%v) = false, want true", err)
		}
		if n := internal.connections.Load(); n != 0 {
			t.Errorf("the internal service got %d connections, want 0", n)
		}
	})

	t.Run("a directory on an internal service answering 404 is not repeated", func(t *testing.T) {
		internal := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintln(w, secret)
		}))
		key, _ := pki.GenerateKey(pki.ECDSA, 256)
		_, err := acme.New(ctx, acme.Options{DirectoryURL: internal.URL + "/", AccountKey: key})
		checkMessage(t, err, "404")
	})

	t.Run("a directory answering 200 with a non-ACME body is not repeated", func(t *testing.T) {
		internal := internalService(t)
		key, _ := pki.GenerateKey(pki.ECDSA, 256)
		_, err := acme.New(ctx, acme.Options{DirectoryURL: internal.URL + "/", AccountKey: key})
		checkMessage(t, err, "fetching ACME directory")
	})

	t.Run("newOrder answering 200 with a non-ACME body is not repeated", func(t *testing.T) {
		ca := newHostileCA(t)
		ca.mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Replay-Nonce", "n")
			fmt.Fprintln(w, secret)
		})
		client, err := hostileClient(ctx, t, ca)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.NewOrder(ctx, []string{"a.example"}, "")
		checkMessage(t, err, "200")
	})

	t.Run("a problem without an ACME type keeps only the status", func(t *testing.T) {
		ca := newHostileCA(t)
		ca.mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Replay-Nonce", "n")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"type":"about:blank","detail":%q}`, secret)
		})
		client, err := hostileClient(ctx, t, ca)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.NewOrder(ctx, []string{"a.example"}, "")
		checkMessage(t, err, "403")
	})

	t.Run("an ACME problem keeps its type and a cut detail", func(t *testing.T) {
		ca := newHostileCA(t)
		ca.mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Replay-Nonce", "n")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"refused: %s"}`, strings.Repeat("x", 100_000))
		})
		client, err := hostileClient(ctx, t, ca)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.NewOrder(ctx, []string{"a.example"}, "")
		checkMessage(t, err, "urn:ietf:params:acme:error:rejectedIdentifier: refused: xxx")
		if !acme.IsPermanent(err) || acme.ProblemType(err) != "rejectedIdentifier" {
			t.Errorf("IsPermanent = %v, ProblemType = %q; want true, rejectedIdentifier", acme.IsPermanent(err), acme.ProblemType(err))
		}
		if n := len(err.Error()); n > 600 {
			t.Errorf("the error has %d bytes, want the detail cut to %d", n, acme.MaxProblemDetail)
		}
	})

	t.Run("an order for other names is refused", func(t *testing.T) {
		ca := newHostileCA(t)
		ca.mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, _ *http.Request) {
			ca.order(w, []string{"a.example", "victim.example"}, []string{ca.URL + "/authz/1", ca.URL + "/authz/2"})
		})
		client, err := hostileClient(ctx, t, ca)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.NewOrder(ctx, []string{"a.example"}, "")
		checkMessage(t, err, "not for the names asked")
		if !acme.IsPermanent(err) {
			t.Errorf("IsPermanent(%v) = false, want true", err)
		}
	})

	t.Run("an order with thousands of authorizations is refused", func(t *testing.T) {
		ca := newHostileCA(t)
		ca.mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, _ *http.Request) {
			authzs := make([]string, 5000)
			for i := range authzs {
				authzs[i] = fmt.Sprintf("%s/authz/%d", ca.URL, i)
			}
			ca.order(w, []string{"a.example"}, authzs)
		})
		client, err := hostileClient(ctx, t, ca)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.NewOrder(ctx, []string{"a.example"}, "")
		checkMessage(t, err, "5000 authorizations for 1 identifiers")
	})

	t.Run("an order naming an internal authorization is refused", func(t *testing.T) {
		internal := internalService(t)
		ca := newHostileCA(t)
		ca.mux.HandleFunc("POST /new-order", func(w http.ResponseWriter, _ *http.Request) {
			ca.order(w, []string{"a.example"}, []string{internal.URL + "/authz"})
		})
		client, err := hostileClient(ctx, t, ca)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.NewOrder(ctx, []string{"a.example"}, "")
		checkMessage(t, err, "only to the directory's scheme and host")
		if _, err := client.GetAuthorization(ctx, internal.URL+"/authz"); err == nil {
			t.Error("GetAuthorization of an internal URL succeeded")
		}
		if n := internal.connections.Load(); n != 0 {
			t.Errorf("the internal service got %d connections, want 0", n)
		}
	})
}

// TestDialPolicy: a client with a dial policy connects only where it allows (the hostile CA
// listens on loopback).
func TestDialPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := newHostileCA(t)
	key, err := pki.GenerateKey(pki.ECDSA, 256)
	if err != nil {
		t.Fatal(err)
	}
	_, err = acme.New(ctx, acme.Options{DirectoryURL: ca.URL + "/dir", AccountKey: key, DialPolicy: &netguard.Policy{}})
	checkMessage(t, err, "not granted by the administrator")
	if !acme.IsPermanent(err) || !netguard.IsRefused(err) {
		t.Errorf("IsPermanent = %v, IsRefused = %v; want both", acme.IsPermanent(err), netguard.IsRefused(err))
	}
	if n := ca.connections.Load(); n != 0 {
		t.Fatalf("the server got %d connections, want 0", n)
	}
	loopback, err := netguard.ParseCIDRs("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acme.New(ctx, acme.Options{DirectoryURL: ca.URL + "/dir", AccountKey: key, DialPolicy: &netguard.Policy{Allow: loopback}}); err != nil {
		t.Fatalf("New with loopback granted: %v", err)
	}
}

func TestCheckOrderIdentifiers(t *testing.T) {
	tests := map[string]struct {
		identifiers, asked []string
		wantErr            bool
	}{
		"same names":              {identifiers: []string{"a.example", "b.example"}, asked: []string{"a.example", "b.example"}},
		"another order, any case": {identifiers: []string{"B.example", "a.example"}, asked: []string{"a.example", "b.example"}},
		"a name more":             {identifiers: []string{"a.example", "b.example"}, asked: []string{"a.example"}, wantErr: true},
		"a name fewer":            {identifiers: []string{"a.example"}, asked: []string{"a.example", "b.example"}, wantErr: true},
		"another name":            {identifiers: []string{"victim.example"}, asked: []string{"a.example"}, wantErr: true},
		"wildcard is not base":    {identifiers: []string{"example.com"}, asked: []string{"*.example.com"}, wantErr: true},
		"no identifiers":          {asked: []string{"a.example"}, wantErr: true},
		"IP addresses":            {identifiers: []string{"a.example", "192.0.2.1", "2001:db8::1"}, asked: []string{"2001:db8::1", "a.example", "192.0.2.1"}},
		"another IP address":      {identifiers: []string{"192.0.2.2"}, asked: []string{"192.0.2.1"}, wantErr: true},
		// fromOrder marks an identifier whose type does not fit its value ("dns" for an IP
		// address): it matches nothing asked.
		"IP address as a dns identifier": {identifiers: []string{"dns:192.0.2.1"}, asked: []string{"192.0.2.1"}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := acme.CheckOrderIdentifiers(&acme.Order{URL: "https://ca.example/order/1", Identifiers: tc.identifiers}, tc.asked)
			if (err != nil) != tc.wantErr {
				t.Fatalf("CheckOrderIdentifiers = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !acme.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false, want true", err)
			}
		})
	}
}

package testenv

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPebbleGuardRule(t *testing.T) {
	tests := map[string]struct {
		method, path string
		want         guardHold
	}{
		"new order":                {http.MethodPost, "/order-plz", holdExclusive},
		"authorization":            {http.MethodPost, "/authZ/abc", holdShared},
		"authorization GET":        {http.MethodGet, "/authZ/abc", holdShared},
		"challenge":                {http.MethodPost, "/chalZ/abc", holdNone},
		"order":                    {http.MethodPost, "/my-order/abc", holdNone},
		"finalize":                 {http.MethodPost, "/finalize-order/abc", holdNone},
		"nonce":                    {http.MethodHead, "/nonce-plz", holdNone},
		"directory":                {http.MethodGet, "/dir", holdNone},
		"new order path, not POST": {http.MethodGet, "/order-plz", holdNone},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := pebbleGuardRule(tc.method, tc.path); got != tc.want {
				t.Errorf("pebbleGuardRule(%s, %s) = %d, want %d", tc.method, tc.path, got, tc.want)
			}
		})
	}
}

// TestPebbleGuardHold checks that a new-order waits for an authorization request in flight and
// that authorization requests share the guard.
func TestPebbleGuardHold(t *testing.T) {
	var guard PebbleGuard
	releaseFirst := guard.Hold(http.MethodPost, "/authZ/1")
	releaseSecond := guard.Hold(http.MethodPost, "/authZ/2") // shared: does not wait
	acquired := make(chan struct{})
	go func() {
		release := guard.Hold(http.MethodPost, "/order-plz")
		close(acquired)
		release()
	}()
	releaseFirst()
	select {
	case <-acquired:
		t.Fatal("new-order held the guard while an authorization request was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	releaseSecond()
	select {
	case <-acquired:
	case <-time.After(5 * time.Second):
		t.Fatal("new-order did not get the guard after the authorization requests ended")
	}
}

// TestPebbleGuardedProxy reads Pebble's directory through the proxy: it is trusted with
// Pebble's CABundle, and the URLs in it point at the proxy.
func TestPebbleGuardedProxy(t *testing.T) {
	pebble := StartPebble(t, PebbleOptions{})
	proxy, err := pebble.StartGuardedProxy(&PebbleGuard{})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	res, err := pebble.HTTPClient().Get(proxy.DirectoryURL())
	if err != nil {
		t.Fatalf("getting the directory through the proxy: %v", err)
	}
	defer res.Body.Close()
	var directory map[string]any
	if err := json.NewDecoder(res.Body).Decode(&directory); err != nil {
		t.Fatal(err)
	}
	newOrder, _ := directory["newOrder"].(string)
	if want := "https://" + proxy.ListenAddress + pebbleNewOrderPath; newOrder != want {
		t.Errorf("newOrder = %q, want %q", newOrder, want)
	}
	if strings.Contains(newOrder, pebble.ListenAddress) {
		t.Errorf("newOrder %q points past the proxy", newOrder)
	}
	proxy.Close()
	proxy.Close() // idempotent
}

package testenv

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestPebbleProxy reads Pebble's directory through the proxy: it is trusted with Pebble's
// CABundle, and the URLs in it point at the proxy.
func TestPebbleProxy(t *testing.T) {
	pebble := StartPebble(t, PebbleOptions{})
	proxy, err := pebble.StartProxy(func(next http.Handler) http.Handler { return next })
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
	if want := "https://" + proxy.ListenAddress + "/order-plz"; newOrder != want {
		t.Errorf("newOrder = %q, want %q", newOrder, want)
	}
	if strings.Contains(newOrder, pebble.ListenAddress) {
		t.Errorf("newOrder %q points past the proxy", newOrder)
	}
	proxy.Close()
	proxy.Close() // idempotent
}

package acme

import (
	"fmt"
	"testing"
	"time"
)

func TestNoncePool(t *testing.T) {
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	t.Run("freshest first, then empty", func(t *testing.T) {
		var pool noncePool
		pool.put("a", start)
		pool.put("", start) // dropped
		pool.put("b", start.Add(time.Second))
		for _, want := range []string{"b", "a"} {
			if got, ok := pool.take(start.Add(2 * time.Second)); !ok || got != want {
				t.Fatalf("take = %q, %v; want %q", got, ok, want)
			}
		}
		if got, ok := pool.take(start); ok {
			t.Fatalf("take from an empty pool = %q", got)
		}
	})
	t.Run("a nonce past its age is not sent", func(t *testing.T) {
		var pool noncePool
		pool.put("old", start)
		pool.put("fresh", start.Add(nonceMaxAge))
		if got, ok := pool.take(start.Add(nonceMaxAge)); !ok || got != "fresh" {
			t.Fatalf("take = %q, %v; want fresh", got, ok)
		}
		if got, ok := pool.take(start.Add(nonceMaxAge)); ok {
			t.Fatalf("take = %q, want none: the rest is past its age", got)
		}
	})
	t.Run("bounded: the oldest go", func(t *testing.T) {
		var pool noncePool
		for i := range maxPooledNonces + 2 {
			pool.put(fmt.Sprint(i), start)
		}
		taken := 0
		last := ""
		for {
			nonce, ok := pool.take(start)
			if !ok {
				break
			}
			taken, last = taken+1, nonce
		}
		if taken != maxPooledNonces || last != "2" {
			t.Fatalf("took %d, the last %q; want %d, the last \"2\"", taken, last, maxPooledNonces)
		}
	})
}

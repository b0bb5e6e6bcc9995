package acme

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFinishingTransport: a POST of a finishOnceSent context that the server holds past the
// caller's cancel still brings back the server's answer; without the mark the caller's cancel
// cuts it; a marked POST whose context ended before it was sent is not sent.
func TestFinishingTransport(t *testing.T) {
	received := make(chan struct{}, 1)
	release := make(chan struct{})
	var requests atomic.Int32
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		received <- struct{}{}
		<-release
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "order made")
	}))
	defer server.Close()
	client := &http.Client{Transport: finishingTransport{base: http.DefaultTransport}}
	post := func(ctx context.Context) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, server.URL, strings.NewReader("{}"))
		if err != nil {
			return "", err
		}
		res, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return string(body), err
	}
	cancelWhenReceived := func(cancel context.CancelFunc) {
		<-received
		cancel()
		release <- struct{}{}
	}

	t.Run("marked: finishes after the caller's cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		go cancelWhenReceived(cancel)
		body, err := post(finishOnceSent(ctx))
		if err != nil || body != "order made" {
			t.Fatalf("got %q, %v; want the server's answer", body, err)
		}
	})
	t.Run("unmarked: cut by the caller's cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-received
			cancel()
		}()
		_, err := post(ctx)
		release <- struct{}{} // the server answers only after the client gave up
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
	t.Run("marked: not sent once ended", func(t *testing.T) {
		before := requests.Load()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := post(finishOnceSent(ctx)); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if requests.Load() != before {
			t.Fatal("a POST whose context had ended was sent")
		}
	})
}

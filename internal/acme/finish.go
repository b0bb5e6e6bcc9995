package acme

import (
	"context"
	"io"
	"net/http"
)

// A request that makes something at the CA, cut by the caller's deadline after the CA acted on
// it, leaves that thing unknown to the caller: a new order nobody records, which the next
// attempt orders again. Such a request is started only with its whole RequestTimeout left
// (RoomForRequest), and once sent it finishes on its own timeout even when the caller's context
// ends first (finishOnceSent): x/crypto takes a nonce for it under a lock that may be held by a
// slow nonce request, so it can be sent late in the caller's deadline.

// finishOnceSentKey marks a context made by finishOnceSent.
type finishOnceSentKey struct{}

// finishOnceSent returns ctx marked so that its POSTs, once sent, run to their own
// RequestTimeout whatever happens to ctx (finishingTransport). A POST whose ctx has ended
// before it is sent is not sent.
func finishOnceSent(ctx context.Context) context.Context {
	return context.WithValue(ctx, finishOnceSentKey{}, true)
}

// finishingTransport gives the POSTs of a finishOnceSent context a context of their own,
// bounded by RequestTimeout, which ends when the response's body is closed.
type finishingTransport struct {
	base http.RoundTripper
}

func (t finishingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.Method != http.MethodPost || ctx.Value(finishOnceSentKey{}) == nil || ctx.Err() != nil {
		return t.base.RoundTrip(req)
	}
	own, cancel := context.WithTimeout(context.WithoutCancel(ctx), RequestTimeout)
	res, err := t.base.RoundTrip(req.WithContext(own))
	if err != nil {
		cancel()
		return nil, err
	}
	res.Body = &cancelOnClose{ReadCloser: res.Body, cancel: cancel}
	return res, nil
}

// cancelOnClose ends a request's own context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

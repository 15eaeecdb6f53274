package agent

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Served tells what a discovery answer for a resource means: served (no
// error), not served (NotFound: the CRD is not installed), or no answer yet
// (anything else: the API server unreachable or starting, a timeout), to be
// asked again.
func Served(err error) (served, retry bool) {
	switch {
	case err == nil:
		return true, false
	case apierrors.IsNotFound(err):
		return false, false
	default:
		return false, true
	}
}

// waitServed asks discover until it gives a definite answer (Served), with
// a backoff from first doubling up to max between tries; onRetry hears of
// every error it retries. It returns ctx's error when ctx ends first. The
// agent never starts reconciling on a guess: without NADs it would delete
// every NAD network's routes until the next resync.
func waitServed(ctx context.Context, discover func() error, first, max time.Duration, onRetry func(err error, in time.Duration)) (bool, error) {
	backoff := first
	for {
		err := discover()
		served, retry := Served(err)
		if !retry {
			return served, nil
		}
		onRetry(err, backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, max)
	}
}

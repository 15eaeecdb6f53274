package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestServedFromTheAPIServer classifies the errors client-go's discovery
// really returns, from an HTTP server answering as the API server would.
func TestServedFromTheAPIServer(t *testing.T) {
	for _, tc := range []struct {
		name          string
		status        int
		body          string
		served, retry bool
	}{
		{"served", 200, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"k8s.cni.cncf.io/v1","resources":[{"name":"network-attachment-definitions","namespaced":true,"kind":"NetworkAttachmentDefinition","verbs":["get","list","watch"]}]}`, true, false},
		{"CRD not installed", 404, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, false, false},
		{"API server starting", 503, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","code":503}`, false, true},
		{"forbidden for now (RBAC not there yet)", 403, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}`, false, true},
		{"internal error", 500, `oops`, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				assert.Equal(t, "/apis/k8s.cni.cncf.io/v1", r.URL.Path)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			kube, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
			require.NoError(t, err)
			_, err = kube.Discovery().ServerResourcesForGroupVersion(NADResource().GroupVersion().String())
			served, retry := Served(err)
			assert.Equal(t, []bool{tc.served, tc.retry}, []bool{served, retry}, "error %v", err)
		})
	}
	// Nobody listening.
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	require.NoError(t, err)
	_, err = kube.Discovery().ServerResourcesForGroupVersion("k8s.cni.cncf.io/v1")
	served, retry := Served(err)
	assert.Equal(t, []bool{false, true}, []bool{served, retry}, "connection refused: %v", err)
}

// TestWaitServed: at start-up the agent waits for a definite answer instead
// of running without NADs, which deleted every NAD network's routes until
// the next resync.
func TestWaitServed(t *testing.T) {
	unavailable := apierrors.NewServiceUnavailable("starting")
	notFound := apierrors.NewNotFound(schema.GroupResource{Group: "k8s.cni.cncf.io"}, "v1")
	refused := errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	for _, tc := range []struct {
		name    string
		answers []error
		served  bool
		retries []time.Duration
	}{
		{"served at once", []error{nil}, true, nil},
		{"not served at once", []error{notFound}, false, nil},
		{"served after the API server came back", []error{refused, unavailable, unavailable, nil}, true, []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}},
		{"not served after errors", []error{unavailable, notFound}, false, []time.Duration{time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			discover := func() error {
				err := tc.answers[calls]
				calls++
				return err
			}
			var retries []time.Duration
			served, err := waitServed(context.Background(), discover, time.Millisecond, 3*time.Millisecond, func(_ error, in time.Duration) {
				retries = append(retries, in)
			})
			require.NoError(t, err)
			assert.Equal(t, tc.served, served)
			assert.Equal(t, len(tc.answers), calls)
			assert.Equal(t, tc.retries, retries)
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	served, err := waitServed(ctx, func() error { calls++; return unavailable }, time.Millisecond, time.Millisecond, func(error, time.Duration) {
		if calls == 3 {
			cancel()
		}
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, served)
	assert.Equal(t, 3, calls)
}

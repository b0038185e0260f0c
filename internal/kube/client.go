// Package kube reads what the Kubernetes control plane says of the pod the
// process runs in: the EndpointSlices of its namespace, listed and watched
// through the API with the pod's service account, reduced to a [Snapshot]
// of whether its Services route to it and whether it is the last endpoint
// of one. Only the standard library is needed: the API speaks JSON over
// HTTPS.
//
// The package knows Kubernetes: the service account's files, the API's
// requests and answers, resource versions, and what kube-proxy does with
// an endpoint's conditions. What the process does about it, and when, is
// the drain delay's policy, in the root package.
package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A Client reads the EndpointSlices of the pod's namespace. [InCluster]
// returns the pod's own; tests build one on a fake API.
type Client struct {
	Base      string                 // the API's URL, such as https://10.96.0.1:443
	HTTP      *http.Client           // trusts the cluster's CA
	Token     func() (string, error) // the bearer token, read for every request
	Namespace string
	Addrs     []netip.Addr // the pod's addresses
}

// How long the client waits, and how often it resumes a dropped watch
// before it gives up.
const (
	// apiTimeout bounds connecting to the API and waiting for its
	// answer's header, so that an unreachable API server falls back in
	// time.
	apiTimeout   = 2 * time.Second
	watchRetries = 5
	watchBackoff = 100 * time.Millisecond
)

// ServiceAccountDir holds the service account's files, as the kubelet
// mounts them in every pod.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InCluster returns the client of the pod's service account, or nil and
// no error outside Kubernetes (no KUBERNETES_SERVICE_HOST). Its errors say
// what to change in the pod spec.
func InCluster() (*Client, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, nil
	}
	ns, err := os.ReadFile(filepath.Join(ServiceAccountDir, "namespace"))
	if err != nil {
		return nil, fmt.Errorf("reading the pod's namespace: %w; mount the service account token (automountServiceAccountToken: true)", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(ServiceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's CA: %w; mount the service account token (automountServiceAccountToken: true)", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s/ca.crt holds no PEM certificate", ServiceAccountDir)
	}
	addrs, err := PodAddrs()
	if err != nil {
		return nil, err
	}
	return &Client{
		Base:      "https://" + net.JoinHostPort(host, port),
		HTTP:      httpClient(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		Namespace: strings.TrimSpace(string(ns)),
		Addrs:     addrs,
		// Projected tokens are rotated: read the file for every request.
		Token: func() (string, error) {
			b, err := os.ReadFile(filepath.Join(ServiceAccountDir, "token"))
			return strings.TrimSpace(string(b)), err
		},
	}, nil
}

// httpClient is quick to give up on an API server that does not answer,
// never on a watch that streams.
func httpClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:       tlsConfig,
		DialContext:           (&net.Dialer{Timeout: apiTimeout}).DialContext,
		TLSHandshakeTimeout:   apiTimeout,
		ResponseHeaderTimeout: apiTimeout,
		ForceAttemptHTTP2:     true,
	}}
}

// PodAddrs returns the pod's addresses: POD_IP (and POD_IPS, for dual
// stack) when the downward API sets them, or else every address of the
// pod's interfaces but loopback.
func PodAddrs() ([]netip.Addr, error) {
	var addrs []netip.Addr
	for _, env := range []string{"POD_IP", "POD_IPS"} {
		for _, s := range strings.Split(os.Getenv(env), ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%s is %q, not an IP address; set it from the downward API (fieldRef: status.podIP)", env, s)
			}
			addrs = append(addrs, a.Unmap())
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("finding the pod's address: %w; set POD_IP from the downward API (fieldRef: status.podIP)", err)
	}
	for _, ia := range ifaddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			addrs = append(addrs, p.Addr().Unmap())
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("the pod has no address but loopback; set POD_IP from the downward API (fieldRef: status.podIP)")
	}
	return addrs, nil
}

// Check asks the API for one EndpointSlice: it says whether the watch
// will be allowed, and opens the connection the watch will then use, so
// that the watch starts without a TLS handshake.
func (c *Client) Check(ctx context.Context) error {
	resp, err := c.get(ctx, c.url(url.Values{"limit": {"1"}}))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) //nolint:errcheck // the connection is kept if the body was read
	return nil
}

// Refused reports whether err is the API's refusal of the service
// account (401, 403): asking again will not help.
func Refused(err error) bool {
	var se *statusError
	return errors.As(err, &se) && (se.code == http.StatusForbidden || se.code == http.StatusUnauthorized)
}

// errGone is the API's answer to a watch from a resource version it no
// longer has.
var errGone = errors.New("resource version gone")

// statusError is an answer of the API other than success.
type statusError struct {
	code int
	msg  string
	ns   string
}

func (e *statusError) Error() string {
	what := fmt.Sprintf("the Kubernetes API answered %d %s", e.code, http.StatusText(e.code))
	if e.msg != "" {
		what += ": " + e.msg
	}
	switch e.code {
	case http.StatusForbidden:
		what += fmt.Sprintf("; grant the pod's service account get, list and watch on endpointslices (apiGroup discovery.k8s.io) in namespace %q with a Role and a RoleBinding, as examples/kubernetes does", e.ns)
	case http.StatusUnauthorized:
		what += "; the service account token was refused: mount a current one (automountServiceAccountToken: true)"
	}
	return what
}

// apiStatus is the API's account of a failure.
type apiStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (c *Client) url(query url.Values) string {
	return c.Base + "/apis/discovery.k8s.io/v1/namespaces/" + url.PathEscape(c.Namespace) + "/endpointslices?" + query.Encode()
}

func (c *Client) get(ctx context.Context, u string) (*http.Response, error) {
	token, err := c.Token()
	if err != nil {
		return nil, fmt.Errorf("reading the service account token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reaching the Kubernetes API at %s: %w", c.Base, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	var st apiStatus
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st) //nolint:errcheck // the code says enough without it
	if resp.StatusCode == http.StatusGone {
		return nil, errGone
	}
	return nil, &statusError{code: resp.StatusCode, msg: st.Message, ns: c.Namespace}
}

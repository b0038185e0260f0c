package rollout

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// backendDialTimeout bounds the proxy's dial to a pod. On loopback a dial
// either succeeds or is refused at once; the bound only matters for a pod
// that is wedged (SIGSTOPped, accept backlog full), and then the client is
// reset, as a SYN that is never answered would eventually fail it.
const backendDialTimeout = 3 * time.Second

// ProxyStats are the proxy's own observations. They help explain the
// clients' failures: a refused dial is a pod that no longer listened while
// kube-proxy still routed to it.
type ProxyStats struct {
	// Conns counts client connections accepted.
	Conns int64
	// NoEndpoint counts client connections reset because no endpoint was
	// ready.
	NoEndpoint int64
	// DialFailed counts client connections reset because the dial to the
	// chosen pod failed (usually refused: the pod had closed its listener).
	DialFailed int64
	// Resets counts connections torn down with a reset propagated from one
	// side to the other.
	Resets int64
}

// Proxy is a userspace TCP load balancer that plays kube-proxy on loopback.
//
// For each new client connection it picks the next ready endpoint
// (round-robin), dials it and splices bytes both ways. The connection stays
// pinned to that endpoint for its life, as conntrack pins it: changing the
// endpoints never moves an open connection. Closes are propagated as they
// happened, because a proxy that tidied them up would hide exactly the
// failures a rolling update causes:
//
//   - a FIN from one side half-closes the other side (CloseWrite) while the
//     other direction keeps flowing;
//   - a reset from one side, a failed write to it, or a refused dial resets
//     the other side (SO_LINGER 0, then Close), as iptables DNAT to a closed
//     port would make the client see a reset;
//   - the proxy never retries.
type Proxy struct {
	ln *net.TCPListener

	mu        sync.Mutex
	endpoints []string
	next      int
	conns     map[*proxyConn]struct{}
	closed    bool

	wg    sync.WaitGroup
	stats struct{ conns, noEndpoint, dialFailed, resets atomic.Int64 }

	// ordinals numbers the endpoints in the order they were first added.
	ordinals map[string]int32
	// routes maps a client connection's port to the ordinal (plus one) of
	// the endpoint it was routed to. Every client is on loopback and
	// connects to the one listener, so a port names one open connection;
	// an array indexed by it costs a request an atomic load, where a map
	// would cost a lock.
	routes [1 << 16]atomic.Int32
}

// NewProxy starts a proxy listening on addr, which must be a loopback
// address such as "127.0.0.1:0" (an OS-assigned port). It starts with no
// endpoints: connections are reset until [Proxy.AddEndpoint] is called.
func NewProxy(addr string) (*Proxy, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, fmt.Errorf("rollout: proxy: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rollout: proxy: listen on %s: %w (pick another port, or use port 0 for an OS-assigned one)", addr, err)
	}
	p := &Proxy{ln: ln.(*net.TCPListener), conns: make(map[*proxyConn]struct{}), ordinals: make(map[string]int32)}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// checkLoopback refuses addresses that are not on 127.0.0.0/8 or ::1: the
// simulator must never expose pods or load to a network.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q is not a loopback IP; use 127.0.0.1:PORT", addr)
	}
	return nil
}

// Addr returns the address clients connect to, like a Service's cluster IP
// and port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// AddEndpoint makes addr eligible for new connections. Adding an endpoint
// already present does nothing.
func (p *Proxy) AddEndpoint(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.endpoints, addr) {
		p.endpoints = append(p.endpoints, addr)
	}
	if _, ok := p.ordinals[addr]; !ok {
		p.ordinals[addr] = int32(len(p.ordinals))
	}
}

// RouteOf returns the endpoint a client connection was routed to, given the
// client's local address: its ordinal, counting the endpoints from 0 in the
// order they were first added. It returns -1 for a connection the proxy has
// not routed (yet), or not seen.
func (p *Proxy) RouteOf(client net.Addr) int {
	a, ok := client.(*net.TCPAddr)
	if !ok || a.Port <= 0 || a.Port >= len(p.routes) {
		return -1
	}
	return int(p.routes[a.Port].Load()) - 1
}

// RemoveEndpoint stops routing new connections to addr. Connections already
// open to it stay open, as conntrack keeps them.
func (p *Proxy) RemoveEndpoint(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endpoints = slices.DeleteFunc(p.endpoints, func(e string) bool { return e == addr })
}

// Endpoints returns the endpoints new connections are routed to.
func (p *Proxy) Endpoints() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.endpoints)
}

// Stats returns the proxy's counters so far.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{
		Conns:      p.stats.conns.Load(),
		NoEndpoint: p.stats.noEndpoint.Load(),
		DialFailed: p.stats.dialFailed.Load(),
		Resets:     p.stats.resets.Load(),
	}
}

// Close stops listening, closes every open connection (both sides) and waits
// for the proxy's goroutines to end.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.closeBoth()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	var tempDelay time.Duration
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off briefly, as
			// net/http does, rather than spin or give up.
			if tempDelay == 0 {
				tempDelay = 5 * time.Millisecond
			} else {
				tempDelay = min(2*tempDelay, time.Second)
			}
			time.Sleep(tempDelay)
			continue
		}
		tempDelay = 0
		p.stats.conns.Add(1)
		p.wg.Add(1)
		go p.handle(c)
	}
}

// pick chooses the endpoint of client's connection and records the route.
func (p *Proxy) pick(client net.Addr) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	port := -1
	if a, ok := client.(*net.TCPAddr); ok && a.Port > 0 && a.Port < len(p.routes) {
		port = a.Port
	}
	if len(p.endpoints) == 0 {
		if port > 0 {
			p.routes[port].Store(0)
		}
		return ""
	}
	p.next %= len(p.endpoints)
	ep := p.endpoints[p.next]
	p.next++
	if port > 0 {
		p.routes[port].Store(p.ordinals[ep] + 1)
	}
	return ep
}

// proxyConn is one spliced client connection.
type proxyConn struct {
	client, server *net.TCPConn
	once           sync.Once
}

// closeBoth closes both sides normally.
func (c *proxyConn) closeBoth() {
	c.client.Close()
	if c.server != nil {
		c.server.Close()
	}
}

// resetBoth closes both sides with a reset, so whoever is still there sees
// ECONNRESET rather than a clean EOF.
func (c *proxyConn) resetBoth() {
	c.once.Do(func() {
		resetConn(c.client)
		resetConn(c.server)
	})
}

// resetConn closes c so that the peer receives a RST: with SO_LINGER 0 the
// kernel discards unsent data and resets instead of sending a FIN.
func resetConn(c *net.TCPConn) {
	if c == nil {
		return
	}
	c.SetLinger(0)
	c.Close()
}

func (p *Proxy) handle(client *net.TCPConn) {
	defer p.wg.Done()
	ep := p.pick(client.RemoteAddr())
	if ep == "" {
		// A Service with no ready endpoints rejects connections.
		p.stats.noEndpoint.Add(1)
		resetConn(client)
		return
	}
	server, err := net.DialTimeout("tcp", ep, backendDialTimeout)
	if err != nil {
		// iptables DNAT to a port nobody listens on: the client sees a reset
		// (here, of the connection it already opened to the proxy).
		p.stats.dialFailed.Add(1)
		resetConn(client)
		return
	}
	c := &proxyConn{client: client, server: server.(*net.TCPConn)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.closeBoth()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	done := make(chan bool, 2)
	go func() { done <- p.pipe(c.server, c.client) }()
	go func() { done <- p.pipe(c.client, c.server) }()
	reset := <-done
	if reset {
		// One side broke hard: tear the other down the same way at once
		// instead of waiting for it to notice.
		p.stats.resets.Add(1)
		c.resetBoth()
	}
	<-done

	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.closeBoth()
}

// bufPool holds the copy buffers: when clients reconnect for every request
// (Connection: close during a drain) connections come and go by thousands a
// second, and fresh buffers for each would keep the collector busy on a
// machine whose CPU the pods and the load need.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies src to dst until src ends. A FIN from src is passed on as a
// half-close of dst. It reports whether the connection must be reset: src
// was reset, or dst could not be written to (its peer is gone, and a real
// peer's kernel would answer src's next segment with a reset).
func (p *Proxy) pipe(dst, src *net.TCPConn) (reset bool) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return !errors.Is(werr, net.ErrClosed)
			}
		}
		if rerr == nil {
			continue
		}
		if rerr == io.EOF {
			// Keep the other direction flowing: a client may still read a
			// response after it half-closed, and a server may still read a
			// request after it sent its last byte.
			dst.CloseWrite()
			return false
		}
		// Closed by us (Close, or the other pipe resetting), or reset by
		// the peer.
		return !errors.Is(rerr, net.ErrClosed) && isReset(rerr)
	}
}

// isReset reports whether err is a connection reset or broken pipe.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// isRefused reports whether err is a refused connection.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// isTimeout reports whether err is a deadline or timeout.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

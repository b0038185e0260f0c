package record

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Kind classifies a failed request by what the client saw. The kinds say
// how far a request got, which is what decides whether a client could
// safely have retried it: a refused connection never reached a server, a
// reset or an EOF on a reused connection may have been processed. The zero
// Kind is KindRefused.
type Kind int

const (
	// KindRefused means the connection was refused, or was reset before
	// the client got any byte of a response on a connection that had
	// never carried one. Behind a userspace proxy the client's handshake
	// completes with the proxy, so a pod that refuses the proxy's dial can
	// only be signalled as a reset of that fresh connection; the pod never
	// saw the request.
	KindRefused Kind = iota
	// KindReset means a reused connection was reset while sending the
	// request or waiting for the response.
	KindReset
	// KindEOF means the connection was closed (FIN) before a complete
	// response: typically a server closing a keep-alive connection the
	// client had just written a request on, or dropping a request read
	// during shutdown.
	KindEOF
	// Kind5xx means a complete response with a 5xx status.
	Kind5xx
	// KindTimeout means no complete response within the per-request
	// timeout.
	KindTimeout
	// KindOther means anything else (malformed response, unexpected
	// status, a gRPC code that is not a transport failure, ...); the run's
	// text report gives the first such error.
	KindOther

	// NumKinds is the number of kinds; it sizes arrays indexed by Kind.
	NumKinds
)

var kindNames = [NumKinds]string{"refused", "reset", "eof", "5xx", "timeout", "other"}

// String returns the kind's short name as used in reports ("refused",
// "reset", "eof", "5xx", "timeout", "other").
func (k Kind) String() string {
	if k < 0 || k >= NumKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// MarshalText returns the kind's name, so recorded timelines read as they
// print.
func (k Kind) MarshalText() ([]byte, error) {
	if k < 0 || k >= NumKinds {
		return nil, fmt.Errorf("record: no such kind %d", int(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText parses a kind's name, as written by MarshalText.
func (k *Kind) UnmarshalText(b []byte) error {
	i := slices.Index(kindNames[:], string(b))
	if i < 0 {
		return fmt.Errorf("record: unknown failure kind %q; the kinds are %v", b, kindNames)
	}
	*k = Kind(i)
	return nil
}

// KindCounts counts failed requests by kind: KindCounts[KindRefused] is
// the number refused. As JSON it is an object with every kind by name,
// {"refused": 63, "reset": 0, ...}. The zero KindCounts counts none.
type KindCounts [NumKinds]int64

// MarshalJSON writes every kind by name, zeros included, in the kinds'
// order.
func (c KindCounts) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for k, n := range c {
		if k > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%d", Kind(k), n)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes; a kind left out counts
// zero, an unknown one is an error.
func (c *KindCounts) UnmarshalJSON(b []byte) error {
	var m map[string]int64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*c = KindCounts{}
	for name, n := range m {
		var k Kind
		if err := k.UnmarshalText([]byte(name)); err != nil {
			return err
		}
		c[k] = n
	}
	return nil
}

// Sum returns the number of failed requests, all kinds together.
func (c KindCounts) Sum() int64 {
	var n int64
	for _, f := range c {
		n += f
	}
	return n
}

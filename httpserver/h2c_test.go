package httpserver_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// h2Frame is one HTTP/2 frame read by rawH2.
type h2Frame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameSettings     = 0x4
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	flagEndStream     = 0x1
	flagEndHeaders    = 0x4
	flagAck           = 0x1
)

// rawH2 is an HTTP/2 client with prior knowledge written frame by frame,
// so that a test sees every frame the server sends, GOAWAY included.
type rawH2 struct {
	net.Conn
	r *bufio.Reader
}

func dialH2C(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	h := &rawH2{Conn: c, r: bufio.NewReader(c)}
	_, err = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	require.NoError(t, err)
	h.write(t, frameSettings, 0, 0, nil)
	return h
}

func (h *rawH2) write(t *testing.T, typ, flags byte, stream uint32, payload []byte) {
	t.Helper()
	hdr := make([]byte, 9, 9+len(payload))
	hdr[0], hdr[1], hdr[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	hdr[3], hdr[4] = typ, flags
	binary.BigEndian.PutUint32(hdr[5:], stream)
	_, err := h.Write(append(hdr, payload...))
	require.NoError(t, err)
}

// get opens stream id with a GET / request, encoded with the HPACK static
// table: :method GET, :path /, :scheme http, and a literal :authority.
func (h *rawH2) get(t *testing.T, id uint32) {
	t.Helper()
	block := []byte{0x82, 0x84, 0x86, 0x01, 4, 't', 'e', 's', 't'}
	h.write(t, frameHeaders, flagEndHeaders|flagEndStream, id, block)
}

// read reads the next frame, acknowledging the server's SETTINGS and PINGs
// and giving back the flow-control window that DATA frames use.
func (h *rawH2) read(t *testing.T) h2Frame {
	t.Helper()
	for {
		h.SetReadDeadline(time.Now().Add(waitTimeout))
		var hdr [9]byte
		_, err := io.ReadFull(h.r, hdr[:])
		require.NoError(t, err)
		f := h2Frame{typ: hdr[3], flags: hdr[4], stream: binary.BigEndian.Uint32(hdr[5:]) & 0x7fffffff}
		f.payload = make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		_, err = io.ReadFull(h.r, f.payload)
		require.NoError(t, err, "a frame cut short: the server's output is no longer a stream of frames")
		switch {
		case f.typ == frameSettings && f.flags&flagAck == 0:
			h.write(t, frameSettings, flagAck, 0, nil)
		case f.typ == framePing && f.flags&flagAck == 0:
			h.write(t, framePing, flagAck, 0, f.payload)
		case f.typ == frameData && len(f.payload) > 0:
			increment := binary.BigEndian.AppendUint32(nil, uint32(len(f.payload)))
			h.write(t, frameWindowUpdate, 0, 0, increment)
			h.write(t, frameWindowUpdate, 0, f.stream, increment)
			return f
		default:
			return f
		}
	}
}

func TestH2CGoAwayRefusesNoStream(t *testing.T) {
	// Responses of several DATA frames, so that the GOAWAY has to find its
	// place between frames of a response being written.
	body := strings.Repeat("x", 40_000)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })
	p := start(t, config{delay: time.Second, handler: handler, ready: true})
	h := dialH2C(t, p.addr)

	// ended collects, until every stream given has ended, the data each
	// received and the GOAWAYs seen.
	ended := func(streams ...uint32) (data map[uint32]int, goAways []h2Frame) {
		data = map[uint32]int{}
		open := map[uint32]bool{}
		for _, id := range streams {
			open[id] = true
		}
		for len(open) > 0 {
			f := h.read(t)
			switch f.typ {
			case frameGoAway:
				goAways = append(goAways, f)
			case frameData:
				data[f.stream] += len(f.payload)
			}
			if (f.typ == frameData || f.typ == frameHeaders) && f.flags&flagEndStream != 0 {
				delete(open, f.stream)
			}
		}
		return data, goAways
	}

	h.get(t, 1)
	data, goAways := ended(1)
	assert.Equal(t, len(body), data[1])
	assert.Empty(t, goAways, "no GOAWAY before the shutdown")

	p.sigterm(t)
	// Streams opened together during the delay: the GOAWAY that the first
	// response triggers must refuse none of them.
	for id := uint32(3); id <= 11; id += 2 {
		h.get(t, id)
	}
	data, goAways = ended(3, 5, 7, 9, 11)
	for id := uint32(3); id <= 11; id += 2 {
		assert.Equal(t, len(body), data[id], "stream %d answered in full", id)
	}
	require.Len(t, goAways, 1)
	last := binary.BigEndian.Uint32(goAways[0].payload) & 0x7fffffff
	code := binary.BigEndian.Uint32(goAways[0].payload[4:])
	assert.Equal(t, uint32(1<<31-1), last, "the GOAWAY refuses no stream")
	assert.Zero(t, code, "NO_ERROR")

	// The client has been told to leave; once it does, the drain ends.
	h.Close()
	p.endDelay(t, time.Second)
	require.NoError(t, p.wait(t))
}

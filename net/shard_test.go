package net

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/crypto"
	"github.com/peerdrive/peerdrive/store"
)

// Tests here run real libp2p hosts on 127.0.0.1, with store.Shards (badger in
// t.TempDir()) behind the server unless a test needs a misbehaving one.

func testShard(n int, seed byte) (peerdrive.ShardID, []byte) {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i) ^ byte(i>>8)
	}
	return peerdrive.ShardID(crypto.ContentID(b)), b
}

func openShards(t testing.TB, capacity int64) *store.Shards {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := store.NewShards(db, capacity)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// connect connects a to b with all of b's addresses, as discovery would.
func connect(t *testing.T, a, b *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Host().Connect(ctx, peer.AddrInfo{ID: b.Host().ID(), Addrs: b.Host().Addrs()}); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// servingPair starts a client and a server node (TCP and QUIC on loopback)
// with s behind the server, connected, the server a storage peer of the
// client.
func servingPair(t *testing.T, s ShardStore) (client, server *Node) {
	t.Helper()
	client = startNode(t, loopTCP, loopQUIC)
	server = startNode(t, loopTCP, loopQUIC)
	server.ServeShards(s)
	connect(t, client, server)
	waitFor(t, 2*time.Second, "server among storage peers", func() bool {
		return slices.Contains(client.StoragePeers(), server.Host().ID())
	})
	return client, server
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestShardRoundTrip(t *testing.T) {
	shards := openShards(t, 64<<20)
	a, b := servingPair(t, shards)
	ctx := ctxT(t, 30*time.Second)
	bp := b.Host().ID()

	for _, size := range []int{0, 1, 100 << 10, MaxShardSize} {
		id, data := testShard(size, byte(size))
		if err := a.PutShard(ctx, bp, id, data); err != nil {
			t.Fatalf("PutShard(%d bytes): %v", size, err)
		}
		got, err := a.GetShard(ctx, bp, id)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("GetShard(%d bytes) = %d bytes, %v", size, len(got), err)
		}
		owners, err := shards.Owners(ctx, id)
		if err != nil || !slices.Equal(owners, []string{a.ID()}) {
			t.Fatalf("owners = %v, %v; want the client", owners, err)
		}
	}
	idSmall, _ := testShard(1, 1)
	missing, _ := testShard(7, 7)
	have, err := a.HasShards(ctx, bp, []peerdrive.ShardID{idSmall, missing, idSmall})
	if err != nil || !slices.Equal(have, []bool{true, false, true}) {
		t.Fatalf("HasShards = %v, %v", have, err)
	}
	// More than one HAS request's worth.
	many := make([]peerdrive.ShardID, MaxHasIDs+5)
	many[MaxHasIDs+2] = idSmall
	have, err = a.HasShards(ctx, bp, many)
	if err != nil || len(have) != len(many) || !have[MaxHasIDs+2] || have[0] {
		t.Fatalf("HasShards(%d ids) = %d answers, %v", len(many), len(have), err)
	}

	st, err := a.StatPeer(ctx, bp)
	if err != nil {
		t.Fatal(err)
	}
	wantUsed := int64(1 + 100<<10 + MaxShardSize)
	if st.Used != wantUsed || st.Capacity != 64<<20 || st.Shards != 4 || st.Free() != 64<<20-wantUsed {
		t.Fatalf("StatPeer = %+v", st)
	}

	if err := a.DeleteShard(ctx, bp, idSmall); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetShard(ctx, bp, idSmall); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetShard after delete = %v, want ErrNotFound", err)
	}
	var se *StatusError
	if err := a.DeleteShard(ctx, bp, idSmall); !errors.Is(err, ErrNotFound) || !errors.As(err, &se) || se.Status != StatusNotFound {
		t.Fatalf("second DeleteShard = %v, want ErrNotFound", err)
	}

	huge := make([]byte, MaxShardSize+1)
	if err := a.PutShard(ctx, bp, peerdrive.ShardID{}, huge); !errors.Is(err, ErrRefused) {
		t.Fatalf("PutShard over the limit = %v, want ErrRefused", err)
	}

	sc := a.PeerScore(bp)
	if sc.Successes < 10 || sc.Failures != 0 || sc.Latency <= 0 || !sc.Healthy() {
		t.Fatalf("score after good requests = %+v", sc)
	}
	// Every stream went over TCP, though both nodes listen on QUIC too.
	if tcp, other := b.serverStreams(); tcp < 10 || other != 0 {
		t.Fatalf("server streams: %d over TCP, %d otherwise", tcp, other)
	}
	for _, c := range a.Host().Network().ConnsToPeer(bp) {
		if !isTCP(c) {
			t.Errorf("connection over %s, want TCP only", c.RemoteMultiaddr())
		}
	}
}

func TestShardPutWrongHash(t *testing.T) {
	shards := openShards(t, 1<<20)
	a, b := servingPair(t, shards)
	ctx := ctxT(t, 10*time.Second)
	id, _ := testShard(1000, 1)
	_, other := testShard(1000, 2)
	err := a.PutShard(ctx, b.Host().ID(), id, other)
	var se *StatusError
	if !errors.Is(err, ErrBadShard) || !errors.As(err, &se) || se.Status != StatusBadHash {
		t.Fatalf("PutShard with wrong bytes = %v, want bad-hash", err)
	}
	if ok, _ := shards.Has(ctx, id); ok {
		t.Fatal("server stored bytes that do not match the id")
	}
	// The server answered correctly: no mark against it.
	if sc := a.PeerScore(b.Host().ID()); sc.BadShards != 0 || !sc.Healthy() {
		t.Fatalf("score = %+v", sc)
	}
}

// lyingStore returns every shard with one bit flipped.
type lyingStore struct{ ShardStore }

func (l lyingStore) Get(ctx context.Context, id peerdrive.ShardID) ([]byte, error) {
	b, err := l.ShardStore.Get(ctx, id)
	if err == nil && len(b) > 0 {
		b[len(b)/2] ^= 0x10
	}
	return b, err
}

func TestShardLyingServer(t *testing.T) {
	a, liar := servingPair(t, lyingStore{openShards(t, 1<<20)})
	honest := startNode(t, loopTCP)
	honest.ServeShards(openShards(t, 1<<20))
	connect(t, a, honest)
	ctx := ctxT(t, 10*time.Second)
	lp, hp := liar.Host().ID(), honest.Host().ID()

	id, data := testShard(50<<10, 3)
	for _, p := range []peer.ID{lp, hp} {
		if err := a.PutShard(ctx, p, id, data); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.GetShard(ctx, lp, id)
	if !errors.Is(err, ErrBadShard) || got != nil {
		t.Fatalf("GetShard from a liar = %d bytes, %v; want ErrBadShard", len(got), err)
	}
	if got, err := a.GetShard(ctx, hp, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetShard from the honest peer = %v", err)
	}
	sc := a.PeerScore(lp)
	if sc.BadShards != 1 || sc.Healthy() {
		t.Fatalf("liar's score = %+v, want one bad shard, unhealthy", sc)
	}
	if r := a.RankPeers([]peer.ID{lp, hp}); !slices.Equal(r, []peer.ID{hp, lp}) {
		t.Fatalf("RankPeers = %v, want the honest peer first", r)
	}
}

// rawHandler serves the shard protocol on n with f (for misbehaving
// servers); streams are reset at the end of the test.
func rawHandler(t *testing.T, n *Node, f func(s network.Stream)) {
	var mu sync.Mutex
	var streams []network.Stream
	n.Host().SetStreamHandler(ShardProtocol, func(s network.Stream) {
		mu.Lock()
		streams = append(streams, s)
		mu.Unlock()
		f(s)
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range streams {
			s.Reset()
		}
	})
}

func TestShardHangingServer(t *testing.T) {
	a := startNode(t, loopTCP)
	b := startNode(t, loopTCP)
	rawHandler(t, b, func(s network.Stream) {}) // reads nothing, answers nothing
	connect(t, a, b)
	bp := b.Host().ID()
	id, data := testShard(300<<10, 4)

	for _, op := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"get", func(ctx context.Context) error { _, err := a.GetShard(ctx, bp, id); return err }},
		{"put", func(ctx context.Context) error { return a.PutShard(ctx, bp, id, data) }},
		{"stat", func(ctx context.Context) error { _, err := a.StatPeer(ctx, bp); return err }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := op.do(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s from a hanging server = %v, want DeadlineExceeded", op.name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s returned after %v", op.name, d)
		}
	}
	if sc := a.PeerScore(bp); sc.Failures != 3 || sc.Healthy() {
		t.Fatalf("score after 3 timeouts = %+v", sc)
	}

	// A cancelled context is not the peer's fault.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := a.GetShard(ctx, bp, id); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled GetShard = %v", err)
	}
	if sc := a.PeerScore(bp); sc.Failures != 3 {
		t.Fatalf("a cancelled request counted: %+v", sc)
	}
}

func TestShardDisconnectMidStream(t *testing.T) {
	id, data := testShard(1<<20, 5)
	for _, tc := range []struct {
		name string
		cut  func(s network.Stream)
	}{
		{"connection closed", func(s network.Stream) { s.Conn().Close() }},
		{"stream reset", func(s network.Stream) { s.Reset() }},
		{"stream closed", func(s network.Stream) { s.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startNode(t, loopTCP)
			b := startNode(t, loopTCP)
			rawHandler(t, b, func(s network.Stream) {
				br := bufio.NewReader(s)
				if _, _, err := readMessage(br, func(msgType) bool { return true }); err != nil {
					s.Reset()
					return
				}
				msg, _ := encodeReply(nil, typeGet|replyBit, wireReply{Status: StatusOK, Size: uint64(len(data))})
				s.Write(msg)
				s.Write(data[:len(data)/3])
				tc.cut(s)
			})
			connect(t, a, b)
			got, err := a.GetShard(ctxT(t, 5*time.Second), b.Host().ID(), id)
			if err == nil || got != nil || errors.Is(err, ErrBadShard) {
				t.Fatalf("GetShard cut short = %d bytes, %v; want a transport error", len(got), err)
			}
			if sc := a.PeerScore(b.Host().ID()); sc.Failures != 1 || sc.BadShards != 0 {
				t.Fatalf("score = %+v", sc)
			}
		})
	}
}

// rawRequest opens a shard stream from a to b and writes msg (and body).
func rawRequest(t *testing.T, a, b *Node, msg, body []byte) (network.Stream, *bufio.Reader) {
	t.Helper()
	s, err := a.Host().NewStream(ctxT(t, 5*time.Second), b.Host().ID(), ShardProtocol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(msg); err != nil {
		t.Fatal(err)
	}
	if body != nil {
		go s.Write(body) // may block: the server does not read it
	}
	return s, bufio.NewReader(s)
}

// rawReply reads a reply of type t from br.
func rawReply(t *testing.T, br *bufio.Reader, typ msgType) wireReply {
	t.Helper()
	rt, h, err := readMessage(br, func(x msgType) bool { return x == typ })
	if err != nil {
		t.Fatalf("read %s: %v", typ, err)
	}
	w, err := decodeReply(rt, h)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestShardOversizedFrames(t *testing.T) {
	shards := openShards(t, 64<<20)
	good, server := servingPair(t, shards)
	bad := startNode(t, loopTCP)
	connect(t, bad, server)
	ctx := ctxT(t, 20*time.Second)
	id, data := testShard(8<<20, 6)
	if err := good.PutShard(ctx, server.Host().ID(), id, data); err != nil {
		t.Fatal(err)
	}

	// The good peer reads while the bad one sends oversized frames.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var gets int
	var getErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := good.GetShard(ctx, server.Host().ID(), id)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("wrong bytes")
			}
			if err != nil {
				getErr = err
				return
			}
			gets++
		}
	}()

	bigPut, _ := appendMessage(nil, typePut, &wireRequest{ID: id[:], Size: 1 << 30})
	longHeader := []byte{byte(typeGet), 0x80, 0x80, 0x40} // 1 MiB header length
	overHas := append([]byte{byte(typeHas)}, 0x81, 0xa0, 0x02)
	tooMany := make([][]byte, MaxHasIDs+1)
	for i := range tooMany {
		tooMany[i] = id[:]
	}
	manyIDs, err := wireEnc.Marshal(&wireRequest{IDs: tooMany})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		body []byte
		typ  msgType
		want Status
	}{
		{"PUT of 1 GiB", bigPut, make([]byte, 4<<20), typePut, StatusTooLarge},
		{"1 MiB GET header", longHeader, make([]byte, 1<<20), typeGet, StatusTooLarge},
		{"HAS header over its limit", overHas, make([]byte, 40<<10), typeHas, StatusTooLarge},
		{"HAS of 1025 ids", append(append([]byte{byte(typeHas)}, uvarintBytes(len(manyIDs))...), manyIDs...), nil, typeHas, StatusBadRequest},
		{"PUT header of garbage", []byte{byte(typePut), 3, 0xff, 0xff, 0xff}, nil, typePut, StatusBadRequest},
		{"non-minimal length", []byte{byte(typeStat), 0x81, 0x00, 0xa0}, nil, typeStat, StatusBadRequest},
	} {
		s, br := rawRequest(t, bad, server, tc.msg, tc.body)
		if w := rawReply(t, br, tc.typ|replyBit); w.Status != tc.want {
			t.Errorf("%s: status %s, want %s", tc.name, w.Status, tc.want)
		}
		// The server has closed the stream: nothing more comes.
		if _, err := br.ReadByte(); err == nil {
			t.Errorf("%s: more bytes after the refusal", tc.name)
		}
		s.Reset()
	}
	// An unknown message type gets the stream reset.
	_, br := rawRequest(t, bad, server, []byte{0x7f, 1, 0xa0}, nil)
	if _, err := br.ReadByte(); err == nil {
		t.Error("unknown type: got a reply")
	}

	close(stop)
	wg.Wait()
	if getErr != nil || gets == 0 {
		t.Fatalf("good peer's GETs: %d done, error %v", gets, getErr)
	}
	// The refusals are not counted against the bad peer's slots.
	waitFor(t, 2*time.Second, "stream slots released", func() bool {
		server.mu.Lock()
		defer server.mu.Unlock()
		server.shards.mu.Lock()
		defer server.shards.mu.Unlock()
		return len(server.shards.streams) == 0 && server.shards.inFlight == 0
	})
}

func uvarintBytes(n int) []byte {
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}

func TestShardBusy(t *testing.T) {
	shards := openShards(t, 64<<20)
	good, server := servingPair(t, shards)
	flood := startNode(t, loopTCP)
	connect(t, flood, server)
	waitFor(t, 2*time.Second, "server among flooder's storage peers", func() bool {
		return slices.Contains(flood.StoragePeers(), server.Host().ID())
	})
	ctx := ctxT(t, 20*time.Second)
	sp := server.Host().ID()
	id, data := testShard(1<<20, 7)
	if err := good.PutShard(ctx, sp, id, data); err != nil {
		t.Fatal(err)
	}

	// Eight PUTs that send half their body and stall.
	var open []network.Stream
	for i := range maxStreamsPerPeer {
		pid, pdata := testShard(1<<20, byte(100+i))
		msg, _ := appendMessage(nil, typePut, &wireRequest{ID: pid[:], Size: uint64(len(pdata))})
		s, _ := rawRequest(t, flood, server, append(msg, pdata[:len(pdata)/2]...), nil)
		open = append(open, s)
	}
	fp := flood.Host().ID()
	waitFor(t, 2*time.Second, "8 streams held", func() bool {
		server.shards.mu.Lock()
		defer server.shards.mu.Unlock()
		return server.shards.streams[fp] == maxStreamsPerPeer
	})
	id2, data2 := testShard(1000, 8)
	err := flood.PutShard(ctx, sp, id2, data2)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("9th stream's PUT = %v, want ErrBusy", err)
	}
	if _, err := flood.StatPeer(ctx, sp); !errors.Is(err, ErrBusy) {
		t.Fatalf("9th stream's STAT = %v, want ErrBusy", err)
	}
	if sc := flood.PeerScore(sp); sc.Failures != 0 || !sc.Healthy() {
		t.Fatalf("busy counted as a failure: %+v", sc)
	}
	// Another peer is served meanwhile.
	if got, err := good.GetShard(ctx, sp, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("other peer's GET during the flood: %v", err)
	}
	for _, s := range open {
		s.Reset()
	}
	waitFor(t, 2*time.Second, "slots released", func() bool {
		server.shards.mu.Lock()
		defer server.shards.mu.Unlock()
		return server.shards.streams[fp] == 0
	})
	if err := flood.PutShard(ctx, sp, id2, data2); err != nil {
		t.Fatalf("PUT after the flood: %v", err)
	}
}

func TestShardFullAndOwners(t *testing.T) {
	shards := openShards(t, 1<<20)
	a, b := servingPair(t, shards)
	c := startNode(t, loopTCP)
	connect(t, c, b)
	ctx := ctxT(t, 10*time.Second)
	bp := b.Host().ID()

	id1, d1 := testShard(800<<10, 9)
	id2, d2 := testShard(800<<10, 10)
	if err := a.PutShard(ctx, bp, id1, d1); err != nil {
		t.Fatal(err)
	}
	// The PUT's reply told the client the peer's space.
	if sc := a.PeerScore(bp); sc.Capacity != 1<<20 || sc.Used != int64(len(d1)) {
		t.Fatalf("space after a PUT: used %d of %d, want %d of %d", sc.Used, sc.Capacity, len(d1), 1<<20)
	}
	if err := a.PutShard(ctx, bp, id2, d2); !errors.Is(err, ErrFull) {
		t.Fatalf("PUT beyond the capacity = %v, want ErrFull", err)
	}
	if sc := a.PeerScore(bp); !sc.Full || !sc.Healthy() {
		t.Fatalf("score after full = %+v", sc)
	}
	other := startNode(t, loopTCP)
	other.ServeShards(openShards(t, 1<<20))
	connect(t, a, other)
	if r := a.RankPeers([]peer.ID{bp, other.Host().ID()}); r[0] != other.Host().ID() {
		t.Fatalf("RankPeers = %v, want the full peer last", r)
	}
	// A second owner of a stored shard needs no room.
	if err := c.PutShard(ctx, bp, id1, d1); err != nil {
		t.Fatalf("second owner's PUT on a full peer: %v", err)
	}

	// Only an owner deletes, and the shard stays until both have.
	if err := a.DeleteShard(ctx, bp, id2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteShard(never stored) = %v", err)
	}
	stranger := startNode(t, loopTCP)
	connect(t, stranger, b)
	if err := stranger.DeleteShard(ctx, bp, id1); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("stranger's DeleteShard = %v, want ErrNotOwner", err)
	}
	if err := a.DeleteShard(ctx, bp, id1); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteShard(ctx, bp, id1); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("repeated DeleteShard = %v, want ErrNotOwner (c still holds it)", err)
	}
	if got, err := stranger.GetShard(ctx, bp, id1); err != nil || !bytes.Equal(got, d1) {
		t.Fatalf("GET of a shard c still holds: %v", err)
	}
	if err := c.DeleteShard(ctx, bp, id1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetShard(ctx, bp, id1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GET after both deleted = %v", err)
	}
	st, err := a.StatPeer(ctx, bp)
	if err != nil || st.Used != 0 || st.Shards != 0 {
		t.Fatalf("StatPeer = %+v, %v", st, err)
	}
	if sc := a.PeerScore(bp); sc.Full {
		t.Fatalf("still marked full after a STAT with room: %+v", sc)
	}
	if err := a.PutShard(ctx, bp, id2, d2); err != nil {
		t.Fatal(err)
	}
}

// A store failure is internal to the peer and reported as refused.
type failingStore struct{ ShardStore }

func (failingStore) Put(context.Context, string, peerdrive.ShardID, []byte) error {
	return errors.New("disk on fire")
}

func (failingStore) Has(context.Context, peerdrive.ShardID) (bool, error) {
	return false, syscall.EIO
}

func TestShardStoreFailure(t *testing.T) {
	var logged bytes.Buffer
	var logMu sync.Mutex
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })

	a, b := servingPair(t, failingStore{openShards(t, 1<<20)})
	ctx := ctxT(t, 10*time.Second)
	id, data := testShard(10, 11)
	err := a.PutShard(ctx, b.Host().ID(), id, data)
	var se *StatusError
	if !errors.Is(err, ErrRefused) || !errors.As(err, &se) || se.Status != StatusInternal {
		t.Fatalf("PUT into a failing store = %v", err)
	}
	if bytes.Contains([]byte(err.Error()), []byte("fire")) {
		t.Fatalf("store's error text leaked to the peer: %v", err)
	}
	if _, err := a.HasShards(ctx, b.Host().ID(), []peerdrive.ShardID{id}); !errors.Is(err, ErrRefused) {
		t.Fatalf("HAS on a failing store = %v", err)
	}
	// The server logs the store's error (once per request) for its operator.
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logged.String(), "shard store failed"); n != 2 || !strings.Contains(logged.String(), "disk on fire") {
		t.Fatalf("server log:\n%s", logged.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// A reply that breaks the protocol is ErrProtocol, and a failure.
func TestShardProtocolViolations(t *testing.T) {
	id, _ := testShard(10, 12)
	for _, tc := range []struct {
		name  string
		reply func() []byte
	}{
		{"no status", func() []byte { b, _ := appendMessage(nil, typeHas|replyBit, &struct{}{}); return b }},
		{"wrong reply type", func() []byte { b, _ := encodeReply(nil, typeGet|replyBit, wireReply{Status: StatusOK}); return b }},
		{"wrong answer count", func() []byte {
			b, _ := encodeReply(nil, typeHas|replyBit, wireReply{Status: StatusOK, Have: []bool{true, false}})
			return b
		}},
		{"garbage", func() []byte { return []byte{byte(typeHas | replyBit), 2, 0xff, 0xff} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startNode(t, loopTCP)
			b := startNode(t, loopTCP)
			rawHandler(t, b, func(s network.Stream) {
				io.Copy(io.Discard, s)
				s.Write(tc.reply())
				s.Close()
			})
			connect(t, a, b)
			_, err := a.HasShards(ctxT(t, 5*time.Second), b.Host().ID(), []peerdrive.ShardID{id})
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("HasShards = %v, want ErrProtocol", err)
			}
			if sc := a.PeerScore(b.Host().ID()); sc.Failures != 1 {
				t.Fatalf("score = %+v", sc)
			}
		})
	}
}

func TestStoragePeers(t *testing.T) {
	a := startNode(t, loopTCP)
	storage := startNode(t, loopTCP)
	plain := startNode(t, loopTCP)
	storage.ServeShards(openShards(t, 1<<20))
	start := time.Now()
	connect(t, a, storage)
	connect(t, a, plain)
	waitFor(t, 2*time.Second, "storage peer listed", func() bool {
		return slices.Equal(a.StoragePeers(), []peer.ID{storage.Host().ID()})
	})
	t.Logf("storage peer listed %v after connecting", time.Since(start))
	// A peer that starts serving later is listed through identify push.
	plain.ServeShards(openShards(t, 1<<20))
	want := []peer.ID{storage.Host().ID(), plain.Host().ID()}
	slices.Sort(want)
	waitFor(t, 2*time.Second, "late storage peer listed", func() bool {
		return slices.Equal(a.StoragePeers(), want)
	})
	// Disconnected peers are not storage peers.
	a.Host().Network().ClosePeer(storage.Host().ID())
	storage.Close()
	waitFor(t, 2*time.Second, "closed peer dropped", func() bool {
		return slices.Equal(a.StoragePeers(), []peer.ID{plain.Host().ID()})
	})
}

// A connection over QUIC and one over TCP to the same peer: shard streams
// take the TCP one, whichever libp2p would pick.
func TestShardStreamsPreferTCP(t *testing.T) {
	addrOf := func(n *Node, code int) ma.Multiaddr {
		for _, x := range n.Host().Addrs() {
			if hasProtocol(x, code) {
				return x
			}
		}
		t.Fatalf("no address with protocol %d", code)
		return nil
	}
	// Two connections appear when a dials b over QUIC while b dials a over
	// TCP (each knowing only that address of the other). The dials race;
	// try a few times.
	for try := 0; ; try++ {
		a := startNode(t, loopTCP, loopQUIC)
		b := startNode(t, loopTCP, loopQUIC)
		b.ServeShards(openShards(t, 1<<20))
		ctx := ctxT(t, 10*time.Second)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			a.Host().Connect(ctx, peer.AddrInfo{ID: b.Host().ID(), Addrs: []ma.Multiaddr{addrOf(b, ma.P_QUIC_V1)}})
		}()
		go func() {
			defer wg.Done()
			b.Host().Connect(ctx, peer.AddrInfo{ID: a.Host().ID(), Addrs: []ma.Multiaddr{addrOf(a, ma.P_TCP)}})
		}()
		wg.Wait()
		var tcp, quic int
		for _, c := range a.Host().Network().ConnsToPeer(b.Host().ID()) {
			if isTCP(c) {
				tcp++
			} else {
				quic++
			}
		}
		if tcp == 0 || quic == 0 {
			if try == 10 {
				t.Fatalf("could not make both connections (%d TCP, %d QUIC)", tcp, quic)
			}
			continue
		}
		// Busy the QUIC connection so that libp2p would prefer it.
		for _, c := range a.Host().Network().ConnsToPeer(b.Host().ID()) {
			if !isTCP(c) {
				for range 3 {
					s, err := c.NewStream(ctx)
					if err != nil {
						t.Fatal(err)
					}
					defer s.Reset()
				}
			}
		}
		id, data := testShard(100<<10, 13)
		for range 4 {
			if err := a.PutShard(ctx, b.Host().ID(), id, data); err != nil {
				t.Fatal(err)
			}
		}
		if got, other := b.serverStreams(); got != 4 || other != 0 {
			t.Fatalf("with TCP and QUIC connections: %d streams over TCP, %d otherwise", got, other)
		}
		return
	}
}

// Without any TCP address, shard streams use QUIC.
func TestShardOverQUIC(t *testing.T) {
	a := startNode(t, loopQUIC)
	b := startNode(t, loopQUIC)
	b.ServeShards(openShards(t, 1<<20))
	connect(t, a, b)
	ctx := ctxT(t, 10*time.Second)
	id, data := testShard(100<<10, 14)
	if err := a.PutShard(ctx, b.Host().ID(), id, data); err != nil {
		t.Fatal(err)
	}
	if got, err := a.GetShard(ctx, b.Host().ID(), id); err != nil || !bytes.Equal(got, data) {
		t.Fatal(err)
	}
	if tcp, other := b.serverStreams(); tcp != 0 || other != 2 {
		t.Fatalf("%d TCP, %d other streams", tcp, other)
	}
}

// serverStreams reports the streams served over TCP and over anything else.
func (n *Node) serverStreams() (tcp, other int64) {
	n.mu.Lock()
	sv := n.shards
	n.mu.Unlock()
	if sv == nil {
		return 0, 0
	}
	return sv.tcpStreams.Load(), sv.otherStreams.Load()
}

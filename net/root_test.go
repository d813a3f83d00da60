package net

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/peerdrive/peerdrive"
	"github.com/peerdrive/peerdrive/store"
)

// Root protocol tests: real libp2p hosts on 127.0.0.1, store.Roots (badger
// in t.TempDir()) behind the servers unless a test needs a misbehaving one.

func openRoots(t *testing.T) *store.Roots {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return store.NewRoots(db)
}

func testOwnerKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pubOf(priv ed25519.PrivateKey) ed25519.PublicKey { return priv.Public().(ed25519.PublicKey) }

func rootRec(priv ed25519.PrivateKey, seq uint64, body string) *peerdrive.RootRecord {
	r := &peerdrive.RootRecord{Seq: seq, Time: 1700000000e9 + int64(seq), Writer: "12D3KooWTest",
		LeaseUntil: 1700000600e9, Body: []byte(body)}
	r.Sign(priv)
	return r
}

// forged is a record claiming owner's key but signed by another.
func forged(owner ed25519.PrivateKey, seq uint64) *peerdrive.RootRecord {
	r := rootRec(testOwnerKey(0xee), seq, "forged")
	r.Owner = pubOf(owner)
	return r
}

func mustMarshalRoot(t *testing.T, r *peerdrive.RootRecord) []byte {
	t.Helper()
	b, err := peerdrive.MarshalRoot(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameRoot(a, b *peerdrive.RootRecord) bool {
	return a != nil && b != nil && peerdrive.CompareRoots(a, b) == 0
}

// rootPair starts a client and a server serving s, connected, the server
// among the client's root peers.
func rootPair(t *testing.T, s RootStore) (client, server *Node) {
	t.Helper()
	client = startNode(t, loopTCP)
	server = startNode(t, loopTCP)
	server.ServeRoots(s)
	connect(t, client, server)
	waitFor(t, 2*time.Second, "server among root peers", func() bool {
		return slices.Contains(client.RootPeers(), server.Host().ID())
	})
	return client, server
}

func TestRootFrames(t *testing.T) {
	var owner peerdrive.ShardID
	for i := range owner {
		owner[i] = byte(i)
	}
	for _, rq := range []request{
		{typ: typePutRoot, size: 0},
		{typ: typePutRoot, size: peerdrive.MaxRootSize},
		{typ: typeGetRoot, id: owner},
	} {
		b, err := encodeRequest(rq)
		if err != nil {
			t.Fatal(err)
		}
		typ, h, err := readMessage(bufio.NewReader(bytes.NewReader(b)), func(msgType) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRequest(typ, h)
		if err != nil || got.typ != rq.typ || got.id != rq.id || got.size != rq.size {
			t.Fatalf("round trip of %+v = %+v, %v", rq, got, err)
		}
	}
	for _, c := range []struct {
		name string
		typ  msgType
		w    wireRequest
		want error
	}{
		{"PUTROOT over the limit", typePutRoot, wireRequest{Size: peerdrive.MaxRootSize + 1}, errTooLarge},
		{"GETROOT without owner", typeGetRoot, wireRequest{}, errMalformed},
		{"GETROOT short owner", typeGetRoot, wireRequest{ID: owner[:31]}, errMalformed},
		{"GETROOT long owner", typeGetRoot, wireRequest{ID: append(owner[:], 0)}, errMalformed},
	} {
		if _, err := decodeRequest(c.typ, mustMarshal(t, &c.w)); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// A GETROOT reply may not announce more than a record's worth.
	h := mustMarshal(t, &wireReply{Status: StatusOK, Size: peerdrive.MaxRootSize + 1})
	if _, err := decodeReply(typeGetRoot|replyBit, h); !errors.Is(err, errMalformed) {
		t.Errorf("oversized GETROOT reply: %v", err)
	}
	h = mustMarshal(t, &wireReply{Status: StatusStale, Seq: 9})
	if w, err := decodeReply(typePutRoot|replyBit, h); err != nil || w.Seq != 9 {
		t.Errorf("stale PUTROOT reply = %+v, %v", w, err)
	}
	if typePutRoot.String() != "PUTROOT" || (typeGetRoot|replyBit).String() != "GETROOT reply" {
		t.Error("message type names")
	}
	if StatusBadSignature.String() != "bad-signature" || StatusStale.String() != "stale" {
		t.Error("status names")
	}
	bad := error(&StatusError{Status: StatusBadSignature})
	if !errors.Is(bad, peerdrive.ErrBadSignature) || !errors.Is(bad, ErrRefused) || errors.Is(bad, ErrStale) {
		t.Error("bad-signature sentinels")
	}
	stale := error(&StatusError{Status: StatusStale})
	if !errors.Is(stale, ErrStale) || !errors.Is(stale, ErrRefused) || errors.Is(stale, peerdrive.ErrBadSignature) {
		t.Error("stale sentinels")
	}
}

func TestRootRoundTrip(t *testing.T) {
	roots := openRoots(t)
	a, b := rootPair(t, roots)
	ctx := ctxT(t, 20*time.Second)
	bp := b.Host().ID()
	owner := testOwnerKey(1)

	if _, err := a.GetRoot(ctx, bp, pubOf(owner)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRoot before any put = %v, want ErrNotFound", err)
	}
	r5 := rootRec(owner, 5, "five")
	if err := a.PutRoot(ctx, bp, r5); err != nil {
		t.Fatalf("PutRoot: %v", err)
	}
	got, err := a.GetRoot(ctx, bp, pubOf(owner))
	if err != nil || !sameRoot(got, r5) {
		t.Fatalf("GetRoot = %+v, %v", got, err)
	}
	// Again: the peer holds it already, which is fine.
	if err := a.PutRoot(ctx, bp, r5); err != nil {
		t.Fatalf("repeated PutRoot: %v", err)
	}
	// A replayed older record, or another of the same Seq, is stale.
	for _, old := range []*peerdrive.RootRecord{rootRec(owner, 4, "four"), rootRec(owner, 5, "other five")} {
		err := a.PutRoot(ctx, bp, old)
		var se *StatusError
		if !errors.Is(err, ErrStale) || !errors.As(err, &se) || se.Status != StatusStale {
			t.Fatalf("PutRoot of seq %d %q = %v, want ErrStale", old.Seq, old.Body, err)
		}
	}
	if got, err := a.GetRoot(ctx, bp, pubOf(owner)); err != nil || !sameRoot(got, r5) {
		t.Fatalf("after replays GetRoot = %+v, %v; want seq 5", got, err)
	}
	r6 := rootRec(owner, 6, "six")
	if err := a.PutRoot(ctx, bp, r6); err != nil {
		t.Fatal(err)
	}
	if held, err := roots.Get(ctx, pubOf(owner)); err != nil || !sameRoot(held, r6) {
		t.Fatalf("store holds %+v, %v; want seq 6", held, err)
	}
	// Records signed by another key never leave the client.
	if err := a.PutRoot(ctx, bp, forged(owner, 7)); !errors.Is(err, peerdrive.ErrBadSignature) {
		t.Fatalf("PutRoot of a forged record = %v, want ErrBadSignature", err)
	}
	big := &peerdrive.RootRecord{Seq: 8, Body: make([]byte, peerdrive.MaxRootSize)}
	big.Sign(owner)
	if err := a.PutRoot(ctx, bp, big); !errors.Is(err, peerdrive.ErrTooLarge) {
		t.Fatalf("PutRoot of an oversized record = %v, want ErrTooLarge", err)
	}
	// The largest record goes through.
	fixed := len(mustMarshalRoot(t, &peerdrive.RootRecord{Seq: 9, Owner: pubOf(owner), Sig: make([]byte, 64)}))
	max := &peerdrive.RootRecord{Seq: 9, Body: make([]byte, peerdrive.MaxRootSize-fixed-4)}
	max.Sign(owner)
	if n := len(mustMarshalRoot(t, max)); n != peerdrive.MaxRootSize {
		t.Fatalf("largest record is %d bytes", n)
	}
	if err := a.PutRoot(ctx, bp, max); err != nil {
		t.Fatalf("PutRoot of a MaxRootSize record: %v", err)
	}
	if got, err := a.GetRoot(ctx, bp, pubOf(owner)); err != nil || !sameRoot(got, max) {
		t.Fatalf("GetRoot of the largest record: %v", err)
	}
	if _, err := a.GetRoot(ctx, bp, pubOf(owner)[:31]); err == nil {
		t.Fatal("GetRoot with a 31-byte owner succeeded")
	}
	if sc := a.PeerScore(bp); sc.Failures != 0 {
		t.Fatalf("refusals counted as failures: %+v", sc)
	}
}

// rawRootRequest opens a root stream from a to b and writes msg and body.
func rawRootRequest(t *testing.T, a, b *Node, msg, body []byte) (network.Stream, *bufio.Reader) {
	t.Helper()
	s, err := a.Host().NewStream(ctxT(t, 5*time.Second), b.Host().ID(), RootProtocol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(msg); err != nil {
		t.Fatal(err)
	}
	if body != nil {
		go s.Write(body) // may block: the server may not read it
	}
	return s, bufio.NewReader(s)
}

func rootMsg(t *testing.T, rq request) []byte {
	t.Helper()
	b, err := encodeRequest(rq)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRootRefusals sends what a client would refuse to send: each gets its
// status, and nothing is stored.
func TestRootRefusals(t *testing.T) {
	roots := openRoots(t)
	_, server := rootPair(t, roots)
	bad := startNode(t, loopTCP)
	connect(t, bad, server)
	owner := testOwnerKey(1)
	forgedB := mustMarshalRoot(t, forged(owner, 100))
	otherSigned := rootRec(testOwnerKey(2), 1, "b")
	tampered := mustMarshalRoot(t, rootRec(owner, 1, "tampered"))
	tampered[bytes.Index(tampered, []byte("tampered"))] ^= 1
	garbage := []byte{0xa1, 0x01, 0x02}
	nonCanonical := append([]byte{0xa8}, mustMarshalRoot(t, rootRec(owner, 1, "x"))[1:]...)
	nonCanonical = append(nonCanonical, 0x08, 0x00)
	put := func(body []byte) []byte { return rootMsg(t, request{typ: typePutRoot, size: len(body)}) }
	for _, tc := range []struct {
		name string
		msg  []byte
		body []byte
		typ  msgType
		want Status
	}{
		{"forged record", put(forgedB), forgedB, typePutRoot, StatusBadSignature},
		{"tampered body", put(tampered), tampered, typePutRoot, StatusBadSignature},
		{"garbage record", put(garbage), garbage, typePutRoot, StatusBadRequest},
		{"non-canonical record", put(nonCanonical), nonCanonical, typePutRoot, StatusBadRequest},
		{"empty record", put(nil), nil, typePutRoot, StatusBadRequest},
		{"PUTROOT over 1 MiB", msgOf(t, typePutRoot, &wireRequest{Size: peerdrive.MaxRootSize + 1}),
			make([]byte, 2<<20), typePutRoot, StatusTooLarge},
		{"header over its limit", []byte{byte(typePutRoot), 0x81, 0x01}, make([]byte, 200), typePutRoot, StatusTooLarge},
		{"GETROOT with a short owner", msgOf(t, typeGetRoot, &wireRequest{ID: make([]byte, 31)}), nil, typeGetRoot, StatusBadRequest},
		{"GETROOT not found", rootMsg(t, request{typ: typeGetRoot, id: peerdrive.ShardID(pubOf(owner))}), nil, typeGetRoot, StatusNotFound},
	} {
		s, br := rawRootRequest(t, bad, server, tc.msg, tc.body)
		if tc.body == nil {
			s.CloseWrite()
		}
		if w := rawReply(t, br, tc.typ|replyBit); w.Status != tc.want {
			t.Errorf("%s: status %s, want %s", tc.name, w.Status, tc.want)
		}
		if _, err := br.ReadByte(); err == nil {
			t.Errorf("%s: more bytes after the reply", tc.name)
		}
		s.Reset()
	}
	if _, err := roots.Get(context.Background(), pubOf(owner)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused record was stored: %v", err)
	}
	// Another owner's validly signed record is stored under its own owner.
	b := mustMarshalRoot(t, otherSigned)
	s, br := rawRootRequest(t, bad, server, put(b), b)
	if w := rawReply(t, br, typePutRoot|replyBit); w.Status != StatusOK {
		t.Fatalf("valid record: %s", w.Status)
	}
	s.Reset()
	// Shard messages on the root protocol, and root messages on the shard
	// protocol, get the stream reset.
	_, br = rawRootRequest(t, bad, server, msgOf(t, typeStat, &wireRequest{}), nil)
	if _, err := br.ReadByte(); err == nil {
		t.Error("STAT on the root protocol: got a reply")
	}
	server.ServeShards(newMemStore())
	waitFor(t, 2*time.Second, "server serves shards", func() bool {
		return slices.Contains(bad.StoragePeers(), server.Host().ID())
	})
	_, br = rawRequest(t, bad, server, rootMsg(t, request{typ: typeGetRoot, id: peerdrive.ShardID(pubOf(owner))}), nil)
	if _, err := br.ReadByte(); err == nil {
		t.Error("GETROOT on the shard protocol: got a reply")
	}
	waitFor(t, 2*time.Second, "stream slots released", func() bool {
		server.roots.mu.Lock()
		defer server.roots.mu.Unlock()
		return len(server.roots.streams) == 0 && server.roots.inFlight == 0
	})
}

func TestRootBusy(t *testing.T) {
	roots := openRoots(t)
	good, server := rootPair(t, roots)
	flood := startNode(t, loopTCP)
	connect(t, flood, server)
	ctx := ctxT(t, 20*time.Second)
	sp := server.Host().ID()
	owner := testOwnerKey(1)

	// Eight PUTROOTs that announce a record and stall.
	var open []network.Stream
	for range maxStreamsPerPeer {
		s, _ := rawRootRequest(t, flood, server, rootMsg(t, request{typ: typePutRoot, size: 1000}), nil)
		open = append(open, s)
	}
	fp := flood.Host().ID()
	waitFor(t, 2*time.Second, "8 streams held", func() bool {
		server.roots.mu.Lock()
		defer server.roots.mu.Unlock()
		return server.roots.streams[fp] == maxStreamsPerPeer
	})
	if err := flood.PutRoot(ctx, sp, rootRec(owner, 1, "one")); !errors.Is(err, ErrBusy) {
		t.Fatalf("9th stream's PUTROOT = %v, want ErrBusy", err)
	}
	if _, err := flood.GetRoot(ctx, sp, pubOf(owner)); !errors.Is(err, ErrBusy) {
		t.Fatalf("9th stream's GETROOT = %v, want ErrBusy", err)
	}
	// Another peer is served meanwhile.
	if err := good.PutRoot(ctx, sp, rootRec(owner, 2, "two")); err != nil {
		t.Fatalf("other peer's PUTROOT during the flood: %v", err)
	}
	for _, s := range open {
		s.Reset()
	}
	waitFor(t, 2*time.Second, "slots released", func() bool {
		server.roots.mu.Lock()
		defer server.roots.mu.Unlock()
		return server.roots.streams[fp] == 0 && server.roots.inFlight == 0
	})
	if _, err := flood.GetRoot(ctx, sp, pubOf(owner)); err != nil {
		t.Fatalf("GETROOT after the flood: %v", err)
	}
}

// memRoots is a RootStore that returns whatever it was given, verified or
// not, and fails when told to.
type memRoots struct {
	mu   sync.Mutex
	m    map[string]*peerdrive.RootRecord
	fail error
}

func newMemRoots(recs ...*peerdrive.RootRecord) *memRoots {
	s := &memRoots{m: map[string]*peerdrive.RootRecord{}}
	for _, r := range recs {
		s.m[string(r.Owner)] = r
	}
	return s
}

func (s *memRoots) Put(_ context.Context, rec *peerdrive.RootRecord) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return false, s.fail
	}
	if old, ok := s.m[string(rec.Owner)]; ok && old.Seq >= rec.Seq {
		return false, nil
	}
	s.m[string(rec.Owner)] = rec
	return true, nil
}

func (s *memRoots) Get(_ context.Context, owner ed25519.PublicKey) (*peerdrive.RootRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.m[string(owner)]; ok {
		return r, nil
	}
	return nil, fmt.Errorf("root %x: %w", owner[:4], fs.ErrNotExist)
}

// rawRootHandler serves the root protocol on n by answering every GETROOT
// with body as the record.
func rawRootHandler(t *testing.T, n *Node, body []byte) {
	n.Host().SetStreamHandler(RootProtocol, func(s network.Stream) {
		defer s.Close()
		br := bufio.NewReader(s)
		if _, _, err := readMessage(br, func(msgType) bool { return true }); err != nil {
			s.Reset()
			return
		}
		b, _ := encodeReply(nil, typeGetRoot|replyBit, wireReply{Status: StatusOK, Size: uint64(len(body))})
		s.Write(append(b, body...))
	})
}

// TestFindRootNewest: of several peers, one holds the newest record, one a
// replayed older one, and liars hold forged, tampered and other owners'
// records; FindRoot returns the newest, and GetRoot never returns a lie.
func TestFindRootNewest(t *testing.T) {
	owner := testOwnerKey(1)
	newest := rootRec(owner, 5, "five")
	older := rootRec(owner, 3, "three")
	client := startNode(t, loopTCP)
	honest := startNode(t, loopTCP)
	stale := startNode(t, loopTCP)
	forger := startNode(t, loopTCP)
	tamperer := startNode(t, loopTCP)
	other := startNode(t, loopTCP)

	honestRoots := openRoots(t)
	staleRoots := openRoots(t)
	ctx := ctxT(t, 20*time.Second)
	for _, c := range []struct {
		r   *store.Roots
		rec *peerdrive.RootRecord
	}{{honestRoots, newest}, {staleRoots, older}} {
		if _, err := c.r.Put(ctx, c.rec); err != nil {
			t.Fatal(err)
		}
	}
	honest.ServeRoots(honestRoots)
	stale.ServeRoots(staleRoots)
	forger.ServeRoots(newMemRoots(forged(owner, 100)))
	tampered := rootRec(owner, 99, "tampered")
	tampered.Body = []byte("Tampered")
	tamperer.ServeRoots(newMemRoots(tampered))
	rawRootHandler(t, other, mustMarshalRoot(t, rootRec(testOwnerKey(2), 200, "someone else")))

	liars := []*Node{forger, tamperer, other}
	for _, n := range append([]*Node{honest, stale}, liars...) {
		connect(t, client, n)
	}
	waitFor(t, 3*time.Second, "all root peers", func() bool { return len(client.RootPeers()) == 5 })

	for _, n := range liars {
		_, err := client.GetRoot(ctx, n.Host().ID(), pubOf(owner))
		if !errors.Is(err, peerdrive.ErrBadSignature) || !errors.Is(err, ErrProtocol) {
			t.Errorf("GetRoot from a liar = %v, want ErrBadSignature and ErrProtocol", err)
		}
		if sc := client.PeerScore(n.Host().ID()); sc.Failures == 0 {
			t.Errorf("a liar's answer did not count as a failure: %+v", sc)
		}
	}
	got, err := client.FindRoot(ctx, pubOf(owner))
	if err != nil || !sameRoot(got, newest) {
		t.Fatalf("FindRoot = %+v, %v; want seq 5", got, err)
	}
	if err := got.VerifyFor(pubOf(owner)); err != nil {
		t.Fatal(err)
	}
	// Without the honest peer, the older record is the best there is.
	client.Host().Network().ClosePeer(honest.Host().ID())
	honest.Close()
	got, err = client.FindRoot(ctx, pubOf(owner))
	if err != nil || !sameRoot(got, older) {
		t.Fatalf("FindRoot without the honest peer = %+v, %v; want seq 3", got, err)
	}
}

func TestFindRootNotFound(t *testing.T) {
	a, _ := rootPair(t, openRoots(t))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := a.FindRoot(ctx, pubOf(testOwnerKey(1)))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("FindRoot of an unknown owner = %v, want ErrNotFound", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("FindRoot took %v past its context", d)
	}
	if _, err := a.FindRoot(context.Background(), pubOf(testOwnerKey(1))[:5]); err == nil {
		t.Fatal("FindRoot with a 5-byte owner succeeded")
	}
}

func TestRootStoreFailure(t *testing.T) {
	var logged bytes.Buffer
	var logMu sync.Mutex
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logged}, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })

	mem := newMemRoots()
	mem.fail = errors.New("disk on fire")
	a, b := rootPair(t, mem)
	ctx := ctxT(t, 10*time.Second)
	err := a.PutRoot(ctx, b.Host().ID(), rootRec(testOwnerKey(1), 1, "x"))
	var se *StatusError
	if !errors.Is(err, ErrRefused) || !errors.As(err, &se) || se.Status != StatusInternal {
		t.Fatalf("PutRoot into a failing store = %v", err)
	}
	if bytes.Contains([]byte(err.Error()), []byte("fire")) {
		t.Fatalf("store's error text leaked to the peer: %v", err)
	}
	// The server logs the store's error for its operator.
	logMu.Lock()
	defer logMu.Unlock()
	if n := strings.Count(logged.String(), "root store failed"); n != 1 || !strings.Contains(logged.String(), "disk on fire") {
		t.Fatalf("server log:\n%s", logged.String())
	}
}

func TestRootValidator(t *testing.T) {
	owner := testOwnerKey(1)
	key := peerdrive.RootKeyFor(pubOf(owner))
	v := rootValidator{}
	r1, r2, r3 := rootRec(owner, 1, "a"), rootRec(owner, 2, "b"), rootRec(owner, 3, "c")
	otherRec := rootRec(testOwnerKey(2), 9, "other")
	if err := v.Validate(key, mustMarshalRoot(t, r2)); err != nil {
		t.Fatalf("Validate(valid) = %v", err)
	}
	for _, c := range []struct {
		name  string
		key   string
		value []byte
	}{
		{"forged", key, mustMarshalRoot(t, forged(owner, 5))},
		{"another owner's record", key, mustMarshalRoot(t, otherRec)},
		{"wrong namespace", "/pk/" + key[len("/peerdrive-root/"):], mustMarshalRoot(t, r1)},
		{"short key", key[:len(key)-2], mustMarshalRoot(t, r1)},
		{"garbage", key, []byte("garbage")},
		{"empty", key, nil},
		{"oversized", key, make([]byte, peerdrive.MaxRootSize+1)},
	} {
		if err := v.Validate(c.key, c.value); err == nil {
			t.Errorf("Validate(%s) accepted it", c.name)
		}
	}
	vals := [][]byte{mustMarshalRoot(t, r1), mustMarshalRoot(t, forged(owner, 50)), mustMarshalRoot(t, r3),
		[]byte("junk"), mustMarshalRoot(t, r2), mustMarshalRoot(t, otherRec)}
	if i, err := v.Select(key, vals); err != nil || i != 2 {
		t.Fatalf("Select = %d, %v; want 2 (seq 3)", i, err)
	}
	if _, err := v.Select(key, [][]byte{[]byte("junk"), mustMarshalRoot(t, otherRec)}); err == nil {
		t.Fatal("Select with no valid value succeeded")
	}
}

// startRootNet starts n storage nodes on loopback, the first the others'
// bootstrap; each serves shards (so they find each other through the DHT)
// and, if withRoots, root records.
func startRootNet(t *testing.T, n int, withRoots bool) []*Node {
	t.Helper()
	var nodes []*Node
	for i := range n {
		cfg := Config{}
		if i > 0 {
			cfg.Bootstrap = nodes[0].Addrs()
		}
		nd := startCfg(t, cfg)
		nd.ServeShards(newMemStore())
		if withRoots {
			nd.ServeRoots(openRoots(t))
		}
		nodes = append(nodes, nd)
	}
	return nodes
}

// TestPublishAndFindRoot: a drive's node publishes its root to three
// storage peers and dies; a fresh node that knows only one of them finds
// the latest root.
func TestPublishAndFindRoot(t *testing.T) {
	nodes := startRootNet(t, 3, true)
	pub := startCfg(t, Config{Bootstrap: nodes[0].Addrs()})
	waitFor(t, 15*time.Second, "publisher connected to all three", func() bool {
		return len(pub.RootPeers()) == 3
	})
	ctx := ctxT(t, 30*time.Second)
	owner := testOwnerKey(1)
	r1, r2 := rootRec(owner, 1, "one"), rootRec(owner, 2, "two")
	for _, r := range []*peerdrive.RootRecord{r1, r2} {
		n, err := pub.PublishRoot(ctx, r)
		if err != nil || n != 3 {
			t.Fatalf("PublishRoot(seq %d) = %d, %v; want 3", r.Seq, n, err)
		}
	}
	// Replaying the older record is refused as stale everywhere.
	if n, err := pub.PublishRoot(ctx, r1); !errors.Is(err, ErrStale) || n != 0 {
		t.Fatalf("PublishRoot(replayed seq 1) = %d, %v; want 0, ErrStale", n, err)
	}
	if _, err := pub.PublishRoot(ctx, forged(owner, 10)); !errors.Is(err, peerdrive.ErrBadSignature) {
		t.Fatalf("PublishRoot(forged) = %v", err)
	}
	for _, nd := range nodes {
		got, err := pub.GetRoot(ctx, nd.Host().ID(), pubOf(owner))
		if err != nil || !sameRoot(got, r2) {
			t.Fatalf("%s holds %+v, %v; want seq 2", nd.ID(), got, err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}

	fresh := startCfg(t, Config{Bootstrap: nodes[2].Addrs()})
	start := time.Now()
	got, err := fresh.FindRoot(ctx, pubOf(owner))
	if err != nil || !sameRoot(got, r2) {
		t.Fatalf("fresh node's FindRoot = %+v, %v; want seq 2", got, err)
	}
	t.Logf("fresh node found the root %v after start", time.Since(start))
	if _, err := fresh.FindRoot(ctxT(t, 500*time.Millisecond), pubOf(testOwnerKey(2))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FindRoot of another owner = %v, want ErrNotFound", err)
	}
}

// TestFindRootViaDHT: no peer serves the root protocol, so the record lives
// only in the DHT; a fresh node still finds it.
func TestFindRootViaDHT(t *testing.T) {
	nodes := startRootNet(t, 3, false)
	pub := startCfg(t, Config{Bootstrap: nodes[0].Addrs()})
	waitFor(t, 15*time.Second, "publisher's DHT knows all three", func() bool {
		return pub.DHT().RoutingTable().Size() == 3
	})
	ctx := ctxT(t, 30*time.Second)
	owner := testOwnerKey(1)
	key := peerdrive.RootKeyFor(pubOf(owner))
	r1, r2 := rootRec(owner, 1, "one"), rootRec(owner, 2, "two")
	for _, r := range []*peerdrive.RootRecord{r1, r2} {
		if n, err := pub.PublishRoot(ctx, r); err != nil || n != 0 {
			t.Fatalf("PublishRoot(seq %d) = %d, %v; want 0 peers, stored in the DHT", r.Seq, n, err)
		}
	}
	// The DHT refuses forged and older records.
	if err := pub.DHT().PutValue(ctx, key, mustMarshalRoot(t, forged(owner, 10))); err == nil {
		t.Fatal("DHT accepted a forged record")
	}
	if err := pub.DHT().PutValue(ctx, key, mustMarshalRoot(t, r1)); err == nil {
		t.Fatal("DHT replaced a record with an older one")
	}
	for _, nd := range nodes {
		b, err := nd.DHT().GetValue(ctx, key, routing.Offline)
		if err != nil {
			t.Fatalf("%s's DHT: %v", nd.ID(), err)
		}
		if rec, err := peerdrive.UnmarshalRoot(b); err != nil || !sameRoot(rec, r2) {
			t.Fatalf("%s's DHT holds %+v, %v; want seq 2", nd.ID(), rec, err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := startCfg(t, Config{Bootstrap: nodes[1].Addrs()})
	got, err := fresh.FindRoot(ctx, pubOf(owner))
	if err != nil || !sameRoot(got, r2) {
		t.Fatalf("fresh node's FindRoot via the DHT = %+v, %v; want seq 2", got, err)
	}
	if len(fresh.RootPeers()) != 0 {
		t.Fatalf("root peers %v: the test meant the DHT only", fresh.RootPeers())
	}
}

// TestFindRootStalePeer: the only peer a fresh node knows holds an old
// record; the DHT holds the newest, and FindRoot returns that.
func TestFindRootStalePeer(t *testing.T) {
	nodes := startRootNet(t, 3, false)
	ctx := ctxT(t, 30*time.Second)
	owner := testOwnerKey(1)
	r1, r2 := rootRec(owner, 1, "one"), rootRec(owner, 2, "two")
	staleRoots := openRoots(t)
	if _, err := staleRoots.Put(ctx, r1); err != nil {
		t.Fatal(err)
	}
	nodes[0].ServeRoots(staleRoots)
	waitFor(t, 15*time.Second, "DHT of three", func() bool { return nodes[1].DHT().RoutingTable().Size() == 2 })
	if err := nodes[1].DHT().PutValue(ctx, peerdrive.RootKeyFor(pubOf(owner)), mustMarshalRoot(t, r2)); err != nil {
		t.Fatal(err)
	}
	fresh := startCfg(t, Config{Bootstrap: nodes[0].Addrs()})
	got, err := fresh.FindRoot(ctx, pubOf(owner))
	if err != nil || !sameRoot(got, r2) {
		t.Fatalf("FindRoot = %+v, %v; want seq 2 from the DHT", got, err)
	}
}

package net

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peerdrive/peerdrive"
)

func ownerKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func delegate(t *testing.T, n *Node, owner ed25519.PrivateKey) {
	t.Helper()
	d, err := SignDelegation(owner, n.Host().ID(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.SetDelegation(d); err != nil {
		t.Fatal(err)
	}
}

// A node with a delegation stores its holds under the owner's account; a
// second node of the same drive (a restore on a new machine: another node
// key, same owner key) renews and deletes them.
func TestDelegatedHolds(t *testing.T) {
	st := openShards(t, 1<<20)
	first, server := servingPair(t, st)
	second := startNode(t, loopTCP)
	connect(t, second, server)
	waitFor(t, 5*time.Second, "server a storage peer", func() bool { return len(second.StoragePeers()) == 1 })
	owner := ownerKey(t)
	acct := Account(owner.Public().(ed25519.PublicKey))
	delegate(t, first, owner)
	delegate(t, second, owner)
	ctx := ctxT(t, 20*time.Second)

	id, data := testShard(1000, 1)
	if err := first.PutShard(ctx, server.Host().ID(), id, data); err != nil {
		t.Fatal(err)
	}
	if got := server.OwnerOf(first.Host().ID()); got != acct {
		t.Fatalf("OwnerOf(first) = %q, want %q", got, acct)
	}
	if owners, _ := st.Owners(ctx, id); len(owners) != 1 || owners[0] != acct {
		t.Fatalf("owners = %q, want [%s]", owners, acct)
	}
	if b, n := st.OwnerUsage(acct); b != 1000 || n != 1 {
		t.Fatalf("OwnerUsage = %d bytes, %d shards; want 1000, 1", b, n)
	}
	before, err := st.Expiry(ctx, acct, id)
	if err != nil || before.IsZero() {
		t.Fatalf("expiry = %v, %v", before, err)
	}

	missing, _ := testShard(10, 2)
	held, err := second.RenewShards(ctx, server.Host().ID(), []peerdrive.ShardID{id, missing})
	if err != nil {
		t.Fatal(err)
	}
	if !held[0] || held[1] {
		t.Fatalf("renew by the second node = %v, want [true false]", held)
	}
	if err := second.DeleteShard(ctx, server.Host().ID(), id); err != nil {
		t.Fatalf("delete by the second node: %v", err)
	}
	if ok, _ := st.Has(ctx, id); ok {
		t.Fatal("shard still stored after the drive's delete")
	}
	if used, _, _ := st.Usage(); used != 0 {
		t.Fatalf("used = %d after delete", used)
	}
}

// Holds made before a delegation (keyed by peer ID) stay usable.
func TestLegacyHoldsAfterDelegation(t *testing.T) {
	st := openShards(t, 1<<20)
	client, server := servingPair(t, st)
	ctx := ctxT(t, 20*time.Second)
	id, data := testShard(500, 3)
	if err := client.PutShard(ctx, server.Host().ID(), id, data); err != nil {
		t.Fatal(err)
	}
	if owners, _ := st.Owners(ctx, id); len(owners) != 1 || owners[0] != client.Host().ID().String() {
		t.Fatalf("owners = %q, want the peer ID", owners)
	}
	delegate(t, client, ownerKey(t))
	held, err := client.RenewShards(ctx, server.Host().ID(), []peerdrive.ShardID{id})
	if err != nil || !held[0] {
		t.Fatalf("renew of a peer-ID hold = %v, %v", held, err)
	}
	if err := client.DeleteShard(ctx, server.Host().ID(), id); err != nil {
		t.Fatalf("delete of a peer-ID hold: %v", err)
	}
	if ok, _ := st.Has(ctx, id); ok {
		t.Fatal("shard still stored")
	}
}

// Delegations that must be refused: wrong signature, signed by another
// drive's key than the one named, for another peer, expired, too far ahead.
func TestDelegationRefused(t *testing.T) {
	st := openShards(t, 1<<20)
	client, server := servingPair(t, st)
	ctx := ctxT(t, 20*time.Second)
	owner, other := ownerKey(t), ownerKey(t)
	me := client.Host().ID()
	sign := func(k ed25519.PrivateKey, p peer.ID, until time.Time) []byte {
		d, err := SignDelegation(k, p, until)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	good := sign(owner, me, time.Now().Add(time.Hour))
	badSig := append([]byte(nil), good...)
	badSig[len(badSig)-1] ^= 1
	// Another drive's key signs, but the statement names our owner key.
	var w wireDelegation
	if err := wireDec.Unmarshal(good, &w); err != nil {
		t.Fatal(err)
	}
	w.Sig = ed25519.Sign(other, delegationMessage(w.Owner, w.Peer, w.Expiry))
	foreign, _ := wireEnc.Marshal(&w)

	for _, tc := range []struct {
		name string
		d    []byte
		want error
	}{
		{"bad signature", badSig, peerdrive.ErrBadSignature},
		{"another drive's key", foreign, peerdrive.ErrBadSignature},
		{"another peer", sign(owner, server.Host().ID(), time.Now().Add(time.Hour)), ErrRefused},
		{"expired", sign(owner, me, time.Now().Add(-time.Minute)), ErrRefused},
		{"too far ahead", sign(owner, me, time.Now().Add(2*MaxDelegation)), ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := client.sendClaim(ctx, server.Host().ID(), tc.d)
			if !errors.Is(err, tc.want) {
				t.Fatalf("claim = %v, want %v", err, tc.want)
			}
			if got := server.OwnerOf(me); got != me.String() {
				t.Fatalf("OwnerOf after a refused claim = %q", got)
			}
		})
	}
	// SetDelegation refuses what the server would refuse.
	if err := client.SetDelegation(badSig); err == nil {
		t.Fatal("SetDelegation took a bad signature")
	}
	// The good one is taken.
	if err := client.sendClaim(ctx, server.Host().ID(), good); err != nil {
		t.Fatal(err)
	}
	if got, want := server.OwnerOf(me), Account(owner.Public().(ed25519.PublicKey)); got != want {
		t.Fatalf("OwnerOf = %q, want %q", got, want)
	}
}

// A storage node that forgets a claim when the peer disconnects gets it
// again on the next connection.
func TestClaimPerConnection(t *testing.T) {
	st := openShards(t, 1<<20)
	client, server := servingPair(t, st)
	owner := ownerKey(t)
	acct := Account(owner.Public().(ed25519.PublicKey))
	delegate(t, client, owner)
	ctx := ctxT(t, 20*time.Second)
	id, data := testShard(100, 4)
	if err := client.PutShard(ctx, server.Host().ID(), id, data); err != nil {
		t.Fatal(err)
	}
	if err := client.Host().Network().ClosePeer(server.Host().ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "claim forgotten", func() bool { return server.OwnerOf(client.Host().ID()) != acct })
	connect(t, client, server)
	id2, data2 := testShard(100, 5)
	if err := client.PutShard(ctx, server.Host().ID(), id2, data2); err != nil {
		t.Fatal(err)
	}
	if owners, _ := st.Owners(ctx, id2); len(owners) != 1 || owners[0] != acct {
		t.Fatalf("owners after reconnect = %q, want [%s]", owners, acct)
	}
}

func FuzzParseDelegation(f *testing.F) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	p := peer.ID("\x00\x24\x08\x01\x12\x20" + string(make([]byte, 32)))
	if d, err := SignDelegation(k, p, time.Unix(1<<31, 0)); err == nil {
		f.Add(d)
	}
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDelegation(b)
		if err != nil {
			if !errors.Is(err, ErrBadDelegation) && !errors.Is(err, peerdrive.ErrBadSignature) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if !ed25519.Verify(d.Owner, delegationMessage(d.Owner, []byte(d.Peer), uint64(d.Expiry.Unix())), d.Sig) {
			t.Fatal("accepted a delegation whose signature does not verify")
		}
	})
}

// leaseSeeds are RENEW and CLAIM messages for the fuzz corpora of the frame
// decoders (written with -update, like TestFuzzSeeds).
func leaseSeeds(t *testing.T) map[string]map[string][]byte {
	id, _ := testShard(10, 9)
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	p := peer.ID("\x00\x24\x08\x01\x12\x20" + string(make([]byte, 32)))
	d, err := SignDelegation(k, p, time.Unix(1<<31, 0))
	if err != nil {
		t.Fatal(err)
	}
	req := func(rq request) []byte {
		b, err := encodeRequest(rq)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rep := func(typ msgType, w wireReply) []byte {
		b, err := encodeReply(nil, typ, w)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return map[string]map[string][]byte{
		"FuzzReadRequest": {
			"renew":       req(request{typ: typeRenew, ids: []peerdrive.ShardID{id, {}, id}}),
			"claim":       req(request{typ: typeClaim, claim: d}),
			"claim-empty": msgOf(t, typeClaim, &wireRequest{ID: id[:]}),
		},
		"FuzzReadReply": {
			"renew-ok":    rep(typeRenew|replyBit, wireReply{Status: StatusOK, Have: []bool{true, false}}),
			"claim-nosig": rep(typeClaim|replyBit, wireReply{Status: StatusBadSignature, Message: "no"}),
		},
		"FuzzParseDelegation": {
			"good":  d,
			"empty": {0xa0},
		},
	}
}

func TestLeaseFuzzSeeds(t *testing.T) {
	for target, seeds := range leaseSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, b := range seeds {
			path := filepath.Join(dir, name)
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("seed %s/%s: %v (generate with -update)", target, name, err)
			}
		}
	}
}

package net

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/peerdrive/peerdrive"
)

// Regenerate the seed corpora with
//
//	go test -run TestFuzzSeeds -update ./net/
var update = flag.Bool("update", false, "rewrite the fuzz seed corpora in testdata/fuzz")

func isRequest(t msgType) bool { return t >= typePut && t <= typeStat }
func isReply(t msgType) bool   { return t&replyBit != 0 && isRequest(t&^replyBit) }

func msgOf(t testing.TB, typ msgType, hdr any) []byte {
	t.Helper()
	b, err := appendMessage(nil, typ, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readRequest decodes a whole request message as the server does.
func readRequest(b []byte) (request, error) {
	typ, h, err := readMessage(bufio.NewReader(bytes.NewReader(b)), isRequest)
	if err != nil {
		return request{}, err
	}
	return decodeRequest(typ, h)
}

func readReply(b []byte) (msgType, wireReply, error) {
	typ, h, err := readMessage(bufio.NewReader(bytes.NewReader(b)), isReply)
	if err != nil {
		return typ, wireReply{}, err
	}
	w, err := decodeReply(typ, h)
	return typ, w, err
}

func TestRequestRoundTrip(t *testing.T) {
	var id peerdrive.ShardID
	for i := range id {
		id[i] = byte(i)
	}
	full := make([]peerdrive.ShardID, MaxHasIDs)
	for i := range full {
		full[i][0], full[i][1] = byte(i), byte(i>>8)
	}
	for _, rq := range []request{
		{typ: typePut, id: id, size: 0},
		{typ: typePut, id: id, size: MaxShardSize},
		{typ: typeGet, id: id},
		{typ: typeDelete, id: id},
		{typ: typeStat},
		{typ: typeHas, ids: []peerdrive.ShardID{id}},
		{typ: typeHas, ids: full}, // the largest request there is
	} {
		b, err := encodeRequest(rq)
		if err != nil {
			t.Fatalf("%s: %v", rq.typ, err)
		}
		got, err := readRequest(b)
		if err != nil {
			t.Fatalf("%s: %v", rq.typ, err)
		}
		if !reflect.DeepEqual(got, rq) {
			t.Fatalf("%s: round trip gave %+v", rq.typ, got)
		}
	}
	// The documented STAT request is 0x05 0x01 0xa0.
	if b, _ := encodeRequest(request{typ: typeStat}); !bytes.Equal(b, []byte{0x05, 0x01, 0xa0}) {
		t.Fatalf("STAT = %x", b)
	}
}

func TestRequestRefused(t *testing.T) {
	var id peerdrive.ShardID
	tooMany := make([][]byte, MaxHasIDs+1)
	for i := range tooMany {
		tooMany[i] = id[:]
	}
	manyIDs, err := wireEnc.Marshal(&wireRequest{IDs: tooMany})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(typ msgType, h []byte) []byte {
		return append(append([]byte{byte(typ)}, uvarintBytes(len(h))...), h...)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"type only", []byte{byte(typeGet)}, io.ErrUnexpectedEOF},
		{"short header", []byte{byte(typeGet), 5, 0xa0}, io.ErrUnexpectedEOF},
		{"unknown type", frame(0x06, []byte{0xa0}), errMalformed},
		{"reply type", frame(typeGet|replyBit, []byte{0xa0}), errMalformed},
		{"zero length", []byte{byte(typeStat), 0}, errMalformed},
		{"non-minimal length", []byte{byte(typeStat), 0x81, 0x00, 0xa0}, errMalformed},
		{"length over limit", []byte{byte(typeStat), 17}, errTooLarge},
		{"huge length", []byte{byte(typeGet), 0xff, 0xff, 0xff, 0xff, 0x0f}, errTooLarge},
		{"GET without id", frame(typeGet, []byte{0xa0}), errMalformed},
		{"GET with short id", msgOf(t, typeGet, &wireRequest{ID: id[:31]}), errMalformed},
		{"DELETE with long id", msgOf(t, typeDelete, &wireRequest{ID: make([]byte, 33)}), errMalformed},
		{"PUT too large", msgOf(t, typePut, &wireRequest{ID: id[:], Size: MaxShardSize + 1}), errTooLarge},
		{"HAS without ids", frame(typeHas, []byte{0xa0}), errMalformed},
		{"HAS with a short id", msgOf(t, typeHas, &wireRequest{IDs: [][]byte{id[:], {1}}}), errMalformed},
		{"HAS with 1025 ids", frame(typeHas, manyIDs), errMalformed},
		{"not a map", frame(typeGet, []byte{0x01}), errMalformed},
		{"trailing bytes", frame(typeStat, []byte{0xa0, 0xa0}), errMalformed},
		{"duplicate key", frame(typeGet, append([]byte{0xa2, 0x01, 0x58, 0x20}, append(id[:], 0x01, 0x41, 0x00)...)), errMalformed},
		{"indefinite map", frame(typeStat, []byte{0xbf, 0xff}), errMalformed},
		{"tag", frame(typeStat, []byte{0xc1, 0xa0}), errMalformed},
		{"negative size", frame(typePut, append([]byte{0xa2, 0x01, 0x58, 0x20}, append(id[:], 0x02, 0x20)...)), errMalformed},
	} {
		_, err := readRequest(tc.msg)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	// Unknown keys are ignored (a newer minor version may add some).
	h := []byte{0xa2, 0x01, 0x58, 0x20}
	h = append(h, id[:]...)
	h = append(h, 0x18, 99, 0x63, 'n', 'e', 'w')
	if rq, err := readRequest(frame(typeGet, h)); err != nil || rq.id != id {
		t.Errorf("GET with an unknown key = %+v, %v", rq, err)
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		typ msgType
		w   wireReply
	}{
		{typePut | replyBit, wireReply{Status: StatusOK}},
		{typePut | replyBit, wireReply{Status: StatusFull, Message: "full"}},
		{typeGet | replyBit, wireReply{Status: StatusOK, Size: MaxShardSize}},
		{typeGet | replyBit, wireReply{Status: StatusNotFound}},
		{typeHas | replyBit, wireReply{Status: StatusOK, Have: make([]bool, MaxHasIDs)}},
		{typeDelete | replyBit, wireReply{Status: StatusNotOwner, Message: strings.Repeat("é", 128)}},
		{typeStat | replyBit, wireReply{Status: StatusOK, Used: 1 << 40, Capacity: 1 << 41, Shards: 1 << 20}},
	} {
		b, err := encodeReply(nil, tc.typ, tc.w)
		if err != nil {
			t.Fatalf("%s: %v", tc.typ, err)
		}
		typ, got, err := readReply(b)
		if err != nil || typ != tc.typ || !reflect.DeepEqual(got, tc.w) {
			t.Fatalf("%s: round trip gave %s %+v, %v", tc.typ, typ, got, err)
		}
	}
	// Long messages are cut at a rune boundary.
	b, err := encodeReply(nil, typeGet|replyBit, wireReply{Status: StatusBusy, Message: "x" + strings.Repeat("é", 200)})
	if err != nil {
		t.Fatal(err)
	}
	if _, w, err := readReply(b); err != nil || len(w.Message) != 255 {
		t.Fatalf("long message: %d bytes, %v", len(w.Message), err)
	}
	for _, tc := range []struct {
		name string
		typ  msgType
		h    []byte
	}{
		{"no status", typePut | replyBit, []byte{0xa0}},
		{"status 0", typePut | replyBit, []byte{0xa1, 0x01, 0x00}},
		{"GET too large", typeGet | replyBit, mustMarshal(t, &wireReply{Status: StatusOK, Size: MaxShardSize + 1})},
		{"message too long", typePut | replyBit, mustMarshal(t, &wireReply{Status: StatusBusy, Message: strings.Repeat("x", 257)})},
		{"bad UTF-8", typePut | replyBit, []byte{0xa2, 0x01, 0x06, 0x02, 0x61, 0xff}},
	} {
		b := append(append([]byte{byte(tc.typ)}, uvarintBytes(len(tc.h))...), tc.h...)
		if _, _, err := readReply(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: error %v, want errMalformed", tc.name, err)
		}
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := wireEnc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStatusNames(t *testing.T) {
	for st, want := range map[Status]string{StatusOK: "ok", StatusBadHash: "bad-hash", StatusInternal: "internal", 0: "status 0", 42: "status 42"} {
		if st.String() != want {
			t.Errorf("Status(%d) = %q, want %q", uint64(st), st, want)
		}
	}
	if typeHas.String() != "HAS" || (typeGet|replyBit).String() != "GET reply" || msgType(0x42).String() != "type 0x42" {
		t.Error("message type names")
	}
	for st := StatusOK; st <= StatusInternal+1; st++ {
		err := error(&StatusError{Status: st})
		var n int
		for _, s := range []error{ErrNotFound, ErrFull, ErrNotOwner, ErrBusy, ErrBadShard, ErrRefused} {
			if errors.Is(err, s) {
				n++
			}
		}
		if st != StatusOK && n != 1 {
			t.Errorf("%s matches %d sentinels", st, n)
		}
	}
}

// FuzzReadRequest feeds the server's request decoder. A request it accepts
// must encode back to one that decodes the same.
func FuzzReadRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		rq, err := readRequest(b)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errTooLarge) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		again, err := encodeRequest(rq)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", rq, err)
		}
		rq2, err := readRequest(again)
		if err != nil || !reflect.DeepEqual(rq, rq2) {
			t.Fatalf("round trip: %+v, %v; want %+v", rq2, err, rq)
		}
	})
}

// FuzzReadReply feeds the client's reply decoder.
func FuzzReadReply(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, w, err := readReply(b)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errTooLarge) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if w.Status == 0 || len(w.Message) > maxMessage || len(w.Have) > MaxHasIDs {
			t.Fatalf("accepted %+v", w)
		}
		again, err := encodeReply(nil, typ, w)
		if err != nil {
			// A valid reply of one type may carry fields too big for the
			// header limit of its type only if the peer's header was
			// over the limit, which readMessage refuses.
			t.Fatalf("re-encode %+v: %v", w, err)
		}
		typ2, w2, err := readReply(again)
		if err != nil || typ2 != typ || !reflect.DeepEqual(w, w2) {
			t.Fatalf("round trip: %+v, %v; want %+v", w2, err, w)
		}
	})
}

// fuzzSeeds are the seed corpora, one message per seed.
func fuzzSeeds(t *testing.T) map[string]map[string][]byte {
	var id peerdrive.ShardID
	for i := range id {
		id[i] = byte(i * 3)
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
			"put":           req(request{typ: typePut, id: id, size: 1 << 20}),
			"get":           req(request{typ: typeGet, id: id}),
			"has":           req(request{typ: typeHas, ids: []peerdrive.ShardID{id, {}, id}}),
			"delete":        req(request{typ: typeDelete, id: id}),
			"stat":          req(request{typ: typeStat}),
			"put-too-large": msgOf(t, typePut, &wireRequest{ID: id[:], Size: MaxShardSize + 1}),
			"long-length":   {byte(typeGet), 0x80, 0x80, 0x40},
			"non-minimal":   {byte(typeStat), 0x81, 0x00, 0xa0},
			"unknown-key":   append(append([]byte{byte(typeGet), 0x27, 0xa2, 0x01, 0x58, 0x20}, id[:]...), 0x18, 99, 0x00),
			"empty":         {},
		},
		"FuzzReadReply": {
			"put-ok":      rep(typePut|replyBit, wireReply{Status: StatusOK}),
			"put-full":    rep(typePut|replyBit, wireReply{Status: StatusFull, Message: "full"}),
			"get-ok":      rep(typeGet|replyBit, wireReply{Status: StatusOK, Size: 1 << 20}),
			"has-ok":      rep(typeHas|replyBit, wireReply{Status: StatusOK, Have: []bool{true, false, true}}),
			"delete-nope": rep(typeDelete|replyBit, wireReply{Status: StatusNotOwner}),
			"stat-ok":     rep(typeStat|replyBit, wireReply{Status: StatusOK, Used: 5, Capacity: 10, Shards: 1}),
			"no-status":   {byte(typePut | replyBit), 1, 0xa0},
			"bad-utf8":    {byte(typePut | replyBit), 6, 0xa2, 0x01, 0x06, 0x02, 0x61, 0xff},
		},
	}
}

func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range fuzzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, b := range seeds {
				s := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
				if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		for name := range seeds {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("seed %s/%s: %v (generate with -update)", target, name, err)
			}
		}
	}
}

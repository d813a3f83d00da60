package node

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Audits and repair (docs/audit.md): their figures in status, and a new
// snapshot after repairs. The options come through Config.Repair into
// replica.Options.

// RepairStatus is the part of Status about audits and repair.
type RepairStatus struct {
	RepairedSegments int64 `json:"repaired_segments"`
	AuditsPassed     int64 `json:"audits_passed"`
	AuditsFailed     int64 `json:"audits_failed"`
	// AuditPeers lists the audits of each holder, by peer ID.
	AuditPeers []PeerAudits `json:"audit_peers,omitempty"`
}

// PeerAudits counts the audits of one peer.
type PeerAudits struct {
	Peer   string `json:"peer"`
	Passed int64  `json:"passed"`
	Failed int64  `json:"failed"`
}

// repairStatus fills in st's audit and repair figures.
func (n *Node) repairStatus(st *Status) {
	if n.rep == nil {
		return
	}
	as := n.rep.AuditStats()
	st.RepairedSegments, st.AuditsPassed, st.AuditsFailed = as.RepairedSegments, as.Passed, as.Failed
	for p, a := range as.Peers {
		st.AuditPeers = append(st.AuditPeers, PeerAudits{Peer: p.String(), Passed: a.Passed, Failed: a.Failed})
	}
	slices.SortFunc(st.AuditPeers, func(a, b PeerAudits) int { return strings.Compare(a.Peer, b.Peer) })
}

// repairPublishEvery is how often the node checks whether repairs moved
// shards since its last snapshot.
const repairPublishEvery = time.Minute

// startRepairPublisher publishes a new snapshot after repairs (startDrive
// calls it for a writable drive): the root record carries the segment
// records of the tree's pieces inline (docs/format.md §15), and those must
// name the peers that hold the shards now, not the ones that left.
func (n *Node) startRepairPublisher() {
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		t := time.NewTicker(repairPublishEvery)
		defer t.Stop()
		last := n.rep.AuditStats().RepairedSegments
		base, stop := n.bgContext()
		defer stop()
		for {
			select {
			case <-n.bgStop:
				return
			case <-t.C:
			}
			cur := n.rep.AuditStats().RepairedSegments
			if cur == last {
				continue
			}
			ctx, cancel := context.WithTimeout(base, publishTimeout)
			if _, err := n.Publish(ctx, nil); err != nil {
				if base.Err() == nil { // not cut short by close
					n.log.Warn("snapshot after repair failed", "err", err)
				}
			} else {
				last = cur
			}
			cancel()
		}
	}()
}

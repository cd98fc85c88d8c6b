package probe

import (
	"crypto/hkdf"
	"crypto/sha256"
)

// probeKeyLabel is the HKDF info string for the probe key: distinct from
// anything else derived from the gossip key, so that the probe key (used on
// the hot path, on every host) reveals nothing about the gossip key.
const probeKeyLabel = "dnms probe key v1"

// DeriveKey returns the probe key of a keyed cluster:
// HKDF-SHA256(ikm = gossipKey, no salt, info = "dnms probe key v1"), 32
// bytes. Every member with the same gossip key derives the same probe key,
// so a cluster with -gossipKey authenticates its probes without -probeKey.
func DeriveKey(gossipKey []byte) []byte {
	k, err := hkdf.Key(sha256.New, gossipKey, nil, probeKeyLabel, 32)
	if err != nil {
		// Only a length above 255*32 bytes fails; 32 never does.
		panic("probe: hkdf: " + err.Error())
	}
	return k
}

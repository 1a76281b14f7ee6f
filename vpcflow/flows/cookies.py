"""Cookies that name the feature and the object that made a flow.

Layout (64 bits):  feature (8) | object (28) | content digest (28)

- `ovs-ofctl dump-flows BR cookie=0x0300000000000000/0xff00000000000000` selects one feature;
  `cookie=C/0xfffffffff0000000` selects one object of it.
- The content digest lets sync detect a changed flow without comparing actions as OVS
  re-encodes them: same key and same cookie means the same flow.
- Feature 0 is never ours: flows with it (or an unknown feature) are left alone by sync.
  LEARNED features mark flows made by `learn` actions in the switch: sync never touches them.
"""
import functools
import hashlib

FEATURE_SHIFT = 56
OBJECT_SHIFT = 28
OBJECT_BITS = 28
DIGEST_BITS = 28
FEATURE_MASK = 0xFF << FEATURE_SHIFT
OBJECT_MASK = ((1 << OBJECT_BITS) - 1) << OBJECT_SHIFT

FEATURES = {
    "pipeline": 0x01,  # table defaults and plumbing
    "port_security": 0x02,
    "arp": 0x03,
    "overlay": 0x04,
    "underlay": 0x05,
    "edge": 0x06,
    "authz": 0x07,
    "nat": 0x08,
    "follow": 0x09,
    "drop": 0x0A,  # counted drops, one object per reason
    # made by learn actions inside the switch; never synced
    "learned_gateway": 0x81,
    "learned_authz": 0x82,
    "learned_follow": 0x83,
    "learned_nat": 0x84,  # the edge's return path for ICMP to a public address
}
FEATURE_NAMES = {v: k for k, v in FEATURES.items()}
LEARNED_FIRST = 0x80


@functools.lru_cache(maxsize=1 << 16)  # objects repeat: every flow of an interface names it
def object_hash(obj: str) -> int:
    return int.from_bytes(hashlib.blake2b(obj.encode(), digest_size=8).digest(), "big") & ((1 << OBJECT_BITS) - 1)


def make(feature: str, obj: str, digest: int = 0) -> int:
    return (FEATURES[feature] << FEATURE_SHIFT) | (object_hash(obj) << OBJECT_SHIFT) | (digest & ((1 << DIGEST_BITS) - 1))


def feature_of(cookie: int):
    return FEATURE_NAMES.get(cookie >> FEATURE_SHIFT)


def is_managed(cookie: int) -> bool:
    """Flows sync owns: a known feature that is not made by the switch itself."""
    feature = cookie >> FEATURE_SHIFT
    return feature in FEATURE_NAMES and feature < LEARNED_FIRST


def feature_mask(feature: str) -> str:
    """The `cookie=VALUE/MASK` argument of ovs-ofctl for one feature."""
    return f"0x{FEATURES[feature] << FEATURE_SHIFT:x}/0x{FEATURE_MASK:x}"


def name_key(cookie: int) -> int:
    """The part of a cookie that names feature and object (the digest dropped)."""
    return cookie & (FEATURE_MASK | OBJECT_MASK)


def names(flows) -> dict:
    """name_key -> (feature, object) for a set of compiled flows (and the learn actions in them),
    to read cookies back: a hash cannot be inverted, the compiled flows can be looked up."""
    from vpcflow.flows.core import Learn

    out = {}
    for f in flows:
        out[name_key(f.cookie)] = (f.feature, f.obj)
        for a in f.actions:
            if isinstance(a, Learn):
                out[name_key(a.cookie)] = (a.feature, a.obj)
    return out

"""A mapping as a few changes layered over another one: what a runtime change at 100k interfaces
uses instead of copying a mapping of 100k entries to change a few."""
from __future__ import annotations


_MISSING, _GONE = object(), object()


class Layered:
    """A mapping as a few changes over another one (never changed once layered on): a runtime
    change then costs what it changed, not a copy of 100k entries (~3 ms at 100k interfaces:
    the endpoints by interface, the ARP classes). Every few layers they are made one dict
    again, so look-ups stay a step or two."""

    __slots__ = ("_top", "_base", "_depth")
    FLAT_AFTER = 8

    def __init__(self, base):
        depth = base._depth + 1 if isinstance(base, Layered) else 1
        if depth > self.FLAT_AFTER:
            base, depth = base.flat(), 1
        self._top, self._base, self._depth = {}, base, depth

    def flat(self) -> dict:
        layers, m = [], self
        while isinstance(m, Layered):
            layers.append(m._top)
            m = m._base
        out = dict(m)
        for top in reversed(layers):
            for k, v in top.items():
                if v is _GONE:
                    out.pop(k, None)
                else:
                    out[k] = v
        return out

    def __getitem__(self, key):
        v = self._top.get(key, _MISSING)
        if v is _MISSING:
            return self._base[key]
        if v is _GONE:
            raise KeyError(key)
        return v

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def pop(self, key, default=None):
        v = self.get(key, _MISSING)
        if v is _MISSING:
            return default
        self._top[key] = _GONE
        return v

    def __setitem__(self, key, value):
        self._top[key] = value

    def __delitem__(self, key):
        self[key]  # (KeyError where it has none)
        self._top[key] = _GONE

    def __contains__(self, key) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def values(self):
        return self.flat().values()

    def setdefault(self, key, value):
        v = self.get(key, _MISSING)
        if v is _MISSING:
            self._top[key] = v = value
        return v

"""Writes csrc/q8_tables.h: the maps and nearest-code tables of 8-bit state.

Run from the repository root: python csrc/gen_q8_tables.py.  The maps come
from etakit.reference.dynamic_map (bitsandbytes' construction); the C test
rebuilds them with etk_q8_map and the Python tests check both against
bitsandbytes, so the table cannot drift from its construction.

Nearest code in O(1): a float32 x in [-1, 1] falls in a bucket given by its
sign and the top bits of its magnitude (bits >> 16: exponent and 7 mantissa
bits; magnitudes below 2**-23 share the lowest bucket, above 1 the highest).
No bucket holds more than one rounding threshold (checked here), so the code
is lut[bucket] plus one comparison with the threshold above it.

The vector loops read the same search from one int32 word per bucket (key):
lut << 17 | t.  Inside a bucket every x has the same top 16 bits, so
x >= threshold is a comparison of the low 16 bits: low >= t, where low is the
low half of x's bits, inverted for x < 0 (larger magnitude, smaller x), and
t = 2**16 when the threshold is not in the bucket (never).  The two buckets
that clamp (below 2**-23 and from 1 up) hold no threshold (checked here).

The AVX-512 VBMI loops search without gathers, with tables that live in
registers (estimate_tables):
- an estimate c0 of the code, exact to one: within a decade of the map the
  thresholds are evenly spaced, so the code is close to a line in |x|.  The
  magnitudes are cut into at most 8 segments (at breakpoints chosen here, at
  most one per binary octave, so the segment is the octave's first segment
  plus one comparison with the octave's breakpoint), each with one line per
  sign: c0 = floor(fma(A, |x|, B)), with A and B found here so that c0 is the
  code or one below it for every float32 x in [-2, 2], with a margin;
- then the code is c0 + (x >= thr[c0]), thr read from byte planes (the four
  bytes of the 256 thresholds as four 256-byte tables, vpermi2b), as are the
  256 map values when decoding.
Both facts are checked here at every point where the code or the segment
changes (the estimate is monotone in x between those points), and the C
tests compare the loops with the bucket search.
"""
import importlib.util
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("ref", os.path.join(HERE, "..", "src", "etakit", "reference.py"))
R = importlib.util.module_from_spec(spec)
spec.loader.exec_module(R)

KMIN, KMAX = 0x3400, 0x3F80        # 2**-23 and 1.0, as bits >> 16
NKEY = KMAX - KMIN + 1


def hexf(v):
    return float(v).hex()


def tables(signed):
    m = R.dynamic_map(signed)
    t = R.q8_thresholds(m)
    lut = np.zeros((2, NKEY), dtype=np.int64)
    key = np.zeros((2, NKEY), dtype=np.int64)
    for s in (0, 1):
        for k in range(KMIN, KMAX + 1):
            lo_bits = k << 16
            hi_bits = lo_bits | 0xFFFF
            if k == KMIN:
                lo_bits = 0
            if k == KMAX:
                hi_bits = 0x7F7FFFFF
            a, b = np.array([lo_bits, hi_bits], dtype=np.uint32).view(np.float32)
            lo, hi = (a, b) if s == 0 else (-b, -a)
            base = int(np.sum(t <= lo))
            inside = int(np.sum((t > lo) & (t <= hi)))
            assert inside <= 1, (signed, s, hex(k))
            lut[s, k - KMIN] = base
            tb = np.float32(t[base]) if base < t.size else np.float32(np.inf)
            tbits = int(np.array([tb], dtype=np.float32).view(np.uint32)[0])
            if inside:
                assert k not in (KMIN, KMAX), (signed, s, hex(k))
                assert (tbits & 0x7FFFFFFF) >> 16 == k and tbits >> 31 == s, (signed, s, hex(k))
                low = tbits & 0xFFFF
                key[s, k - KMIN] = base << 17 | (0xFFFF - low if s else low)
            else:
                key[s, k - KMIN] = base << 17 | 0x10000
    return m, t, lut, key


OCT0 = 96                          # the octave index: max(biased exponent - OCT0, 0), < 32 for |x| < 2
MARGIN = 1.0 / 32                  # of c0's estimate, in codes


def _fma32(a, b, c):
    """float32 fma(a, b, c) for the estimate: exact product and sum in float64 (no double rounding
    matters: the margin keeps the value far from the integers where floor changes)."""
    return np.float64(np.float32(a)) * np.float64(np.float32(b)) + np.float64(np.float32(c))


def _critical(t):
    """Magnitudes where the code of +x or -x may change, and their neighbours; 0, tiny and >= 1."""
    up, down = np.float32(np.inf), np.float32(0)
    mags = {np.float32(0), np.float32(1.0), np.nextafter(np.float32(1), up), np.float32(1.9999999),
            np.float32(2.0 ** -149), np.float32(2.0 ** -126), np.float32(2.0 ** -30)}
    for v in np.abs(t[np.isfinite(t)]):
        for w in (v, np.nextafter(v, down), np.nextafter(v, up)):
            mags.add(np.float32(w))
    return np.array(sorted(mags), dtype=np.float32)


def _line(a, lo, hi):
    """(A, B, margin): the line through the points (a, [lo, hi]) with the widest margin, in float32.
    The margin of a slope is concave in it: a ternary search over the slope, B centred."""
    a64 = a.astype(np.float64)

    def fit(A):
        A = np.float32(A)
        blo, bhi = np.max(lo - A * a64), np.min(hi - A * a64)
        B = np.float32((blo + bhi) / 2)
        y = _fma32(A, a, B)
        return min(np.min(y - lo), np.min(hi - y)), A, B

    flat = fit(0.0)
    if flat[0] >= MARGIN:              # flat where flat fits: clearer tables
        return flat[1], flat[2], flat[0]
    bound = min(1e30, 512 / (a64.max() - a64.min()))
    x0, x1 = -bound, bound
    for _ in range(200):
        m0, m1 = x0 + (x1 - x0) / 3, x1 - (x1 - x0) / 3
        if fit(m0)[0] < fit(m1)[0]:
            x0 = m0
        else:
            x1 = m1
    r, A, B = fit((x0 + x1) / 2)
    return A, B, r


def _bounds(t, x):
    """Per x: the interval c0's estimate must lie in (floor lands on the code or one below, >= 0)."""
    c = np.searchsorted(t, x, side="right").astype(np.float64)
    return np.maximum(c - 1, 0), c + 1


def estimate_tables(signed):
    """Segments, breakpoints and lines of the estimate (see the module docstring)."""
    m = R.dynamic_map(signed)
    t = R.q8_thresholds(m)
    a = _critical(t)
    # cut the magnitudes greedily, the positive side deciding; every segment must fit both signs
    def points(i, j, s):
        """the segment [a[i], a[j]): its critical points and the float below a[j] (its end)"""
        p = a[i:j] if j >= a.size else np.append(a[i:j], np.nextafter(a[j], np.float32(0)))
        return p, p * np.float32(s)

    def fit(i, j, s):
        p, xs = points(i, j, s)
        return _line(p, *_bounds(t, xs))

    def fits(i, j):
        return all(fit(i, j, s)[2] >= MARGIN for s in (1, -1))

    starts, i = [0], 0
    while True:
        lo, hi = i + 1, a.size        # the longest segment from i that fits: a[i:lo] fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(i, mid):
                lo = mid
            else:
                hi = mid - 1
        if lo >= a.size:
            break
        starts.append(lo)
        i = lo
    assert len(starts) <= 8, (signed, len(starts))
    bps = [a[k] for k in starts[1:]]
    lines = np.zeros((2, 16), dtype=np.float32)
    for si, s in enumerate((1, -1)):
        for k, lo in enumerate(starts):
            hi = starts[k + 1] if k + 1 < len(starts) else a.size
            A, B, r = fit(lo, hi, s)
            assert r >= MARGIN, (signed, s, k, r)
            lines[0, 8 * si + k], lines[1, 8 * si + k] = A, B
    # per octave: its first segment and its breakpoint (at most one)
    oct_seg = np.zeros(32, dtype=np.int64)
    oct_bp = np.full(32, np.float32(np.inf), dtype=np.float32)
    for o in range(32):
        lo_bits = 0 if o == 0 else (o + OCT0) << 23
        lo = np.array([lo_bits], dtype=np.uint32).view(np.float32)[0]
        hi = np.array([(o + OCT0 + 1) << 23], dtype=np.uint32).view(np.float32)[0] if o < 31 else np.float32(2)
        inside = [b for b in bps if lo < b < hi]
        assert len(inside) <= 1, (signed, o)
        oct_seg[o] = sum(b <= lo for b in bps)
        if inside:
            oct_bp[o] = inside[0]
    check_estimate(signed, t, oct_seg, oct_bp, lines)
    return oct_seg, oct_bp, lines


def estimate(x, oct_seg, oct_bp, lines, floor=True):
    """c0 for float32 x, as the vector loops compute it (float64 for the fma: see _fma32)."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    o = np.maximum((a.view(np.uint32) >> 23).astype(np.int64) - OCT0, 0)
    assert o.max() < 32
    seg = oct_seg[o] + (a >= oct_bp[o]) + 8 * np.signbit(x)
    y = _fma32(lines[0, seg], a, lines[1, seg])
    return np.floor(y) if floor else y


def check_estimate(signed, t, oct_seg, oct_bp, lines):
    """c0 is the code or one below it, in [0, 255], at every point where the code or the segment
    changes (and their neighbours): between them c0 and the code are monotone, so everywhere."""
    a = _critical(t)
    extra = [b for b in oct_bp if np.isfinite(b)]
    extra += [np.nextafter(b, np.float32(0)) for b in extra]
    extra += [np.array([(o + OCT0) << 23], dtype=np.uint32).view(np.float32)[0] for o in range(1, 32)]
    a = np.unique(np.concatenate([a, np.array(extra, dtype=np.float32)]))
    a = np.unique(np.concatenate([a, np.nextafter(a, np.float32(0)), np.nextafter(a, np.float32(np.inf))]))
    a = a[a < 2]
    for x in (a, -a):
        y = estimate(x, oct_seg, oct_bp, lines, floor=False)
        lo, hi = _bounds(t, x)
        # a margin for the float32 rounding of the fma (y < 256: ulp <= 2**-15)
        assert np.all((y >= lo + 2.0 ** -10) & (y <= hi - 2.0 ** -10)), signed


def planes(values):
    """The four bytes of 256 float32 values (little-endian) as four 256-byte tables."""
    b = np.asarray(values, dtype=np.float32).view(np.uint8).reshape(256, 4)
    return b.T.copy()


def main():
    out = ["/* Generated by csrc/gen_q8_tables.py from etakit.reference; do not edit. */",
           (f"#if ETK_Q8_KMIN != 0x{KMIN:X}u || ETK_Q8_KMAX != 0x{KMAX:X}u || ETK_Q8_NKEY != {NKEY} "
            f"|| ETK_Q8_OCT0 != {OCT0}"),
           "#error \"etk_internal.h and q8_tables.h disagree: rerun csrc/gen_q8_tables.py\"", "#endif", ""]
    for signed, name in ((True, "signed"), (False, "unsigned")):
        m, t, lut, key = tables(signed)
        out.append(f"static const float etk_q8_map_{name}[256] = {{")
        out += ["    " + ", ".join(hexf(v) + "f" for v in m[i:i + 4]) + "," for i in range(0, 256, 4)]
        out.append("};")
        tt = list(t) + [np.float32(np.inf)]
        out.append("/* rounding thresholds (a code is the number of thresholds <= x); the last is +inf */")
        out.append(f"static const float etk_q8_thr_{name}[256] = {{")
        out += ["    " + ", ".join(("HUGE_VALF" if not np.isfinite(v) else hexf(v) + "f") for v in tt[i:i + 4]) + ","
                for i in range(0, 256, 4)]
        out.append("};")
        out.append(f"static const unsigned char etk_q8_lut_{name}[2][ETK_Q8_NKEY] = {{")
        for s in (0, 1):
            row = [str(int(v)) for v in lut[s]]
            out.append("    {")
            out += ["        " + ", ".join(row[i:i + 24]) + "," for i in range(0, len(row), 24)]
            out.append("    },")
        out.append("};")
        out.append("/* the same search for the vector loops: lut << 17 | t (see etk_q8_codec.key) */")
        out.append(f"static const int32_t etk_q8_key_{name}[2][ETK_Q8_NKEY] = {{")
        for s in (0, 1):
            row = [str(int(v)) for v in key[s]]
            out.append("    {")
            out += ["        " + ", ".join(row[i:i + 12]) + "," for i in range(0, len(row), 12)]
            out.append("    },")
        out.append("};")
        oct_seg, oct_bp, lines = estimate_tables(signed)
        out.append(f"/* the estimate of the VBMI loops (estimate_tables): per octave of |x| (biased exponent - {OCT0},")
        out.append("   at least 0), its first segment and its breakpoint; per segment (+ 8 if x < 0), the line */")
        out.append(f"static const int32_t etk_q8_oct_{name}[32] = {{")
        out += ["    " + ", ".join(str(int(v)) for v in oct_seg[i:i + 16]) + "," for i in range(0, 32, 16)]
        out.append("};")
        out.append(f"static const float etk_q8_bp_{name}[32] = {{")
        out += ["    " + ", ".join(("HUGE_VALF" if not np.isfinite(v) else hexf(v) + "f")
                                for v in oct_bp[i:i + 4]) + ","
                for i in range(0, 32, 4)]
        out.append("};")
        out.append(f"static const float etk_q8_line_{name}[2][16] = {{")
        for r in lines:
            out.append("    {")
            out += ["        " + ", ".join(hexf(v) + "f" for v in r[i:i + 4]) + "," for i in range(0, 16, 4)]
            out.append("    },")
        out.append("};")
        out.append("/* byte planes: [b] byte b of the map's values, [4 + b] of the thresholds' (little-endian) */")
        out.append(f"static const unsigned char etk_q8_planes_{name}[8][256] = {{")
        for pl in np.concatenate([planes(m), planes(np.array(tt, dtype=np.float32))]):
            row = [str(int(v)) for v in pl]
            out.append("    {")
            out += ["        " + ", ".join(row[i:i + 24]) + "," for i in range(0, 256, 24)]
            out.append("    },")
        out.append("};")
        out.append("")
    with open(os.path.join(HERE, "q8_tables.h"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

"""llama.cpp's k-quants (Q2_K .. Q6_K) written with numpy: what `llama-quantize` produces, no build needed.

The `gguf` package reads k-quant blocks back (`gguf.quants.dequantize`) but cannot write them, and the
files people download and Ollama defaults to are k-quants (Q4_K_M above all). These are llama.cpp's
reference encoders (`quantize_row_qN_K_ref` in ggml-quants.c, the path `llama-quantize` takes when no
importance matrix is given), done for every block of a tensor at once instead of one block at a time:

    a super-block is 256 values along a row, cut into sub-blocks of 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K,
    Q5_K); each sub-block gets a scale (and for Q2/Q4/Q5 a minimum) found by the same small search
    llama.cpp makes (`make_qkx2_quants`, `make_q3_quants`, `make_qx_quants`); the sub-block scales are
    themselves quantised to 4-8 bits against one fp16 scale per super-block, and the values are quantised
    again with the scales as stored.

The arithmetic is float32 in llama.cpp's order (sums accumulated left to right), so the bytes
equal llama.cpp's own (tests compare them with its library where it is installed). Rows are processed in
chunks so that memory stays a few times the chunk, whatever the tensor's size. Speed: about 1.5 million
weights a second per core for Q4_K (llama.cpp's C: about 8 million), so minutes for a 1B model.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
_F = np.float32
_EPS = _F(1e-15)  # GROUP_MAX_EPS: a sub-block below this is all zeros
_CHUNK = 4096  # super-blocks encoded at a time


def _sum(a):
    """Left-to-right float32 sum over the last axis, as the C loops accumulate (a column at a time: four
    times faster than np.cumsum over short rows)."""
    columns = np.ascontiguousarray(np.moveaxis(a, -1, 0), dtype=_F)
    total = columns[0].copy()
    for column in columns[1:]:
        total += column
    return total


def _rint(v):
    """llama.cpp's nearest_int: round half to even (its 1.5 * 2**23 trick), as int32."""
    with np.errstate(invalid="ignore"):
        return np.rint(v).astype(np.int32)


def _f16(v):
    """A float32 stored as fp16 (round to nearest even, as GGML_FP32_TO_FP16) and read back as float32."""
    with np.errstate(over="ignore"):
        half = np.asarray(v, dtype=_F).astype(np.float16)
    return half, half.astype(_F)


def _qkx2(x, w, nmax: int, rmin: float, rdelta: float, nstep: int, mad: bool):
    """make_qkx2_quants for every row of x (sub-blocks): (scale, min, levels) with x ~ scale*L - min."""
    lo, top = np.minimum(x.min(-1), _F(0)), x.max(-1)
    flat = top - lo == 0
    sum_w, sum_x = _sum(w), _sum(w * x)
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = _F(nmax) / (top - lo)
        scale = _F(1) / iscale
        levels = np.clip(_rint(iscale[:, None] * (x - lo[:, None])), 0, nmax)
        best = _error(scale, lo, levels, x, w, mad)
        for step in range(nstep + 1):
            # llama.cpp measures the range from the best minimum so far, not from the data's minimum
            iscale = (_F(rmin) + _F(rdelta) * _F(step) + _F(nmax)) / (top - lo)
            aux = np.clip(_rint(iscale[:, None] * (x - lo[:, None])), 0, nmax)
            wl = w * aux.astype(_F)
            sum_l, sum_l2, sum_xl = _sum(wl), _sum(wl * aux), _sum(wl * x)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            pos = this_min > 0
            this_min = np.where(pos, _F(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            err = _error(this_scale, this_min, aux, x, w, mad)
            better = (det > 0) & (err < best) & ~flat
            levels = np.where(better[:, None], aux, levels)
            best = np.where(better, err, best)
            scale = np.where(better, this_scale, scale)
            lo = np.where(better, this_min, lo)
    levels[flat] = 0
    return np.where(flat, _F(0), scale).astype(_F), (-lo).astype(_F), levels


def _error(scale, lo, levels, x, w, mad: bool):
    diff = scale[:, None] * levels.astype(_F) + lo[:, None] - x
    return _sum(w * (np.abs(diff) if mad else diff * diff))


def _qx(x, nmax: int):
    """make_qx_quants(rmse_type=1, no weights) for every row: (scale, levels + nmax); weights are x**2."""
    rows = np.arange(len(x))
    big = x[rows, np.abs(x).argmax(-1)]  # the value of largest magnitude, first of equals as in C
    zero = np.abs(big) < _EPS
    w = x * x
    with np.errstate(divide="ignore", invalid="ignore"):
        def fit(iscale):
            lv = np.clip(_rint(iscale[:, None] * x), -nmax, nmax - 1)
            lf = lv.astype(_F)
            return lv, _sum(w * x * lf), _sum(w * lf * lf)

        levels, sumlx, suml2 = fit(_F(-nmax) / big)
        scale = np.where(suml2 != 0, sumlx / suml2, _F(0))
        best = scale * sumlx
        for step in range(-9, 10):
            if step:
                lv, slx, sl2 = fit(-(_F(nmax) + _F(0.1) * _F(step)) / big)
                better = (sl2 > 0) & (slx * slx > best * sl2)
                levels = np.where(better[:, None], lv, levels)
                scale = np.where(better, slx / sl2, scale)
                best = np.where(better, scale * slx, best)
    levels = levels + nmax
    levels[zero] = 0
    return np.where(zero, _F(0), scale).astype(_F), levels


def _q3(x, nmax: int = 4):
    """make_q3_quants(do_rmse=true) for every row: a start like _qx, then llama.cpp's per-value refinement."""
    rows = np.arange(len(x))
    big = x[rows, np.abs(x).argmax(-1)]
    zero = np.abs(big) < _EPS
    w = x * x
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = np.clip(_rint((_F(-nmax) / big)[:, None] * x), -nmax, nmax - 1)
        lf = levels.astype(_F)
        sumlx, suml2 = _sum(w * x * lf), _sum(w * lf * lf)
        for _ in range(5):
            for i in range(x.shape[1]):
                xi, wi, li = x[:, i], w[:, i], levels[:, i].astype(_F)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new = np.clip(_rint(xi * sl2 / slx), -nmax, nmax - 1)
                nf = new.astype(_F)
                slx2, sl22 = slx + wi * xi * nf, sl2 + wi * nf * nf
                take = ((slx > 0) & (new != levels[:, i]) & (sl22 > 0)
                        & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22) & ~zero)
                levels[:, i] = np.where(take, new, levels[:, i])
                sumlx, suml2 = np.where(take, slx2, sumlx), np.where(take, sl22, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, _F(0))
    levels = levels + nmax
    levels[zero] = 0
    return np.where(zero, _F(0), scale).astype(_F), levels


def _requantize(x, d, offset, levels, lo: int, hi: int):
    """Values quantised again against the stored (fp16-rounded) scales; where a scale is 0 the first levels
    stay, as llama.cpp's `if (!d) continue` leaves them."""
    with np.errstate(divide="ignore", invalid="ignore"):
        fresh = np.clip(_rint((x + offset[..., None]) / d[..., None]), lo, hi) - lo
    return np.where((d != 0)[..., None], fresh, levels)


def _pack2(levels):
    """2-bit levels (nb, 256) into llama.cpp's qs layout: 4 groups of 32 per 128 values, low bits first."""
    q = levels.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | q[:, :, 1] << 2 | q[:, :, 2] << 4 | q[:, :, 3] << 6).reshape(-1, 64)


def _scales_k4(ls, lm):
    """Eight 6-bit scales and mins into Q4_K/Q5_K's 12 bytes (get_scale_min_k4's layout)."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    return np.concatenate([ls[:, :4] | (ls[:, 4:] >> 4) << 6, lm[:, :4] | (lm[:, 4:] >> 4) << 6,
                           (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4], axis=1)


def _q2_k(x):
    nb = len(x)
    sub = x.reshape(-1, 16)
    scales, mins, levels = _qkx2(sub, np.abs(sub), 3, -0.5, 0.1, 15, True)
    scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
    max_scale, max_min = np.maximum(scales.max(1), 0), np.maximum(mins.max(1), 0)
    with np.errstate(divide="ignore"):
        ls = np.where(max_scale[:, None] > 0, _rint((_F(15) / max_scale)[:, None] * scales), 0)
        lm = np.where(max_min[:, None] > 0, _rint((_F(15) / max_min)[:, None] * mins), 0)
    d16, d = _f16(np.where(max_scale > 0, max_scale / _F(15), _F(0)))
    m16, dm = _f16(np.where(max_min > 0, max_min / _F(15), _F(0)))
    packed = (ls & 0xFF).astype(np.uint8) | ((lm << 4) & 0xFF).astype(np.uint8)
    levels = _requantize(x.reshape(nb, 16, 16), d[:, None] * (packed & 0xF).astype(_F),
                         dm[:, None] * (packed >> 4).astype(_F), levels.reshape(nb, 16, 16), 0, 3)
    return [packed, _pack2(levels.reshape(nb, 256)), _bytes(d16), _bytes(m16)]


def _q3_k(x):
    nb = len(x)
    scales, levels = _q3(x.reshape(-1, 16))
    scales = scales.reshape(nb, 16)
    rows = np.arange(nb)
    max_scale = scales[rows, np.abs(scales).argmax(1)]
    with np.errstate(divide="ignore"):
        iscale = _F(-32) / max_scale
        raw = _rint(iscale[:, None] * scales).astype(np.int8).astype(np.int32)
    ls = np.where(max_scale[:, None] != 0, np.clip(raw, -32, 31) + 32, 0).astype(np.uint8)
    d16, d = _f16(np.where(max_scale != 0, _F(1) / iscale, _F(0)))
    high = sum((ls[:, 4 * g:4 * g + 4] >> 4) << (2 * g) for g in range(4)).astype(np.uint8)
    packed = np.concatenate([(ls[:, :8] & 0xF) | (ls[:, 8:] & 0xF) << 4, high], axis=1)
    levels = _requantize(x.reshape(nb, 16, 16), d[:, None] * (ls.astype(_F) - 32),
                         np.zeros((nb, 16), _F), levels.reshape(nb, 16, 16), -4, 3).reshape(nb, 256)
    high = (levels > 3).reshape(nb, 8, 32).astype(np.uint8)
    hmask = sum(high[:, b] << b for b in range(8)).astype(np.uint8)
    return [hmask, _pack2(levels - 4 * (levels > 3)), packed, _bytes(d16)]


def _q45_k(x, bits: int):
    nb, nmax = len(x), (1 << bits) - 1
    sub = x.reshape(-1, 32)
    av = np.sqrt(_sum(sub * sub) / _F(32))
    rmin, nstep = (-1.0, 20) if bits == 4 else (-0.5, 15)
    scales, mins, levels = _qkx2(sub, av[:, None] + np.abs(sub), nmax, rmin, 0.1, nstep, False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale, max_min = np.maximum(scales.max(1), 0), np.maximum(mins.max(1), 0)
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, _F(63) / max_scale, _F(0))
        inv_min = np.where(max_min > 0, _F(63) / max_min, _F(0))
    ls = np.minimum(63, _rint(inv_scale[:, None] * scales) & 0xFF)
    lm = np.minimum(63, _rint(inv_min[:, None] * mins) & 0xFF)
    d16, d = _f16(max_scale / _F(63))
    m16, dm = _f16(max_min / _F(63))
    levels = _requantize(x.reshape(nb, 8, 32), d[:, None] * ls.astype(_F), dm[:, None] * lm.astype(_F),
                         levels.reshape(nb, 8, 32), 0, nmax).reshape(nb, 4, 2, 32).astype(np.uint8)
    qs = ((levels[:, :, 0] & 0xF) | (levels[:, :, 1] & 0xF) << 4).reshape(nb, 128)
    head = [_bytes(d16), _bytes(m16), _scales_k4(ls, lm)]
    if bits == 4:
        return head + [qs]
    top = levels >> 4
    qh = sum(top[:, c, 0] << (2 * c) | top[:, c, 1] << (2 * c + 1) for c in range(4)).astype(np.uint8)
    return head + [qh, qs]


def _q6_k(x):
    nb = len(x)
    scales, levels = _qx(x.reshape(-1, 16), 32)
    scales = scales.reshape(nb, 16)
    rows = np.arange(nb)
    max_scale = scales[rows, np.abs(scales).argmax(1)]
    zero = np.abs(max_scale) < _EPS
    with np.errstate(divide="ignore"):
        iscale = _F(-128) / max_scale
    sc = np.where(zero[:, None], 0, np.minimum(127, _rint(iscale[:, None] * scales))).astype(np.int8)
    d16, d = _f16(np.where(zero, _F(0), _F(1) / iscale))
    levels = _requantize(x.reshape(nb, 16, 16), d[:, None] * sc.astype(_F), np.zeros((nb, 16), _F),
                         levels.reshape(nb, 16, 16), -32, 31).reshape(nb, 2, 4, 32).astype(np.uint8)
    levels[zero] = 0
    low, top = levels & 0xF, levels >> 4
    ql = np.concatenate([low[:, :, 0] | low[:, :, 2] << 4, low[:, :, 1] | low[:, :, 3] << 4], axis=2)
    qh = top[:, :, 0] | top[:, :, 1] << 2 | top[:, :, 2] << 4 | top[:, :, 3] << 6
    return [ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8), _bytes(d16)]


def _bytes(half):
    return half.reshape(-1, 1).view(np.uint8)


_ENCODERS = {"Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": lambda x: _q45_k(x, 4), "Q5_K": lambda x: _q45_k(x, 5),
             "Q6_K": _q6_k}


def quantize_k(data, qtype) -> np.ndarray:
    """`data` (rows of a multiple of 256 values) in k-quant `qtype` (a gguf.GGMLQuantizationType): uint8
    of shape (..., row bytes), as `gguf.quants.quantize` returns for the types it knows. Chunks are encoded
    on a few threads (numpy releases the GIL; the bytes do not depend on how the work is split)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    encode = _ENCODERS[qtype.name]
    data = np.asarray(data, dtype=_F)
    if data.shape[-1] % QK_K:
        raise ValueError(f"rows of {data.shape[-1]} values are not a multiple of {QK_K}")
    blocks = data.reshape(-1, QK_K)
    chunks = [blocks[i:i + _CHUNK] for i in range(0, len(blocks), _CHUNK)]
    workers = min(len(chunks), os.cpu_count() or 1, 8)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda chunk: _encode(encode, chunk), chunks))
    else:
        parts = [_encode(encode, chunk) for chunk in chunks]
    out = np.concatenate(parts) if parts else np.zeros((0, 1), np.uint8)
    return out.reshape(*data.shape[:-1], -1)


def _encode(encode, blocks):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # zero blocks: masked out
        return np.concatenate(encode(blocks), axis=1)

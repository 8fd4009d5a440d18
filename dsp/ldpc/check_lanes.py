"""The check sums and the new messages of a sum-product-fast layer, 8 lanes at a time with the
layer's edges in an inner loop, so that the running values stay in vector registers.

:mod:`.kernels_qc_fast` gathers a layer into scratch rows, one row of ``z`` lanes per base edge
(``mags``: the table phi of each input, ``ext``: the input itself). Walking those rows edge by
edge, with all ``z`` lanes of an edge in an inner loop, keeps the per-lane running values (sum
of phi, sign parity, the two largest phi) in memory: 4 loads and 4 stores per 8 edges, and
8 more loads of the per-lane terms per 8 edges when the new messages are written. Here the
loops are turned around: for 8 lanes at a time, one vector-register loop runs over the edges of
the layer, reading the scratch rows at a stride of ``z`` (one cache line serves two such
chunks), and the per-lane values are loaded once and stored once per chunk.

* :func:`check_sums_into`: from ``ends`` (4 rows of ``z``: sum of phi, sign parity, largest
  and second largest phi, as the caller initialised them) the same rows after every edge of the
  layer: ``T += p``, ``N ^= bits(t)``, ``X2 = max(X2, min(X1, p))``, ``X1 = max(X1, p)``, in
  edge order.
* :func:`check_messages_into`: each edge's new message ``flip_sign(mag, N ^ t)`` with
  ``mag = exact1 if p == X1 else exact2 if p == X2 else base + p (c1 + p c2)`` (two fused
  multiply-adds), into the layer's message rows, and the new posterior ``t + message`` twice
  (``newpost`` rows of ``2 z``, as the scatter of :mod:`.kernels_qc` reads them).

Each is one intrinsic (LLVM IR) per chunk of 8 lanes, the rest lanes one by one in plain
compiled code doing the same operations in the same order, so the results are bit for bit those
of the edge-major loops they replace (the tests decode with both). Measured on the 64 000-bit
codes and n384000_r085 (see :mod:`.kernels_qc_fast` for the figures). The plain-numpy twins
are :func:`check_sums_reference` and :func:`check_messages_reference`.

The intrinsics accept only 1-D C-contiguous float32 arrays (plain pointer arithmetic, no
bounds checks: the callers pass rows they sized themselves).
"""

from __future__ import annotations

from typing import Any

import llvmlite.ir as llvm_ir
import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic
from numpy.typing import NDArray

from .phi_table import _declare, _i64, _is_vector, _vector_at

__all__ = [
    "ENDS_ROWS",
    "LANE_ROWS",
    "check_messages_into",
    "check_messages_many",
    "check_messages_reference",
    "check_sums_into",
    "check_sums_many",
    "check_sums_reference",
]

_LANES = 8

# Rows of ``ends`` (``float32[ENDS_ROWS * z]``, row k at ``k * z``).
_TOTAL = 0  # sum of phi
_NEGATIVE = 1  # sign parity (sign bit) of the inputs and of the syndrome bit
_X1 = 2  # largest phi
_X2 = 3  # second largest phi (equal to _X1 on a tie)
ENDS_ROWS = 4

# Rows of ``lane`` (``float32[LANE_ROWS * z]``): the per-lane terms of the new messages.
_BASE = 0  # phi(T)
_COEF1 = 1  # first expansion coefficient at T
_COEF2 = 2  # second expansion coefficient at T
_EXACT1 = 3  # phi(T - largest phi)
_EXACT2 = 4  # phi(T - second largest phi)
LANE_ROWS = 5

_SIGN = -(2**31)


def _edge_loop(builder: llvm_ir.IRBuilder, count: llvm_ir.Value,
               offsets: list[tuple[llvm_ir.Value, llvm_ir.Value]], init: list[llvm_ir.Value],
               body: Any) -> list[llvm_ir.Value]:
    """``count`` iterations in LLVM IR of ``body(builder, at, values) -> new values``, where
    ``at[i]`` runs ``first, first + step, ...`` for each ``(first, step)`` of ``offsets`` (i64
    element offsets: each address in a body is a fixed base plus one of them, so x86 needs one
    index register per stride) and ``values`` are the loop-carried ``init`` values (phi
    nodes); returns the values after the loop."""
    i64 = llvm_ir.IntType(64)
    before = builder.block
    head = builder.append_basic_block("edges.head")
    loop = builder.append_basic_block("edges.body")
    done = builder.append_basic_block("edges.done")
    builder.branch(head)
    builder.position_at_end(head)
    r = builder.phi(i64)
    r.add_incoming(llvm_ir.Constant(i64, 0), before)
    at = []
    for first, _ in offsets:
        node = builder.phi(i64)
        node.add_incoming(first, before)
        at.append(node)
    carried = []
    for value in init:
        node = builder.phi(value.type)
        node.add_incoming(value, before)
        carried.append(node)
    builder.cbranch(builder.icmp_signed("<", r, count), loop, done)
    builder.position_at_end(loop)
    new = body(builder, at, carried)
    end = builder.block
    r.add_incoming(builder.add(r, llvm_ir.Constant(i64, 1)), end)
    for node, (_, step) in zip(at, offsets, strict=True):
        node.add_incoming(builder.add(node, step), end)
    for node, value in zip(carried, new, strict=True):
        node.add_incoming(value, end)
    builder.branch(head)
    builder.position_at_end(done)
    return carried


def _row(builder: llvm_ir.IRBuilder, data: llvm_ir.Value, row: Any, width: llvm_ir.Value,
         u0: llvm_ir.Value) -> llvm_ir.Value:
    """Pointer to the 8 floats at ``data + row * width + u0`` (``row`` an int or an i64)."""
    i64 = llvm_ir.IntType(64)
    at = row if isinstance(row, llvm_ir.Value) else llvm_ir.Constant(i64, row)
    return _vector_at(builder, data, builder.add(builder.mul(at, width), u0))


def _max(builder: llvm_ir.IRBuilder, a: llvm_ir.Value, b: llvm_ir.Value) -> llvm_ir.Value:
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def _min(builder: llvm_ir.IRBuilder, a: llvm_ir.Value, b: llvm_ir.Value) -> llvm_ir.Value:
    return builder.select(builder.fcmp_ordered("<", a, b), a, b)


def _sums8_typing(typingctx: Any, mags: Any, ext: Any, ends: Any, u0: Any, z: Any,
                  degree: Any) -> Any:
    if not (_is_vector(mags) and _is_vector(ext) and _is_vector(ends, writable=True)
            and all(isinstance(v, types.Integer) for v in (u0, z, degree))):
        return None
    sig = types.void(mags, ext, ends, u0, z, degree)

    def codegen(context: Any, builder: llvm_ir.IRBuilder, signature: Any, args: Any) -> Any:
        mags_v, ext_v, ends_v, u0_v, z_v, degree_v = args
        mags_a, ext_a, ends_a = (context.make_array(signature.args[k])(context, builder, v)
                                 for k, v in ((0, mags_v), (1, ext_v), (2, ends_v)))
        u0_, z_, degree_ = (_i64(builder, v) for v in (u0_v, z_v, degree_v))
        vi = llvm_ir.VectorType(llvm_ir.IntType(32), _LANES)
        rows = [_row(builder, ends_a.data, k, z_, u0_) for k in range(ENDS_ROWS)]
        total, negative, x1, x2 = (builder.load(p, align=4) for p in rows)
        negative = builder.bitcast(negative, vi)

        def body(b: llvm_ir.IRBuilder, at: list[llvm_ir.Value], values: list[llvm_ir.Value]
                 ) -> list[llvm_ir.Value]:
            tot, neg, m1, m2 = values
            p = b.load(_vector_at(b, mags_a.data, at[0]), align=4)
            t = b.load(_vector_at(b, ext_a.data, at[0]), align=4)
            return [b.fadd(tot, p), b.xor(neg, b.bitcast(t, vi)), _max(b, m1, p),
                    _max(b, m2, _min(b, m1, p))]

        total, negative, x1, x2 = _edge_loop(builder, degree_, [(u0_, z_)],
                                                [total, negative, x1, x2], body)
        vf = llvm_ir.VectorType(llvm_ir.FloatType(), _LANES)
        for pointer, value in zip(rows, (total, builder.bitcast(negative, vf), x1, x2),
                                  strict=True):
            builder.store(value, pointer, align=4)
        return context.get_dummy_value()

    return sig, codegen


_sums8: Any = intrinsic(_sums8_typing)


def _messages8_typing(typingctx: Any, mags: Any, ext: Any, lane: Any, ends: Any, msg: Any,
                      newpost: Any, u0: Any, width: Any, degree: Any, msg_stride: Any,
                      post_stride: Any, post_twin: Any) -> Any:
    if not (_is_vector(mags) and _is_vector(ext) and _is_vector(lane) and _is_vector(ends)
            and _is_vector(msg, writable=True) and _is_vector(newpost, writable=True)
            and all(isinstance(v, types.Integer)
                    for v in (u0, width, degree, msg_stride, post_stride, post_twin))):
        return None
    sig = types.void(mags, ext, lane, ends, msg, newpost, u0, width, degree, msg_stride,
                     post_stride, post_twin)

    def codegen(context: Any, builder: llvm_ir.IRBuilder, signature: Any, args: Any) -> Any:
        arrays = [context.make_array(signature.args[k])(context, builder, args[k])
                  for k in range(6)]
        mags_a, ext_a, lane_a, ends_a, msg_a, newpost_a = arrays
        u0_, width_, degree_, msg_stride_, post_stride_, post_twin_ = (
            _i64(builder, v) for v in args[6:])
        f32 = llvm_ir.FloatType()
        vf = llvm_ir.VectorType(f32, _LANES)
        vi = llvm_ir.VectorType(llvm_ir.IntType(32), _LANES)
        base, coef1, coef2, exact1, exact2 = (
            builder.load(_row(builder, lane_a.data, k, width_, u0_), align=4)
            for k in range(LANE_ROWS))
        negative = builder.bitcast(
            builder.load(_row(builder, ends_a.data, _NEGATIVE, width_, u0_), align=4), vi)
        x1 = builder.load(_row(builder, ends_a.data, _X1, width_, u0_), align=4)
        x2 = builder.load(_row(builder, ends_a.data, _X2, width_, u0_), align=4)
        sign = llvm_ir.Constant(vi, [_SIGN] * _LANES)
        fma = _declare(builder.module, llvm_ir.FunctionType(vf, [vf, vf, vf]), "llvm.fma.v8f32")
        twin_data = builder.gep(newpost_a.data, [post_twin_])

        def body(b: llvm_ir.IRBuilder, at: list[llvm_ir.Value], values: list[llvm_ir.Value]
                 ) -> list[llvm_ir.Value]:
            at_scratch, at_msg, at_post = at
            p = b.load(_vector_at(b, mags_a.data, at_scratch), align=4)
            t = b.load(_vector_at(b, ext_a.data, at_scratch), align=4)
            approx = b.call(fma, [p, b.call(fma, [p, coef2, coef1]), base])
            mag = b.select(b.fcmp_ordered("==", p, x2), exact2, approx)
            mag = b.select(b.fcmp_ordered("==", p, x1), exact1, mag)
            flip = b.and_(b.xor(negative, b.bitcast(t, vi)), sign)
            value = b.bitcast(b.xor(b.bitcast(mag, vi), flip), vf)
            b.store(value, _vector_at(b, msg_a.data, at_msg), align=4)
            posterior = b.fadd(t, value)
            b.store(posterior, _vector_at(b, newpost_a.data, at_post), align=4)
            b.store(posterior, _vector_at(b, twin_data, at_post), align=4)
            return []

        _edge_loop(builder, degree_, [(u0_, width_), (u0_, msg_stride_), (u0_, post_stride_)],
                   [], body)
        return context.get_dummy_value()

    return sig, codegen


_messages8: Any = intrinsic(_messages8_typing)


def _fma_typing(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    if not all(v == types.float32 for v in (a, b, c)):
        return None

    def codegen(context: Any, builder: llvm_ir.IRBuilder, signature: Any, args: Any) -> Any:
        f32 = llvm_ir.FloatType()
        fma = _declare(builder.module, llvm_ir.FunctionType(f32, [f32, f32, f32]), "llvm.fma.f32")
        return builder.call(fma, list(args))

    return types.float32(a, b, c), codegen


# ``a * b + c`` rounded once (the scalar tails' twin of the vector ``llvm.fma``: contraction
# under ``fastmath`` is LLVM's choice, not a promise).
_fma: Any = intrinsic(_fma_typing)


@numba.njit(cache=True, nogil=True, inline="always")
def check_sums_into(
    mags: NDArray[np.float32], ext: NDArray[np.float32], ends: NDArray[np.float32], z: int,
    degree: int,
) -> None:  # pragma: no cover - compiled
    """``ends`` (rows of ``z``: sum of phi, sign parity, largest and second largest phi, as the
    caller initialised them) updated by the ``degree`` rows of ``z`` of ``mags`` (phi of the
    inputs) and ``ext`` (the inputs), in row order (see the module doc). 1-D C-contiguous
    float32 arrays of at least ``degree * z`` and ``ENDS_ROWS * z`` values."""
    body = z - z % _LANES
    for u0 in range(0, body, _LANES):
        _sums8(mags, ext, ends, u0, z, degree)
    for u in range(body, z):
        total = ends[_TOTAL * z + u]
        negative = ends[_NEGATIVE * z + u]
        x1 = ends[_X1 * z + u]
        x2 = ends[_X2 * z + u]
        for r in range(degree):
            p = mags[r * z + u]
            t = ext[r * z + u]
            total = total + p
            negative = np.int32(np.float32(negative).view(np.int32)
                                ^ np.float32(t).view(np.int32)).view(np.float32)
            # The vector lanes' compare-and-select (and the twin's), not min/max, whose
            # results differ from it on NaN and on +-0.0 ties.
            least = x1 if x1 < p else p
            x2 = x2 if x2 > least else least
            x1 = x1 if x1 > p else p
        ends[_TOTAL * z + u] = total
        ends[_NEGATIVE * z + u] = negative
        ends[_X1 * z + u] = x1
        ends[_X2 * z + u] = x2


@numba.njit(cache=True, nogil=True, inline="always")
def check_messages_into(
    mags: NDArray[np.float32], ext: NDArray[np.float32], lane: NDArray[np.float32],
    ends: NDArray[np.float32], msg: NDArray[np.float32], newpost: NDArray[np.float32],
    width: int, degree: int, msg_stride: int, post_stride: int, post_twin: int,
) -> None:  # pragma: no cover - compiled
    """The new message of each of the ``degree * width`` edges into ``msg`` (row ``r`` at
    ``r * msg_stride``) and its new posterior ``ext + message`` twice into ``newpost`` (row
    ``r`` at ``r * post_stride`` and ``r * post_stride + post_twin``), from the per-lane terms
    ``lane`` and ``ends`` (see the module doc; ``mags``, ``ext``, ``lane`` and ``ends`` have
    rows of ``width``). 1-D C-contiguous float32 arrays sized for those rows."""
    body = width - width % _LANES
    for u0 in range(0, body, _LANES):
        _messages8(mags, ext, lane, ends, msg, newpost, u0, width, degree, msg_stride,
                   post_stride, post_twin)
    for u in range(body, width):
        base = lane[_BASE * width + u]
        coef1 = lane[_COEF1 * width + u]
        coef2 = lane[_COEF2 * width + u]
        exact1 = lane[_EXACT1 * width + u]
        exact2 = lane[_EXACT2 * width + u]
        negative = np.float32(ends[_NEGATIVE * width + u]).view(np.int32)
        x1 = ends[_X1 * width + u]
        x2 = ends[_X2 * width + u]
        for r in range(degree):
            p = mags[r * width + u]
            t = ext[r * width + u]
            approx = _fma(p, _fma(p, coef2, coef1), base)
            mag = exact2 if p == x2 else approx
            mag = exact1 if p == x1 else mag
            flip = (negative ^ np.float32(t).view(np.int32)) & np.int32(_SIGN)
            value = np.int32(np.float32(mag).view(np.int32) ^ flip).view(np.float32)
            msg[r * msg_stride + u] = value
            v = t + value
            newpost[r * post_stride + u] = v
            newpost[r * post_stride + post_twin + u] = v


@numba.njit(cache=True, nogil=True)
def _check_sums_many(mags: NDArray[np.float32], ext: NDArray[np.float32],
                     ends: NDArray[np.float32], z: int, degree: int
                     ) -> NDArray[np.float32]:  # pragma: no cover - compiled
    out = ends.copy()
    check_sums_into(mags, ext, out, z, degree)
    return out


def _rows(x: NDArray[Any], rows: int, z: int, name: str) -> NDArray[np.float32]:
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float32)).reshape(-1)
    if flat.size != rows * z:
        raise ValueError(f"{name} must hold {rows} rows of z = {z} values, got {flat.size}")
    return flat


def check_sums_many(mags: NDArray[np.float32], ext: NDArray[np.float32],
                    ends: NDArray[np.float32]) -> NDArray[np.float32]:
    """Compiled :func:`check_sums_into` on ``mags`` and ``ext`` of shape ``(degree, z)`` and
    ``ends`` of shape ``(ENDS_ROWS, z)``; returns the updated ``ends`` (a new array)."""
    degree, z = np.shape(mags)
    out = _check_sums_many(_rows(mags, degree, z, "mags"), _rows(ext, degree, z, "ext"),
                           _rows(ends, ENDS_ROWS, z, "ends"), z, degree)
    return out.reshape(ENDS_ROWS, z)


def check_sums_reference(mags: NDArray[np.float32], ext: NDArray[np.float32],
                         ends: NDArray[np.float32]) -> NDArray[np.float32]:
    """Plain-numpy twin of :func:`check_sums_many` (float32, row by row in edge order)."""
    total, negative, x1, x2 = (np.array(row, dtype=np.float32) for row in ends)
    negative = negative.view(np.int32)
    for p, t in zip(np.asarray(mags, np.float32), np.asarray(ext, np.float32), strict=True):
        total = (total + p).astype(np.float32)
        negative = negative ^ t.view(np.int32)
        x2 = np.where(x2 > np.where(x1 < p, x1, p), x2, np.where(x1 < p, x1, p))
        x1 = np.where(x1 > p, x1, p)
    return np.stack([total, negative.view(np.float32), x1, x2]).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _check_messages_many(
    mags: NDArray[np.float32], ext: NDArray[np.float32], lane: NDArray[np.float32],
    ends: NDArray[np.float32], z: int, degree: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:  # pragma: no cover - compiled
    msg = np.empty(degree * z, dtype=np.float32)
    newpost = np.empty(2 * degree * z, dtype=np.float32)
    check_messages_into(mags, ext, lane, ends, msg, newpost, z, degree, z, 2 * z, z)
    return msg, newpost


def check_messages_many(
    mags: NDArray[np.float32], ext: NDArray[np.float32], lane: NDArray[np.float32],
    ends: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Compiled :func:`check_messages_into` on ``mags`` and ``ext`` of shape ``(degree, z)``,
    ``lane`` ``(LANE_ROWS, z)`` and ``ends`` ``(ENDS_ROWS, z)``; returns the messages
    ``(degree, z)`` and the doubled posteriors ``(degree, 2 z)``."""
    degree, z = np.shape(mags)
    msg, newpost = _check_messages_many(
        _rows(mags, degree, z, "mags"), _rows(ext, degree, z, "ext"),
        _rows(lane, LANE_ROWS, z, "lane"), _rows(ends, ENDS_ROWS, z, "ends"), z, degree)
    return msg.reshape(degree, z), newpost.reshape(degree, 2 * z)


def _fma32(a: NDArray[np.float32], b: NDArray[np.float32], c: NDArray[np.float32]
           ) -> NDArray[np.float32]:
    """``a * b + c`` rounded once to float32, as a fused multiply-add: the float64 product of
    two float32s is exact; the float64 sum's own rounding error (two-sum) decides the one case
    where rounding that sum to float32 again would differ, a sum exactly halfway between two
    float32s."""
    f32, f64 = np.float32, np.float64
    product = a.astype(f64) * b.astype(f64)
    c64 = c.astype(f64)
    total = product + c64
    virtual = total - product
    error = (product - (total - virtual)) + (c64 - virtual)
    with np.errstate(over="ignore"):  # beyond float32's range: inf, as the fma gives
        rounded = total.astype(f32)
        low = np.where(rounded.astype(f64) <= total, rounded,
                       np.nextafter(rounded, f32(-np.inf)))
        high = np.nextafter(low, f32(np.inf))
    # Rounding treats the float32 after the largest finite one as 2^128: a sum halfway
    # between them goes to the largest finite value or to inf by its error, as any tie.
    edge = np.float64(2.0**128)
    low64 = np.where(np.isinf(low), np.copysign(edge, low), low.astype(f64))
    high64 = np.where(np.isinf(high), np.copysign(edge, high), high.astype(f64))
    halfway = (low64 + high64) / 2 == total
    nudged = np.where(error > 0, high, low)
    result: NDArray[np.float32] = np.where(halfway & (error != 0), nudged, rounded)
    return result


def check_messages_reference(
    mags: NDArray[np.float32], ext: NDArray[np.float32], lane: NDArray[np.float32],
    ends: NDArray[np.float32],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Plain-numpy twin of :func:`check_messages_many` (the expansion's two fused
    multiply-adds each rounded once, as the intrinsic's ``llvm.fma``)."""
    f32 = np.float32
    p = np.asarray(mags, f32)
    t = np.asarray(ext, f32)
    base, coef1, coef2, exact1, exact2 = (np.asarray(row, f32) for row in lane)
    negative = np.asarray(ends[_NEGATIVE], f32).view(np.int32)
    x1 = np.asarray(ends[_X1], f32)
    x2 = np.asarray(ends[_X2], f32)
    shape = p.shape
    approx = _fma32(p, _fma32(p, np.broadcast_to(coef2, shape), np.broadcast_to(coef1, shape)),
                    np.broadcast_to(base, shape))
    mag = np.where(p == x2, exact2, approx)
    mag = np.where(p == x1, exact1, mag).astype(f32)
    flip = (negative ^ t.view(np.int32)) & np.int32(_SIGN)
    msg = (mag.view(np.int32) ^ flip).view(f32)
    posterior = (t + msg).astype(f32)
    return msg, np.concatenate([posterior, posterior], axis=1)

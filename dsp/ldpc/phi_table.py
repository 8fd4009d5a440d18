"""phi of the check inputs of ``"sum-product-fast"``, read from a table, 8 values per vector gather.

The polynomial :func:`.phi.phi` costs about 35 dependent float and integer operations per value,
a third of the decoder's time per edge (measured on n384000_r085: 1.1-1.3 ns of 3.2-3.6 ns per
edge-iteration). Sum-product-fast takes the phi of each check input from this table instead:

* the index is the float32's bits shifted right by ``PHI_TABLE_SHIFT`` (16): its exponent and
  top 7 mantissa bits, so the buckets are 2^-7 wide relative to ``x`` (a log-spaced table);
* each entry is the mean of phi over its bucket (16-point Gauss-Legendre in float64);
* ``|x|`` is clamped to ``[PHI_TABLE_LO, PHI_TABLE_HI]`` first (``phi(2^-16) = 11.8``, the
  message of an erased input; ``PHI_TABLE_HI`` is sum-product-fast's clamp, ``PHI_FAST_X_MAX``),
  on its bits as an integer (the same order for non-negative floats), so no fastmath flag of a
  caller can change it; a NaN's bits lie above infinity's and go to the upper clamp, so no
  index is ever out of range.
* the table describes itself (a header of ``PHI_TABLE_HEADER`` slots: the clamps' bits, the
  shift, the first bucket) and the kernels take it as an argument: nothing about it is frozen
  into compiled code, which numba caches on disk per defining file.

2 673 entries and a 4-slot header (10.5 KiB) stay in L1. Decoding is unchanged to the iteration
on the shipped codes (n384000_r085 at QBER 2 %, f 1.10-1.16: the same frames converge after the
same mean number of iterations as with the polynomial), while the layer update gets about 30 %
cheaper.

:func:`sub_phi_table_into` is sum-product-fast's gather and phi in one pass: it reads the
header once and runs 8 values at a time through one intrinsic, a vector subtraction (posterior
minus old message, stored too), ``fabs``, the clamp, the index, and one scalar load per lane at
``table + index`` (x86 scales the index in the address). ``llvm.masked.gather`` of the same
8 addresses measured no faster as ``vgatherdps`` and, scalarised by LLVM on this machine's
Zen 3, built 64-bit pointers in vector registers first (about 10 more instructions per 8
values) and reloaded the header every 8 values; the per-lane loads and the hoisted header cut
the sum-product-fast layer by 7-15 % (single thread, n384000_r085, interleaved runs). A plain
numba loop over ``table[index]`` is slower than either, as it checks each index for
wrap-around. :func:`phi_table` is the scalar form (the tails, the CSR and narrow kernels);
:func:`phi_table_reference` and :func:`sub_phi_table_reference` are the plain-numpy twins,
equal bit for bit (the same clamp and index, then the same table entry). The intrinsic
accepts only 1-D C-contiguous float32 arrays (its pointer arithmetic assumes them);
:func:`phi_table_many` (the same pass with nothing subtracted) and
:func:`sub_phi_table_many` take any layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import llvmlite.ir as llvm_ir
import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic
from numpy.typing import NDArray

from .phi import PHI_FAST_X_MAX

__all__ = [
    "PHI_TABLE",
    "PHI_TABLE_HEADER",
    "PHI_TABLE_HI",
    "PHI_TABLE_LO",
    "PHI_TABLE_SHIFT",
    "phi_table",
    "phi_table_many",
    "phi_table_reference",
    "sub_phi_table_into",
    "sub_phi_table_many",
    "sub_phi_table_reference",
]

PHI_TABLE_SHIFT: Final = 16
PHI_TABLE_LO: Final = 2.0**-16
PHI_TABLE_HI: Final = PHI_FAST_X_MAX

# The table describes itself: its first PHI_TABLE_HEADER float32 slots hold, as int32 bit
# patterns, the clamps' bits, the shift and the first bucket's index, then come the entries. The
# kernels take it as an argument and read all of it at run time, so nothing about it is frozen
# into compiled (and disk-cached) code: numba's cache follows only a kernel's own file.
PHI_TABLE_HEADER: Final = 4
_LO_BITS: Final = int(np.array([PHI_TABLE_LO], np.float32).view(np.int32)[0])
_HI_BITS: Final = int(np.array([PHI_TABLE_HI], np.float32).view(np.int32)[0])
_FIRST: Final = _LO_BITS >> PHI_TABLE_SHIFT
_LAST: Final = _HI_BITS >> PHI_TABLE_SHIFT
_LANES: Final = 8


def _exact_phi(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """phi(x) = log((e^x + 1) / (e^x - 1)) = log1p(2 / expm1(x)) in float64, x > 0."""
    result: NDArray[np.float64] = np.log1p(2.0 / np.expm1(x))
    return result


def _build_table() -> NDArray[np.float32]:
    """The header, then the mean of phi over each bucket ``[a, b)`` of float32s sharing their
    top 16 bits."""
    index = np.arange(_FIRST, _LAST + 1, dtype=np.int64)
    a = (index << PHI_TABLE_SHIFT).astype(np.int32).view(np.float32).astype(np.float64)
    b = ((index + 1) << PHI_TABLE_SHIFT).astype(np.int32).view(np.float32).astype(np.float64)
    nodes, weights = np.polynomial.legendre.leggauss(16)
    x = (a + b)[:, None] / 2 + (b - a)[:, None] / 2 * nodes[None, :]
    header = np.array([_LO_BITS, _HI_BITS, PHI_TABLE_SHIFT, _FIRST - PHI_TABLE_HEADER],
                      np.int32).view(np.float32)
    table = np.concatenate([header, (_exact_phi(x) @ weights / 2).astype(np.float32)])
    table.setflags(write=False)
    return table


# The table the decoder passes to its kernels.
PHI_TABLE: Final = _build_table()


def phi_table_reference(
    x: NDArray[np.float32], table: NDArray[np.float32] = PHI_TABLE
) -> NDArray[np.float32]:
    """Plain-numpy twin of :func:`phi_table`: the table phi of ``|x|``, elementwise, float32."""
    lo, hi, shift, base = (int(v) for v in table[:PHI_TABLE_HEADER].view(np.int32))
    bits = np.abs(np.asarray(x, dtype=np.float32)).view(np.int32)
    bits = np.minimum(np.maximum(bits, lo), hi)  # NaN (bits above inf) -> hi
    result: NDArray[np.float32] = table[(bits >> shift) - base]
    return result


@numba.njit(cache=True, nogil=True, inline="always")
def phi_table(x: np.float32, table: NDArray[np.float32]) -> np.float32:  # pragma: no cover
    """The table phi of ``|x|`` (scalar; see the module doc). The clamp is on the bits of
    ``|x|`` (integer order is float order for non-negative floats), so no floating-point flag
    of the caller (fastmath) can change it; a NaN goes to the upper clamp."""
    bits = np.float32(abs(x)).view(np.int32)
    bits = max(bits, np.float32(table[0]).view(np.int32))
    bits = min(bits, np.float32(table[1]).view(np.int32))
    shift = np.float32(table[2]).view(np.int32)
    base = np.float32(table[3]).view(np.int32)
    return np.float32(table[np.int32(bits >> shift) - base])


def _splat(builder: llvm_ir.IRBuilder, value: llvm_ir.Value, vector: llvm_ir.VectorType
           ) -> llvm_ir.Value:
    """``value`` in every lane of a ``vector``."""
    lane0 = llvm_ir.Constant(llvm_ir.IntType(32), 0)
    one = builder.insert_element(llvm_ir.Constant(vector, llvm_ir.Undefined), value, lane0)
    mask = llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), _LANES), [0] * _LANES)
    return builder.shuffle_vector(one, llvm_ir.Constant(vector, llvm_ir.Undefined), mask)


# numba's helper to declare an LLVM function in a module (untyped).
_declare: Callable[..., Any] = cgutils.get_or_insert_function


def _is_vector(array: Any, writable: bool = False) -> bool:
    """A 1-D C-contiguous float32 array (and writable, if asked): what the intrinsic's plain
    pointer arithmetic is valid for."""
    return (isinstance(array, types.Array) and array.dtype == types.float32
            and array.ndim == 1 and array.layout == "C"
            and (not writable or array.mutable))


def _emit_phi8(builder: llvm_ir.IRBuilder, x: llvm_ir.Value, table_data: llvm_ir.Value,
               header: list[llvm_ir.Value]) -> llvm_ir.Value:
    """LLVM IR of the table phi of the 8 floats of vector ``x``: ``fabs``, the clamp on the
    bits, the index, and one scalar load per lane at ``table + index`` (x86 addressing scales
    the index; the clamp keeps every index inside the table)."""
    f32 = llvm_ir.FloatType()
    i32 = llvm_ir.IntType(32)
    i64 = llvm_ir.IntType(64)
    vf = llvm_ir.VectorType(f32, _LANES)
    vi = llvm_ir.VectorType(i32, _LANES)
    lo, hi, shift, base = (_splat(builder, value, vi) for value in header)
    fabs = _declare(builder.module, llvm_ir.FunctionType(vf, [vf]), "llvm.fabs.v8f32")
    bits = builder.bitcast(builder.call(fabs, [x]), vi)
    bits = builder.select(builder.icmp_signed(">", bits, lo), bits, lo)
    bits = builder.select(builder.icmp_signed("<", bits, hi), bits, hi)  # NaN -> hi
    index = builder.sub(builder.lshr(bits, shift), base)
    values = llvm_ir.Constant(vf, llvm_ir.Undefined)
    for lane in range(_LANES):
        at = llvm_ir.Constant(i32, lane)
        entry = builder.gep(table_data, [builder.zext(builder.extract_element(index, at), i64)])
        values = builder.insert_element(values, builder.load(entry, align=4), at)
    return values


def _header_types(*values: Any) -> bool:
    return all(v == types.int32 for v in values)


def _i64(builder: llvm_ir.IRBuilder, value: llvm_ir.Value) -> llvm_ir.Value:
    """An integer ``value`` sign-extended to i64 (as it is if already 64 bits)."""
    i64 = llvm_ir.IntType(64)
    return builder.sext(value, i64) if value.type.width < 64 else value


def _vector_at(builder: llvm_ir.IRBuilder, data: llvm_ir.Value, offset: llvm_ir.Value
               ) -> llvm_ir.Value:
    """Pointer to the 8 floats at ``data + offset``."""
    vf = llvm_ir.VectorType(llvm_ir.FloatType(), _LANES)
    return builder.bitcast(builder.gep(data, [_i64(builder, offset)]), vf.as_pointer())


def _sub_phi_table8_typing(
    typingctx: Any, a: Any, b: Any, diff: Any, dst: Any, start: Any, table: Any, lo: Any,
    hi: Any, shift: Any, base: Any,
) -> Any:
    """``diff[j] = a[j] - b[j]`` and ``dst[j] = table phi of |diff[j]|`` for the 8 ``j`` from
    ``start``, as one vector operation; ``lo, hi, shift, base`` are the table's header, read
    once by the caller (int32).

    Only for 1-D C-contiguous float32 arrays (``diff`` and ``dst`` writable); the caller
    guarantees ``start + 8`` fits all four (no bounds checks here)."""
    if not (_is_vector(a) and _is_vector(b) and _is_vector(diff, writable=True)
            and _is_vector(dst, writable=True) and _is_vector(table)
            and isinstance(start, types.Integer) and _header_types(lo, hi, shift, base)):
        return None
    sig = types.void(a, b, diff, dst, start, table, lo, hi, shift, base)

    def codegen(context: Any, builder: llvm_ir.IRBuilder, signature: Any, args: Any) -> Any:
        a_v, b_v, diff_v, dst_v, start_v, table_v, *header = args
        arrays = [context.make_array(signature.args[k])(context, builder, v)
                  for k, v in ((0, a_v), (1, b_v), (2, diff_v), (3, dst_v), (5, table_v))]
        a_a, b_a, diff_a, dst_a, table_a = arrays
        x = builder.fsub(builder.load(_vector_at(builder, a_a.data, start_v), align=4),
                         builder.load(_vector_at(builder, b_a.data, start_v), align=4))
        builder.store(x, _vector_at(builder, diff_a.data, start_v), align=4)
        values = _emit_phi8(builder, x, table_a.data, header)
        builder.store(values, _vector_at(builder, dst_a.data, start_v), align=4)
        return context.get_dummy_value()

    return sig, codegen


_sub_phi_table8: Any = intrinsic(_sub_phi_table8_typing)


@numba.njit(cache=True, nogil=True, inline="always")
def _header(table: NDArray[np.float32]) -> tuple[np.int32, np.int32, np.int32, np.int32]:
    """The table's header (lower and upper clamp bits, shift, first bucket), read once before
    a loop of intrinsic calls (inside the intrinsic LLVM reloaded it for every 8 values: the
    destination might alias the table, for all it knows)."""
    return (np.float32(table[0]).view(np.int32), np.float32(table[1]).view(np.int32),
            np.float32(table[2]).view(np.int32), np.float32(table[3]).view(np.int32))


@numba.njit(cache=True, nogil=True, inline="always")
def sub_phi_table_into(
    a: NDArray[np.float32], b: NDArray[np.float32], diff: NDArray[np.float32],
    dst: NDArray[np.float32], n: int, table: NDArray[np.float32],
) -> None:  # pragma: no cover - compiled
    """``diff[j] = a[j] - b[j]`` and ``dst[j] = phi_table(diff[j], table)`` for ``j < n`` (``n``
    at most every length, which the caller guarantees; 1-D C-contiguous arrays): the
    sum-product-fast gather (posterior minus old message) and its table phi in one pass, 8 at
    a time, the rest one by one."""
    lo, hi, shift, base = _header(table)
    body = n - n % _LANES
    for j in range(0, body, _LANES):
        _sub_phi_table8(a, b, diff, dst, j, table, lo, hi, shift, base)
    for j in range(body, n):
        t = a[j] - b[j]
        diff[j] = t
        dst[j] = phi_table(t, table)


@numba.njit(cache=True, nogil=True)
def _sub_phi_table_many(a: NDArray[np.float32], b: NDArray[np.float32],
                        table: NDArray[np.float32]
                        ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:  # pragma: no cover
    diff = np.empty_like(a)
    out = np.empty_like(a)
    sub_phi_table_into(a, b, diff, out, a.shape[0], table)
    return diff, out


def sub_phi_table_many(
    a: NDArray[np.float32], b: NDArray[np.float32], table: NDArray[np.float32] = PHI_TABLE
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Compiled ``(a - b, table phi of |a - b|)`` over 1-D arrays of equal length and any
    layout (what the tests compare with :func:`sub_phi_table_reference`)."""
    flat_a = np.ascontiguousarray(np.asarray(a, dtype=np.float32).ravel())
    flat_b = np.ascontiguousarray(np.asarray(b, dtype=np.float32).ravel())
    if flat_a.shape != flat_b.shape:
        raise ValueError(f"a and b must have the same size, got {flat_a.size} and {flat_b.size}")
    diff, out = _sub_phi_table_many(flat_a, flat_b, table)
    return diff, out


def sub_phi_table_reference(
    a: NDArray[np.float32], b: NDArray[np.float32], table: NDArray[np.float32] = PHI_TABLE
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Plain-numpy twin of :func:`sub_phi_table_into`: ``(a - b, phi_table_reference(a - b))``
    in float32."""
    diff = (np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).astype(np.float32)
    return diff, phi_table_reference(diff, table)


@numba.njit(cache=True, nogil=True)
def _phi_table_many(x: NDArray[np.float32], table: NDArray[np.float32]
                    ) -> NDArray[np.float32]:  # pragma: no cover - compiled
    # The decoder's own pass with nothing subtracted: x - (+0.0) is x, bit for bit (-0.0
    # stays -0.0, a NaN stays a NaN and takes the upper clamp either way).
    scratch = np.empty_like(x)
    out = np.empty_like(x)
    sub_phi_table_into(x, np.zeros_like(x), scratch, out, x.shape[0], table)
    return out


def phi_table_many(x: NDArray[np.float32], table: NDArray[np.float32] = PHI_TABLE
                   ) -> NDArray[np.float32]:
    """Compiled table phi of ``|x|`` over an array of any layout (vector body and scalar
    tail), what the tests compare with :func:`phi_table_reference`."""
    flat = np.ascontiguousarray(np.asarray(x, dtype=np.float32).ravel())
    result: NDArray[np.float32] = _phi_table_many(flat, table).reshape(np.shape(x))
    return result

"""Vector operations that numba's own compiler does not produce, for the CPU kernels (numba intrinsics).

The kernels' innermost work is adding rows of N floats (N = 32 in the workshop): a weight row per
input that spiked. numba's loop vectoriser compiles such a loop for 64 lanes at a time and runs
rows of 32 through its scalar remainder, so these helpers spell the vector operations out. Each
lane is an ordinary float32 multiply and add (IEEE, no fused multiply-add), in the order written:
the results are bit for bit those of the scalar loop, on every CPU (LLVM maps the 8 lanes onto
whatever vector registers the CPU has, or onto scalar code).

- ``add4(y, i, x, r0, r1, r2, r3, s0, s1, s2, s3, lanes)``: for n < lanes,
  ``y[i, n] = (((y[i, n] + s0 x[r0, n]) + s1 x[r1, n]) + s2 x[r2, n]) + s3 x[r3, n]``
- ``add1(y, i, x, r, s, lanes)``: ``y[i, n] += s x[r, n]`` for n < lanes

``y`` and ``x`` are C-contiguous 2-d float32 arrays; ``lanes`` is a multiple of 8 no larger than
their rows, and the row indices are valid: the caller guarantees it, nothing is checked.

Listing the inputs that spiked reads every input once; a scalar loop needs about 1.6 cycles per
input, three times what the memory allows. Where the CPU has AVX2 (:data:`AVX2`; every x86 CPU since
2013-2015, AVX-512 ones too), one permutation from a table packs the positions of the non-zero lanes
of 8 inputs (as fast here as AVX-512's compress instruction):

- ``compress8(bits, offset, out, q, h, table)``: writes h + j for the lanes j < 8 with
  ``bits[offset + j] != 0`` to ``out[q], out[q + 1], ...`` in ascending order (and overwrites up to 8
  entries from ``out[q]`` on), and returns (how many, how many of them are the bits of 1.0);
  ``table`` is :func:`permutations`.
"""

import numpy as np

from .jit import numba

WIDTH = 8
AVX2 = False  # whether compress8 may be used: numba compiles for this CPU, and it has AVX2


def permutations() -> np.ndarray:
    """[256, 8] int32: row m lists the set bits of m in ascending order (then zeros)."""
    table = np.zeros((256, 8), np.int32)
    for mask in range(256):
        bits = [lane for lane in range(8) if mask >> lane & 1]
        table[mask, :len(bits)] = bits
    return table

if numba is not None:  # without numba the kernels never run, and nothing here is needed
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    _FLOAT = ir.FloatType()
    _VECTOR = ir.VectorType(_FLOAT, WIDTH)

    def _row(context, builder, arraytype, array, row):
        """Pointer to the first float of array[row] (a C-contiguous 2-d array)."""
        ary = context.make_array(arraytype)(context, builder, array)
        columns = cgutils.unpack_tuple(builder, ary.shape, 2)[1]
        return builder.gep(ary.data, [builder.mul(row, columns)])

    def _splat(builder, value):
        vector = ir.Constant(_VECTOR, ir.Undefined)
        for lane in range(WIDTH):
            vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
        return vector

    def _add_rows_codegen(rows: int):
        def codegen(context, builder, signature, args):
            (y_type, i_type, x_type), (y, i, x) = signature.args[:3], args[:3]
            index = lambda k: context.cast(builder, args[k], signature.args[k], types.intp)  # noqa: E731
            target = _row(context, builder, y_type, y, index(1))
            sources = [_row(context, builder, x_type, x, index(3 + k)) for k in range(rows)]
            scales = [_splat(builder, context.cast(builder, args[3 + rows + k], signature.args[3 + rows + k],
                                                   types.float32)) for k in range(rows)]
            count = builder.sdiv(index(3 + 2 * rows), ir.Constant(ir.IntType(64), WIDTH))
            with cgutils.for_range(builder, count) as loop:
                offset = builder.mul(loop.index, ir.Constant(ir.IntType(64), WIDTH))
                lanes = lambda pointer: builder.bitcast(builder.gep(pointer, [offset]), _VECTOR.as_pointer())  # noqa
                total = builder.load(lanes(target), align=4)
                for source, scale in zip(sources, scales):
                    total = builder.fadd(total, builder.fmul(scale, builder.load(lanes(source), align=4)))
                builder.store(total, lanes(target), align=4)
            return context.get_dummy_value()

        return codegen

    def _check(y, x):
        for array in (y, x):
            if not (isinstance(array, types.Array) and array.ndim == 2 and array.dtype == types.float32
                    and array.layout == "C"):
                raise TypeError(f"simd: expected a C-contiguous 2-d float32 array, got {array}")

    @intrinsic
    def add4(typingctx, y, i, x, r0, r1, r2, r3, s0, s1, s2, s3, lanes):
        _check(y, x)
        return types.void(y, i, x, r0, r1, r2, r3, s0, s1, s2, s3, lanes), _add_rows_codegen(4)

    @intrinsic
    def add1(typingctx, y, i, x, r, s, lanes):
        _check(y, x)
        return types.void(y, i, x, r, s, lanes), _add_rows_codegen(1)

    def _has_avx2() -> bool:
        import llvmlite.binding

        if numba.config.CPU_NAME is not None:  # compiled for another CPU than this one: no x86 intrinsics
            return False
        try:
            return bool(llvmlite.binding.get_host_cpu_features().get("avx2", False))
        except RuntimeError:  # no feature detection on this platform
            return False

    AVX2 = _has_avx2()
    _I32 = ir.IntType(32)
    _LANES = ir.VectorType(_I32, 8)

    def _compress_codegen(context, builder, signature, args):
        bits = context.make_array(signature.args[0])(context, builder, args[0])
        out = context.make_array(signature.args[2])(context, builder, args[2])
        table = context.make_array(signature.args[5])(context, builder, args[5])
        offset, q = (context.cast(builder, args[k], signature.args[k], types.intp) for k in (1, 3))
        h = context.cast(builder, args[4], signature.args[4], types.int32)
        words = builder.load(builder.bitcast(builder.gep(bits.data, [offset]), _LANES.as_pointer()), align=4)
        nonzero = builder.icmp_unsigned("!=", words, ir.Constant(_LANES, None))
        ones = builder.icmp_unsigned("==", words, ir.Constant(_LANES, [0x3F800000] * 8))
        first = builder.insert_element(ir.Constant(_LANES, ir.Undefined), h, ir.Constant(_I32, 0))
        positions = builder.add(builder.shuffle_vector(first, ir.Constant(_LANES, ir.Undefined),
                                                       ir.Constant(_LANES, [0] * 8)),
                                ir.Constant(_LANES, list(range(8))))
        # the permutation that packs this mask's lanes, row `mask` of the table
        row = builder.mul(builder.zext(builder.bitcast(nonzero, ir.IntType(8)), ir.IntType(64)),
                          ir.Constant(ir.IntType(64), 8))
        order = builder.load(builder.bitcast(builder.gep(table.data, [row]), _LANES.as_pointer()), align=4)
        permute = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_LANES, [_LANES, _LANES]), "llvm.x86.avx2.permd")
        packed = builder.call(permute, [positions, order])
        builder.store(packed, builder.bitcast(builder.gep(out.data, [q]), _LANES.as_pointer()), align=4)
        popcount = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(8), [ir.IntType(8)]), "llvm.ctpop.i8")
        counts = [builder.zext(builder.call(popcount, [builder.bitcast(mask, ir.IntType(8))]), ir.IntType(64))
                  for mask in (nonzero, ones)]
        return context.make_tuple(builder, signature.return_type, counts)

    @intrinsic
    def compress8(typingctx, bits, offset, out, q, h, table):
        if not (isinstance(bits, types.Array) and bits.dtype == types.uint32 and bits.layout == "C"
                and isinstance(out, types.Array) and out.dtype == types.int32 and out.layout == "C"
                and isinstance(table, types.Array) and table.dtype == types.int32 and table.layout == "C"):
            raise TypeError(f"compress8: expected C-contiguous uint32 bits, int32 out and table, got "
                            f"{bits}, {out}, {table}")
        return types.UniTuple(types.int64, 2)(bits, offset, out, q, h, table), _compress_codegen

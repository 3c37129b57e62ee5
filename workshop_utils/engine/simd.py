"""Vector operations that numba's own compiler does not produce, for the CPU kernels (numba intrinsics).

The kernels' innermost work is adding rows of N floats (N = 32 in the workshop): a weight row per
input that spiked. numba's loop vectoriser compiles such a loop for 64 lanes at a time and runs
rows of 32 through its scalar remainder, so these helpers spell the vector operations out. Each
lane is an ordinary float32 multiply and add (IEEE, no fused multiply-add), in the order written:
the results are bit for bit those of the scalar loop, on every CPU (LLVM maps the 8 lanes onto
whatever vector registers the CPU has, or onto scalar code).

- ``gather(y, i, x, rows, start, stop, scale, scaled, lanes)``: for n < lanes,
  ``y[i, n] = ((y[i, n] + s_0 x[r_0, n]) + s_1 x[r_1, n]) + ...`` over r_q = rows[q],
  start <= q < stop, with s_q = scale[r_q] if ``scaled`` else 1 (then no multiply: 1 x = x exactly).
  The partial sums of up to 32 lanes stay in registers for the whole list (four independent
  8-lane additions per row), so a row costs one addition's latency, not a store and a reload.
- ``gather2(y, i0, i1, x, rows, start0, stop0, start1, stop1, scale0, scale1, scaled, lanes)``: gather
  into y[i0] (rows[start0:stop0], scale0) and y[i1] (rows[start1:stop1], scale1) at once, each in its
  own order as gather adds it: two independent sets of partial sums hide the additions' latency.
- ``scatter(y, rows, start, stop, scale, scaled, x, i, lanes)``: ``y[r_q, n] += s_q x[i, n]`` for
  n < lanes and each listed row in turn (x[i] is loaded once per 32 lanes).

``y`` and ``x`` are C-contiguous 2-d float32 arrays, ``rows`` a C-contiguous 1-d integer array and
``scale`` a C-contiguous 1-d float32 array; ``lanes`` is a multiple of 8 no larger than the rows of y
and x, and the row indices are valid: the caller guarantees it, nothing is checked.

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

    _I64 = ir.IntType(64)
    BLOCK = 4  # vectors of 8 lanes whose partial sums a row loop keeps in registers

    def _pointer(builder, array, index):
        """Pointer to element ``index`` of a C-contiguous array (its data, as a flat array)."""
        return builder.gep(array.data, [index])

    def _vectors(builder, pointer, count):
        """Pointers to ``count`` consecutive 8-lane vectors from ``pointer`` on."""
        return [builder.bitcast(builder.gep(pointer, [ir.Constant(_I64, WIDTH * k)]), _VECTOR.as_pointer())
                for k in range(count)]

    def _blocks(builder, lanes, emit):
        """Calls emit(offset, vectors) for the lanes [0, lanes) in blocks of BLOCK vectors, then one
        block of the 1 to BLOCK - 1 vectors left (lanes is a multiple of WIDTH)."""
        whole = builder.sdiv(lanes, ir.Constant(_I64, WIDTH * BLOCK))
        with cgutils.for_range(builder, whole) as loop:
            emit(builder.mul(loop.index, ir.Constant(_I64, WIDTH * BLOCK)), BLOCK)
        offset = builder.mul(whole, ir.Constant(_I64, WIDTH * BLOCK))
        left = builder.sdiv(builder.sub(lanes, offset), ir.Constant(_I64, WIDTH))
        for count in range(1, BLOCK):
            with builder.if_then(builder.icmp_signed("==", left, ir.Constant(_I64, count))):
                emit(offset, count)

    def _listed_row(builder, rows, q, scale):
        """(r, s): r = rows[q] as a 64-bit index, s = scale[r] splat to a vector (None without ``scale``)."""
        r = builder.load(_pointer(builder, rows, q))
        r = builder.sext(r, _I64) if r.type.width < 64 else r
        return r, None if scale is None else _splat(builder, builder.load(_pointer(builder, scale, r)))

    def _add_row(builder, x, columns, offset, count, r, s, partial):
        """partial[k] += s x[r, offset + 8k : offset + 8k + 8] for k < count (without s: x alone)."""
        source = _vectors(builder, builder.gep(x.data, [builder.add(builder.mul(r, columns), offset)]), count)
        for k in range(count):
            value = builder.load(source[k], align=4)
            value = builder.fmul(s, value) if s is not None else value
            builder.store(builder.fadd(builder.load(partial[k]), value), partial[k])

    def _rows_loop(context, builder, signature, args, rows_at, scale_at, scaled_at, body):
        """Loops q over [start, stop) (the arguments after ``rows_at``) and calls body(r, s), r = rows[q]
        as intp, s = the splat scale[r] (``scaled``) or None, in two loops: with and without scale."""
        rows = context.make_array(signature.args[rows_at])(context, builder, args[rows_at])
        scale = context.make_array(signature.args[scale_at])(context, builder, args[scale_at])
        start, stop = (context.cast(builder, args[k], signature.args[k], types.intp) for k in (rows_at + 1, rows_at + 2))
        scaled = context.cast(builder, args[scaled_at], signature.args[scaled_at], types.boolean)

        def loop(with_scale):
            with cgutils.for_range_slice(builder, start, stop, ir.Constant(_I64, 1)) as (q, _):
                body(*_listed_row(builder, rows, q, scale if with_scale else None))

        with builder.if_else(scaled) as (then, otherwise):
            with then:
                loop(True)
            with otherwise:
                loop(False)

    def _gather_codegen(context, builder, signature, args):
        y_type, x_type = signature.args[0], signature.args[2]
        target = _row(context, builder, y_type, args[0], context.cast(builder, args[1], signature.args[1], types.intp))
        x = context.make_array(x_type)(context, builder, args[2])
        columns = cgutils.unpack_tuple(builder, x.shape, 2)[1]
        lanes = context.cast(builder, args[8], signature.args[8], types.intp)
        partial = [cgutils.alloca_once(builder, _VECTOR) for _ in range(BLOCK)]  # promoted to registers

        def emit(offset, count):
            targets = _vectors(builder, builder.gep(target, [offset]), count)
            for k in range(count):
                builder.store(builder.load(targets[k], align=4), partial[k])

            def add(r, s):
                _add_row(builder, x, columns, offset, count, r, s, partial)

            _rows_loop(context, builder, signature, args, 3, 6, 7, add)
            for k in range(count):
                builder.store(builder.load(partial[k]), targets[k], align=4)

        _blocks(builder, lanes, emit)
        return context.get_dummy_value()

    def _gather2_codegen(context, builder, signature, args):
        """gather for two targets y[i0], y[i1] with their own row ranges and scales, interleaved: the
        rows they have in common in one loop (twice the independent additions), then the rest of each."""
        sig = signature.args
        cast = lambda k, to: context.cast(builder, args[k], sig[k], to)  # noqa: E731
        targets0 = _row(context, builder, sig[0], args[0], cast(1, types.intp))
        targets1 = _row(context, builder, sig[0], args[0], cast(2, types.intp))
        x = context.make_array(sig[3])(context, builder, args[3])
        columns = cgutils.unpack_tuple(builder, x.shape, 2)[1]
        rows = context.make_array(sig[4])(context, builder, args[4])
        start0, stop0, start1, stop1 = (cast(k, types.intp) for k in (5, 6, 7, 8))
        scales = [context.make_array(sig[k])(context, builder, args[k]) for k in (9, 10)]
        scaled = cast(11, types.boolean)
        lanes = cast(12, types.intp)
        length0, length1 = builder.sub(stop0, start0), builder.sub(stop1, start1)
        common = builder.select(builder.icmp_signed("<", length0, length1), length0, length1)
        partial = [[cgutils.alloca_once(builder, _VECTOR) for _ in range(BLOCK)] for _ in range(2)]

        def emit(offset, count):
            pointers = [_vectors(builder, builder.gep(target, [offset]), count) for target in (targets0, targets1)]
            for side in range(2):
                for k in range(count):
                    builder.store(builder.load(pointers[side][k], align=4), partial[side][k])

            def add(side, q, with_scale):
                r, s = _listed_row(builder, rows, q, scales[side] if with_scale else None)
                _add_row(builder, x, columns, offset, count, r, s, partial[side])

            def loops(with_scale):
                with cgutils.for_range(builder, common) as loop:
                    add(0, builder.add(start0, loop.index), with_scale)
                    add(1, builder.add(start1, loop.index), with_scale)
                for side, (start, stop) in enumerate(((start0, stop0), (start1, stop1))):
                    with cgutils.for_range_slice(builder, builder.add(start, common), stop, ir.Constant(_I64, 1)) as (q, _):
                        add(side, q, with_scale)

            with builder.if_else(scaled) as (then, otherwise):
                with then:
                    loops(True)
                with otherwise:
                    loops(False)
            for side in range(2):
                for k in range(count):
                    builder.store(builder.load(partial[side][k]), pointers[side][k], align=4)

        _blocks(builder, lanes, emit)
        return context.get_dummy_value()

    def _scatter_codegen(context, builder, signature, args):
        y_type, x_type = signature.args[0], signature.args[6]
        y = context.make_array(y_type)(context, builder, args[0])
        columns = cgutils.unpack_tuple(builder, y.shape, 2)[1]
        source = _row(context, builder, x_type, args[6], context.cast(builder, args[7], signature.args[7], types.intp))
        lanes = context.cast(builder, args[8], signature.args[8], types.intp)

        def emit(offset, count):
            values = [builder.load(pointer, align=4) for pointer in _vectors(builder, builder.gep(source, [offset]), count)]

            def add(r, s):
                targets = _vectors(builder, builder.gep(y.data, [builder.add(builder.mul(r, columns), offset)]), count)
                for k in range(count):
                    value = builder.fmul(s, values[k]) if s is not None else values[k]
                    builder.store(builder.fadd(builder.load(targets[k], align=4), value), targets[k], align=4)

            _rows_loop(context, builder, signature, args, 1, 4, 5, add)

        _blocks(builder, lanes, emit)
        return context.get_dummy_value()

    def _check(y, x, rows, scale):
        for array in (y, x):
            if not (isinstance(array, types.Array) and array.ndim == 2 and array.dtype == types.float32
                    and array.layout == "C"):
                raise TypeError(f"simd: expected a C-contiguous 2-d float32 array, got {array}")
        if not (isinstance(rows, types.Array) and rows.ndim == 1 and isinstance(rows.dtype, types.Integer)
                and rows.layout == "C"):
            raise TypeError(f"simd: expected a C-contiguous 1-d integer array of rows, got {rows}")
        if not (isinstance(scale, types.Array) and scale.ndim == 1 and scale.dtype == types.float32
                and scale.layout == "C"):
            raise TypeError(f"simd: expected a C-contiguous 1-d float32 array of scales, got {scale}")

    @intrinsic
    def gather(typingctx, y, i, x, rows, start, stop, scale, scaled, lanes):
        _check(y, x, rows, scale)
        return types.void(y, i, x, rows, start, stop, scale, scaled, lanes), _gather_codegen

    @intrinsic
    def gather2(typingctx, y, i0, i1, x, rows, start0, stop0, start1, stop1, scale0, scale1, scaled, lanes):
        _check(y, x, rows, scale0)
        _check(y, x, rows, scale1)
        return (types.void(y, i0, i1, x, rows, start0, stop0, start1, stop1, scale0, scale1, scaled, lanes),
                _gather2_codegen)

    @intrinsic
    def scatter(typingctx, y, rows, start, stop, scale, scaled, x, i, lanes):
        _check(y, x, rows, scale)
        return types.void(y, rows, start, stop, scale, scaled, x, i, lanes), _scatter_codegen

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

"""Eight-lane vector adds of weight rows, for the CPU kernels (numba intrinsics).

The kernels' innermost work is adding rows of N floats (N = 32 in the workshop): a weight row per
input that spiked. numba's loop vectoriser compiles such a loop for 64 lanes at a time and runs
rows of 32 through its scalar remainder, so these helpers spell the vector operations out. Each
lane is an ordinary float32 multiply and add (IEEE, no fused multiply-add), in the order written:
the results are bit for bit those of the scalar loop, on every CPU (LLVM maps the 8 lanes onto
whatever vector registers the CPU has, or onto scalar code).

- ``add4(y, i, x, r0, r1, r2, r3, s0, s1, s2, s3, n)``:
  ``y[i, n:n+8] = (((y[i, n:n+8] + s0 x[r0, n:n+8]) + s1 x[r1, n:n+8]) + s2 x[r2, n:n+8]) + s3 x[r3, n:n+8]``
- ``add1(y, i, x, r, s, n)``: ``y[i, n:n+8] += s x[r, n:n+8]``

``y`` and ``x`` are C-contiguous 2-d float32 arrays; the caller guarantees n + 8 <= the row length
and valid row indices (nothing is checked).
"""

from .jit import numba

WIDTH = 8

if numba is not None:  # without numba the kernels never run, and nothing here is needed
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    _VECTOR = ir.VectorType(ir.FloatType(), WIDTH)

    def _lanes(context, builder, arraytype, array, row, column):
        """Pointer to the 8 floats array[row, column:column + 8]."""
        ary = context.make_array(arraytype)(context, builder, array)
        shape = cgutils.unpack_tuple(builder, ary.shape, 2)
        strides = cgutils.unpack_tuple(builder, ary.strides, 2)
        pointer = cgutils.get_item_pointer2(context, builder, ary.data, shape, strides, arraytype.layout, [row, column],
                                            wraparound=False)
        return builder.bitcast(pointer, _VECTOR.as_pointer())

    def _splat(builder, value):
        vector = ir.Constant(_VECTOR, ir.Undefined)
        for lane in range(WIDTH):
            vector = builder.insert_element(vector, value, ir.Constant(ir.IntType(32), lane))
        return vector

    def _add_rows_codegen(rows: int):
        def codegen(context, builder, signature, args):
            y_type, i_type, x_type = signature.args[:3]
            y, i, x = args[:3]
            row_args = args[3:3 + rows]
            scale_args = args[3 + rows:3 + 2 * rows]
            n = context.cast(builder, args[-1], signature.args[-1], types.intp)
            target = _lanes(context, builder, y_type, y, context.cast(builder, i, i_type, types.intp), n)
            total = builder.load(target, align=4)
            for k in range(rows):
                row = context.cast(builder, row_args[k], signature.args[3 + k], types.intp)
                scale = context.cast(builder, scale_args[k], signature.args[3 + rows + k], types.float32)
                term = builder.fmul(_splat(builder, scale), builder.load(_lanes(context, builder, x_type, x, row, n), align=4))
                total = builder.fadd(total, term)
            builder.store(total, target, align=4)
            return context.get_dummy_value()

        return codegen

    def _check(y, x):
        for array in (y, x):
            if not (isinstance(array, types.Array) and array.ndim == 2 and array.dtype == types.float32
                    and array.layout == "C"):
                raise TypeError(f"simd: expected a C-contiguous 2-d float32 array, got {array}")

    @intrinsic
    def add4(typingctx, y, i, x, r0, r1, r2, r3, s0, s1, s2, s3, n):
        _check(y, x)
        return types.void(y, i, x, r0, r1, r2, r3, s0, s1, s2, s3, n), _add_rows_codegen(4)

    @intrinsic
    def add1(typingctx, y, i, x, r, s, n):
        _check(y, x)
        return types.void(y, i, x, r, s, n), _add_rows_codegen(1)

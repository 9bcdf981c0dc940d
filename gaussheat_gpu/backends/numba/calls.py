"""Calling a compiled function by its address, so that a caller does not compile it again.

Numba copies the code of every function a compiled function calls into the caller's own module
and optimises it there once more. A parallel loop copies it three times (its outlined body, the
body's wrapper and the function holding the loop). The band renderer's code would be compiled
four times for one parallel call; called by address, it is compiled once (:func:`address` looks
it up), and the parallel loop that calls it is small.

:func:`call_address` calls the C entry point Numba gives each ``by_address=True`` function (its
``cfunc`` wrapper: arguments by value, in Numba's data model, and the return value). The caller
must pass exactly the argument types the address was compiled for: :func:`address` compiles (or
loads from the cache) the overload for the very arguments it is given and remembers it under
their Numba dispatch fingerprint (~0.2 us a look-up). An exception raised behind an address is
printed, not raised (as in a parallel loop); the functions called so do not raise.

A parallel loop hands every variable its body uses to the function Numba outlines it into, one by
one (and cannot hand it a tuple holding arrays): with the band renderer's fourteen arguments, that
hand-over was a third of the loop's compile time. So the arguments every task shares are stored
once, before the loop (:func:`pack`: one pointer), and :func:`call_address` puts each task's own
leading arguments before them.

With ``NUMBA_DISABLE_JIT=1``, :func:`address` returns the Python function itself, :func:`pack` the
tuple and :func:`call_address` calls the function, so that the loops that call by address run as
plain Python too.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

try:
    from numba._dispatcher import compute_fingerprint as _fingerprint
except ImportError:  # not in this Numba: its public (slower) typeof
    _fingerprint = numba.typeof

_addresses = {}


def address(dispatcher, args, varying=None):
    """The address of ``dispatcher``'s C entry point compiled for ``args`` (compiled, or loaded from
    the cache, on first use); the Python function itself when JIT compilation is disabled.

    Parameters
    ----------
    dispatcher : numba dispatcher
        A function with a C entry point (``jit(by_address=True)`` in this backend).
    args : tuple
        Arguments of the calls that will be made by address: arrays, integers, booleans, ``None``.
    varying : tuple, optional
        The arguments whose Numba types may differ from one call to another (default: all of them):
        a caller whose other arguments always have the same types saves their look-up.

    Returns
    -------
    int or callable

    Raises
    ------
    TypeError
        When ``dispatcher`` was compiled without a C entry point.

    Examples
    --------
    >>> import numba, numpy as np
    >>> first = numba.njit(lambda values: np.int64(values[0]))
    >>> found = address(first, (np.arange(3),))
    >>> found == address(first, (np.arange(5),))  # the same types: the same code
    True
    """
    if config.DISABLE_JIT:
        return dispatcher
    key = (dispatcher, _fingerprint(args if varying is None else varying))  # one C call for the whole tuple
    found = _addresses.get(key)
    if found is None:
        signature = tuple(numba.typeof(arg) for arg in args)
        result = dispatcher.overloads.get(signature)
        if result is None:
            dispatcher.compile(signature)
            result = dispatcher.overloads[signature]
        found = result.library.get_pointer_to_function(result.fndesc.llvm_cfunc_wrapper_name)
        if not found:
            raise TypeError(f"{dispatcher.py_func.__qualname__} has no C entry point to call by address: "
                            "compile it with by_address=True")
        _addresses[key] = found
    return found


def pack_python(values):
    return values


def call_address_python(address, args, shared):
    return address(*args, *shared)


def _uncounted(context, builder, typ, value):
    """``value`` with every array in it (at any depth of tuples) stripped of its reference count."""
    if isinstance(typ, types.Array):
        array = context.make_array(typ)(context, builder, value)
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        return array._getvalue()
    if isinstance(typ, types.BaseTuple):
        for i, item in enumerate(typ):
            value = builder.insert_value(value, _uncounted(context, builder, item, builder.extract_value(value, i)), i)
    return value


@intrinsic
def _pack(typingctx, values):
    if not isinstance(values, types.BaseTuple):
        return None

    def codegen(context, builder, signature, llargs):
        # Without their reference counts (as a parallel loop's body gets its arrays): a view the
        # callee takes then costs no atomic update of a count every thread shares (W1's bands
        # took 2-4x as long with them).
        value = _uncounted(context, builder, values, llargs[0])
        model = context.data_model_manager[values]  # stored as data: a bool is a byte in memory
        slot = cgutils.alloca_once(builder, model.get_data_type())  # in the entry block
        builder.store(model.as_data(builder, value), slot)
        return slot

    return types.CPointer(values)(values), codegen


@intrinsic
def _call_address(typingctx, address, args, shared):
    if not (isinstance(args, types.BaseTuple) and isinstance(shared, types.CPointer)
            and isinstance(shared.dtype, types.BaseTuple)):
        return None
    result = types.int64

    def codegen(context, builder, signature, llargs):
        pointer, own, stored = llargs
        stored = context.data_model_manager[shared.dtype].from_data(builder, builder.load(stored))
        values = [builder.extract_value(own, i) for i in range(len(args))]
        values += [builder.extract_value(stored, i) for i in range(len(shared.dtype))]
        arg_types = (*args, *shared.dtype)
        function_type = ir.FunctionType(context.get_value_type(result), [context.get_value_type(t) for t in arg_types])
        function = builder.inttoptr(pointer, function_type.as_pointer())
        return builder.call(function, values)

    return result(address, args, shared), codegen


# ``pack(values)``: a pointer to the tuple ``values``, stored on the stack of the compiled function
# that calls it and valid until that function returns; the arrays in it carry no reference count
# (the caller's own arguments keep them alive).
pack = pack_python if config.DISABLE_JIT else _pack
# ``call_address(address, args, shared)``: the function at ``address`` (from :func:`address`) applied
# to the tuple ``args`` followed by the tuple ``shared`` points to (from :func:`pack`); it must
# return an int64.
call_address = call_address_python if config.DISABLE_JIT else _call_address

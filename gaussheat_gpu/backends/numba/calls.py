"""Running a compiled function's tasks on Numba's threads, called by its address.

Numba copies the code of every function a compiled function calls into the caller's own module
and optimises it there once more; a parallel loop (``prange``) copies it three times more (its
outlined body, the body's wrapper and the function holding the loop), and its parfor passes and
outlining cost a compile of their own (0.3 s of the seed's first call, 2-core EPYC VM). The band
renderer, the parallel planner's chunk, the dense product's passes and the k-NN search are
therefore ``by_address=True`` functions taking a task index first, compiled once, and
:func:`parallel_calls` runs their tasks on Numba's threads as a parallel loop would: the same
scheduler, thread count and chunk size, the GIL released, but no code of the callee and no loop
body to compile.

:func:`address` finds the C entry point Numba gives each ``by_address=True`` function (its
``cfunc`` wrapper: arguments by value, in Numba's data model, and the return value), compiled (or
loaded from the cache) for the very arguments it is given and remembered under their Numba
dispatch fingerprint (~0.2 us a look-up). Every task gets the same arguments after its index,
stored once on the caller's stack with their arrays' reference counts stripped, as a parallel
loop's body gets them: a view the callee takes then costs no atomic update of a count every
thread shares (the arrays stay alive: they are arguments of the call that runs the tasks). The
caller must pass exactly the argument types the address was compiled for. An exception raised
behind an address is printed, not raised (as in a parallel loop); the functions called so do not
raise.

With ``NUMBA_DISABLE_JIT=1``, :func:`address` returns the Python function itself and
:func:`parallel_calls` calls it for each task in turn, so that the functions called by address run
as plain Python too.
"""

from __future__ import annotations

import hashlib

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

from .cache import jit

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
        start_threads()  # before the caller's code, which runs the tasks, is loaded or compiled
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


def parallel_calls_python(address, n_tasks, shared):
    for task in range(n_tasks):
        address(task, *shared)
    return 0


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


def start_threads():
    """Start Numba's threads and register their runtime's entry points (once a process; later calls
    return at once).

    Code that calls :func:`parallel_calls` needs those entry points when it is linked, compiled or
    loaded from the cache: :func:`address` calls this before the function that runs the tasks is
    first called.
    """
    from numba.np.ufunc.parallel import _launch_threads

    _launch_threads()


def _task_kernel(context, module, shared_type):
    """The function Numba's threads run, defined once per module and type of shared arguments.

    Numba's parallel runtime calls it as it calls a parallel loop's body: ``(args, dims, steps,
    data)``, ``args[0]`` pointing to the thread's first row of the schedule (``[first task, last
    task]``, two intp), ``dims[0]`` counting its rows; ``data`` points to ``{address, pointer to
    the shared arguments}``. Each task is one call of the function at ``address``.
    """
    data_type = context.data_model_manager[shared_type].get_data_type()
    digest = hashlib.sha1(f"{shared_type}|{data_type}".encode()).hexdigest()[:16]
    name = f"gaussheat_tasks_{digest}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    i64, i32, intp = ir.IntType(64), ir.IntType(32), context.get_value_type(types.intp)
    byte_pointer = ir.IntType(8).as_pointer()
    kernel = ir.Function(module, ir.FunctionType(ir.VoidType(), [byte_pointer.as_pointer(), intp.as_pointer(),
                                                                 intp.as_pointer(), byte_pointer]), name=name)
    kernel.linkage = "internal"
    args, dims, _, data = kernel.args
    builder = ir.IRBuilder(kernel.append_basic_block("entry"))
    model = context.data_model_manager[shared_type]
    block = builder.bitcast(data, ir.LiteralStructType([i64, model.get_data_type().as_pointer()]).as_pointer())
    address = builder.load(builder.gep(block, [i32(0), i32(0)]))
    stored = model.from_data(builder, builder.load(builder.load(builder.gep(block, [i32(0), i32(1)]))))
    values = [builder.extract_value(stored, i) for i in range(len(shared_type))]
    function_type = ir.FunctionType(i64, [i64] + [context.get_value_type(t) for t in shared_type])
    function = builder.inttoptr(address, function_type.as_pointer())
    schedule = builder.bitcast(builder.load(args), intp.as_pointer())
    with cgutils.for_range(builder, builder.load(dims)) as row:
        bounds = builder.gep(schedule, [builder.mul(row.index, intp(2))])
        first, last = builder.load(bounds), builder.load(builder.gep(bounds, [intp(1)]))
        with cgutils.for_range_slice(builder, first, builder.add(last, intp(1)), intp(1)) as (task, _):
            builder.call(function, [builder.sext(task, i64) if intp.width < 64 else task] + values)
    builder.ret_void()
    return kernel


def _declare(module, name, result, *args):
    return cgutils.get_or_insert_function(module, ir.FunctionType(result, list(args)), name)


@intrinsic
def _parallel_calls(typingctx, address, n_tasks, shared):
    if not (isinstance(address, types.Integer) and isinstance(n_tasks, types.Integer)
            and isinstance(shared, types.BaseTuple)):
        return None

    def codegen(context, builder, signature, llargs):
        start_threads()  # the runtime's entry points, declared below, must exist when this is linked
        module = builder.module
        i64, i32, void = ir.IntType(64), ir.IntType(32), ir.VoidType()
        intp = context.get_value_type(types.intp)
        intp_pointer, byte_pointer = intp.as_pointer(), ir.IntType(8).as_pointer()
        kernel = _task_kernel(context, module, shared)
        pointer, count, values = llargs
        count = context.cast(builder, count, n_tasks, types.intp)
        # Stored as data (a bool is a byte in memory), without the arrays' reference counts: with
        # them, W1's warm render took 2.7x as long (bench/ab.py W1 against a checkout without this).
        model = context.data_model_manager[shared]
        stored = cgutils.alloca_once(builder, model.get_data_type())
        builder.store(model.as_data(builder, _uncounted(context, builder, shared, values)), stored)
        block = cgutils.alloca_once(builder, ir.LiteralStructType([i64, stored.type]))
        builder.store(context.cast(builder, pointer, address, types.int64), builder.gep(block, [i32(0), i32(0)]))
        builder.store(stored, builder.gep(block, [i32(0), i32(1)]))
        with builder.if_then(builder.icmp_signed(">", count, intp(0))):
            # As Numba's own parallel loops do: a schedule of the tasks for the current thread count
            # and chunk size (the chunk size reset inside, for nested loops), the GIL released.
            starts = cgutils.alloca_once_value(builder, intp(0))
            stops = cgutils.alloca_once_value(builder, builder.sub(count, intp(1)))
            threads = builder.call(_declare(module, "get_num_threads", intp), [])
            chunk_size = builder.call(_declare(module, "get_parallel_chunksize", intp), [])
            rows = builder.call(_declare(module, "get_sched_size", intp, intp, intp, intp_pointer, intp_pointer),
                                [threads, intp(1), starts, stops])
            builder.call(_declare(module, "set_parallel_chunksize", void, intp), [intp(0)])
            schedule = builder.call(_declare(module, "allocate_sched", intp_pointer, intp),
                                    [builder.mul(rows, intp(2))])
            builder.call(_declare(module, "do_scheduling_signed", intp_pointer, intp, intp_pointer, intp_pointer, intp,
                                  intp_pointer, intp), [intp(1), starts, stops, rows, schedule, intp(0)])
            arrays = cgutils.alloca_once_value(builder, builder.bitcast(schedule, byte_pointer))
            dims = cgutils.alloca_once(builder, intp, size=2)
            builder.store(rows, dims)
            builder.store(intp(2), builder.gep(dims, [intp(1)]))
            # bytes from one row of the schedule to the next
            steps = cgutils.alloca_once_value(builder, intp(2 * context.get_abi_sizeof(intp)))
            pyapi = context.get_python_api(builder)
            gil = pyapi.gil_ensure()
            thread_state = pyapi.save_thread()
            parallel_for = _declare(module, "numba_parallel_for", void, *[byte_pointer] * 5, intp, intp, intp)
            builder.call(parallel_for, [builder.bitcast(kernel, byte_pointer), builder.bitcast(arrays, byte_pointer),
                                        builder.bitcast(dims, byte_pointer), builder.bitcast(steps, byte_pointer),
                                        builder.bitcast(block, byte_pointer), intp(1), intp(1), threads])
            pyapi.restore_thread(thread_state)
            pyapi.gil_release(gil)
            builder.call(_declare(module, "set_parallel_chunksize", void, intp), [chunk_size])
            builder.call(_declare(module, "deallocate_sched", void, intp_pointer), [schedule])
        return context.get_constant(types.int64, 0)

    return types.int64(address, n_tasks, shared), codegen


# ``parallel_calls(address, n_tasks, shared)``: the function at ``address`` (from :func:`address`)
# applied to ``(task, *shared)`` for each task in ``range(n_tasks)``, spread over Numba's threads
# as a parallel loop would be; ``shared`` is a tuple, the function returns an int64. Returns 0.
parallel_calls = parallel_calls_python if config.DISABLE_JIT else _parallel_calls


@jit(entry=True)
def run_tasks(address, n_tasks, shared):
    """:func:`parallel_calls` from Python: the function at ``address`` (:func:`address`) applied to
    ``(task, *shared)`` for each task in ``range(n_tasks)``, on Numba's threads. Returns 0.

    One entry point for every caller whose tasks need nothing compiled around them; it is compiled
    once for each type of ``shared`` (the scheduling code only, not the tasks').
    """
    return parallel_calls(address, n_tasks, shared)


def run(function, n_tasks, shared):
    """``function(task, *shared)`` for each task in ``range(n_tasks)`` on Numba's threads: the
    ``by_address=True`` function's :func:`address` for ``(0, *shared)`` (compiled, or loaded from the
    cache, on first use), run by :func:`run_tasks`. Returns 0."""
    return run_tasks(address(function, (0, *shared)), n_tasks, shared)

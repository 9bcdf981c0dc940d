"""Where the Numba backend keeps its compiled code between processes, and whether it is there.

Every compiled function of the backend is made by :func:`jit`; those called from Python or by
address are cached on disk, found in the first writable one of:

1. ``$NUMBA_CACHE_DIR``, when set;
2. the ``__pycache__`` folder beside the package's sources (a ``pip install`` into a virtual
   environment, a source checkout);
3. the user's cache folder, ``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba`` (a package installed
   read-only, such as a system site-packages owned by root);
4. ``<temporary folder>/gaussheat_gpu-numba-<user>`` (a read-only home too, as in many
   containers; ``tempfile.gettempdir()`` honours ``$TMPDIR``).

The first three are Numba's own choices, in Numba's order; the fourth is this backend's. Where none
is writable, the functions are compiled without a cache (every new process compiles again) and a
:class:`CacheWarning` says so and what to set. Numba checks each cached entry against the source
file's contents and the CPU it was compiled for, so a stale or foreign entry is compiled again,
never run; here an entry is also compiled again when any source file of the backend changed (a
function's compiled code holds the code of the functions it calls, from other files too).
"""

from __future__ import annotations

import functools
import getpass
import glob
import hashlib
import os
import tempfile
import warnings

import numba
from numba.core import caching, config
from numba.core.runtime import rtsys

from . import collector, linking  # noqa: F401  (collector: its listener registered on import)

_state = {"location": None, "warned": False}


class CacheWarning(UserWarning):
    """Compiled code cannot be cached on disk: every new process compiles again."""


def jit(function=None, *, entry=False, by_address=False, **options):
    """``numba.njit(**options)`` for the backend; usable as ``@jit`` or ``@jit(forceinline=True)``.

    Only an ``entry=True`` function can be called from Python, and only a ``by_address=True`` one
    by its address (:mod:`.calls`). Those hold the code that runs: their compiled code is cached in
    the first writable location of the module docstring's list (``cache=True`` with a fallback).
    The others, helpers called from compiled code only, get no Python or C wrapper (two more small
    modules to compile for each) and are kept as LLVM IR that their callers link in, optimise and
    emit (:mod:`.linking`): nothing of theirs is cached, as a caller loaded from the cache holds
    their code. Their Python bodies stay callable as ``.py_func``. ``forceinline=True`` inlines a
    function wherever it is called (in LLVM, which costs no compile time to speak of); others are
    called, unless LLVM chooses to inline them.
    """
    if function is None:
        return lambda function: jit(function, entry=entry, by_address=by_address, **options)
    options = dict(options, no_cpython_wrapper=not entry, no_cfunc_wrapper=not by_address)
    # Explicit: otherwise a function first compiled as the callee of a forceinline one inherits it.
    options.setdefault("forceinline", False)
    helper = not entry and not by_address
    if helper:
        options.update(linking.pipeline_options())
    dispatcher = numba.njit(cache=False, **options)(function)
    if helper or not hasattr(dispatcher, "enable_caching"):  # NUMBA_DISABLE_JIT=1: the Python function
        return dispatcher
    _enable_caching(dispatcher)
    return dispatcher


def fallback_dir() -> str:
    """The backend's own last cache location: ``<temporary folder>/gaussheat_gpu-numba-<user>``."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name (some containers): the numeric id
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"gaussheat_gpu-numba-{user}")


class _LoadingCache(caching.FunctionCache):
    """Numba's function cache, loading without first loading Numba's registries of implementations.

    Numba refreshes its target context before every load: in a new process that imports and
    registers every implementation it has (NumPy's array functions, linear algebra, which imports
    SciPy's, typed containers...), 0.14 s of the seed's 0.33 s first call with a warm cache (2-core
    EPYC VM). Code loaded from the cache needs only Numba's runtime (NRT), initialised here; a
    function that is not in the cache is compiled, and compiling refreshes the context itself.
    """

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def _enable_caching(dispatcher):
    try:
        dispatcher._cache = _LoadingCache(dispatcher.py_func)  # Numba's locations (1-3)
    except RuntimeError:  # "no locator available": none of them is writable
        saved = config.CACHE_DIR
        config.CACHE_DIR = fallback_dir()
        try:
            dispatcher._cache = _LoadingCache(dispatcher.py_func)
        except RuntimeError:
            _warn_once()
            return
        finally:
            config.CACHE_DIR = saved
    _state["location"] = dispatcher._cache.cache_path
    # Numba stamps a cached function with its own source file only; a caller's entry holds the
    # code of callees from other files too, so every entry is stamped with all of them.
    cache_file = getattr(dispatcher._cache, "_cache_file", None)
    if hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = _sources_stamp()


@functools.cache
def _sources_stamp():
    """A hash of every source file the backend's compiled code comes from."""
    here = os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(here, "*.py"))) + [os.path.join(os.path.dirname(os.path.dirname(here)),
                                                                           "planning.py")]
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _warn_once():
    if _state["warned"]:
        return
    _state["warned"] = True
    warnings.warn(
        "gaussheat_gpu's Numba backend cannot cache its compiled code: none of $NUMBA_CACHE_DIR, the package's "
        f"__pycache__, the user cache folder or {fallback_dir()} is writable, so every new process compiles again "
        "(seconds per path). Set NUMBA_CACHE_DIR to a writable folder.", CacheWarning, stacklevel=4)


def location() -> str | None:
    """The folder the backend's compiled code is cached in (of its last function), or ``None``."""
    return _state["location"]


def valid_entries(dispatcher) -> list:
    """Index keys ``(signature, target, hashes)`` of ``dispatcher``'s cached code that this process
    would load instead of compiling: compiled from these sources for this CPU (Numba's own test)."""
    cache = getattr(dispatcher, "_cache", None)
    if not isinstance(cache, caching.FunctionCache):
        return []
    try:
        index = cache._cache_file._load_index()  # {} when a source file changed
        probe = cache._index_key((), dispatcher.targetctx.codegen())
    except Exception:  # an unreadable index: nothing this process would load
        return []
    return [key for key in index if key[1:] == probe[1:]]

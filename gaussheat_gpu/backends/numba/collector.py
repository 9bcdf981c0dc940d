"""Python's garbage collector while Numba compiles the backend's functions.

A compile allocates millions of short-lived objects (Numba's IR and types, LLVM IR as text), enough
to set off several full collections during a cold first call, and a full collection walks every
object the process holds, most of them the ~170k that importing NumPy, SciPy and Numba left. So,
while one of the backend's functions compiles (with the functions it calls), the objects that
existed before it are frozen out of the collector's reach (:func:`gc.freeze`): the compile's
collections walk only the compile's own objects and free its garbage as before, and when the
outermost compile ends the older objects are unfrozen into the oldest generation, the one a full
collection walks. ``python bench/compile_profile.py W1`` reports the collections during the seed's
cold render: 1 full collection taking 0.012-0.017 s, against 3 taking 0.21-0.23 s with
``--no-freeze`` (2-core EPYC VM). Some of the compile's garbage is left for a later collection,
which then takes longer, but the process walks its older objects far fewer times in all.

Nothing is frozen where the collector is disabled, or where the process has frozen objects itself
(a pre-fork server's :func:`gc.freeze`, which unfreezing would undo); a function loaded from the
cache compiles nothing and changes nothing. The one trace left: objects younger than the oldest
generation when the compile began are in it afterwards, as if a full collection had promoted them.
"""

from __future__ import annotations

import gc

from numba.core import event

PACKAGE = __name__.split(".", 1)[0]


class FreezeOlderObjects(event.Listener):
    """A ``numba:compile`` listener: the objects older than an outermost compile of one of this
    package's functions frozen until it ends (Numba compiles under a global lock, one at a time)."""

    def __init__(self):
        self.depth = 0  # compiles in progress, the outermost first
        self.frozen = False

    def on_start(self, ev):
        self.depth += 1
        if self.depth == 1 and _ours(ev) and gc.isenabled() and gc.get_freeze_count() == 0:
            gc.freeze()
            self.frozen = True

    def on_end(self, ev):  # also when the compile raised
        self.depth -= 1
        if self.depth == 0 and self.frozen:
            self.frozen = False
            gc.unfreeze()


def _ours(ev) -> bool:
    dispatcher = (ev.data or {}).get("dispatcher")
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", None) or ""
    return module.split(".", 1)[0] == PACKAGE


LISTENER = FreezeOlderObjects()
event.register("numba:compile", LISTENER)

"""Helpers compiled to LLVM IR only: optimised and turned into machine code inside their callers.

Numba gives every compiled function a library of its own, optimises it (LLVM's -O3 module passes)
and emits its machine code; a caller then links a copy of each callee's optimised module into its
own, optimises the whole again and emits it again. The machine code of a helper that only compiled
code calls (every function of the backend that is neither an entry point from Python nor called by
address) is never run, and its module-level optimisation is repeated in each caller anyway: about
0.45 s of the seed's 3.9 s of compiling on a 2-core EPYC VM, besides caching each helper on disk.

:class:`HelperCompiler` compiles such a helper as Numba always does up to its LLVM IR (typing,
lowering, the per-function passes), then keeps it as an :class:`IRLibrary`: linked into callers
like any library, but neither optimised as a module nor emitted on its own. The code that runs is
that of the entry point or addressed function that holds it, optimised once there, as before.

This reaches into Numba's code-generation classes (``JITCodeLibrary``); :func:`supported` checks
that the Numba in use has the pieces it overrides, and :func:`pipeline_options` gives ``{}`` (the
usual compilation) where it does not.
"""

from __future__ import annotations

import functools

import llvmlite.binding as llvm
from llvmlite import ir as llvm_ir
from numba.core import cgutils, codegen
from numba.core.compiler import Compiler
from numba.core.compiler_machinery import AnalysisPass, register_pass

_ENV_PREFIX = "_ZN08NumbaEnv"  # Numba's name for a function's environment pointer (a global)


class IRLibrary(codegen.JITCodeLibrary):
    """A library that callers link in but that is never optimised as a module nor emitted itself.

    Its module only keeps a global for each environment pointer Numba sets after compiling it
    (``BaseContext.get_executable``), so that the engine has somewhere to write it.
    """

    def _optimize_final_module(self):
        pass  # each caller optimises the linked copy with the rest of its module

    def _finalize_final_module(self):
        self._finalize_dynamic_globals()
        environments = [gv.name for gv in self._final_module.global_variables if gv.name.startswith(_ENV_PREFIX)]
        if environments:
            module = self._codegen._create_empty_module(self.name + ".environments")
            for name in environments:
                gv = llvm_ir.GlobalVariable(module, cgutils.voidptr_t, name=name)
                gv.linkage = "common"
                gv.initializer = llvm_ir.Constant(cgutils.voidptr_t, None)
            self._codegen._engine.add_module(llvm.parse_assembly(str(module)))
            self._codegen._engine.finalize_object()
        self._finalized = True

    def get_pointer_to_function(self, name):
        self._ensure_finalized()
        return 0  # no machine code of its own


@register_pass(mutates_CFG=False, analysis_only=True)
class UseIRLibrary(AnalysisPass):
    """Gives the function being compiled an :class:`IRLibrary` before Numba's lowering makes it a
    library of the usual kind."""

    _name = "gaussheat_use_ir_library"

    def __init__(self):
        AnalysisPass.__init__(self)

    def run_pass(self, state):
        if state.library is None:
            state.library = IRLibrary(state.targetctx.codegen(), state.func_id.func_qualname)
        return False


class HelperCompiler(Compiler):
    """Numba's compiler with :class:`UseIRLibrary` first in each pipeline."""

    def define_pipelines(self):
        pipelines = super().define_pipelines()
        for pipeline in pipelines:
            pipeline.passes.insert(0, (UseIRLibrary, "keep the helper as LLVM IR for its callers"))
            pipeline.finalize()
        return pipelines


@functools.cache
def supported() -> bool:
    """Whether this Numba has the code-generation pieces :class:`IRLibrary` overrides."""
    library = codegen.JITCodeLibrary
    needed = ("_optimize_final_module", "_finalize_final_module", "_finalize_dynamic_globals",
              "get_pointer_to_function", "_ensure_finalized")
    return (all(hasattr(library, name) for name in needed) and hasattr(codegen.CPUCodegen, "_create_empty_module")
            and hasattr(Compiler, "define_pipelines"))


def pipeline_options() -> dict:
    """``numba.njit`` options that compile a helper as LLVM IR only, or ``{}`` where unsupported."""
    return {"pipeline_class": HelperCompiler} if supported() else {}

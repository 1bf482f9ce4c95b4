"""Builds otpvm's compiled core: the C primitives of csrc/ plus the Cython VM."""

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

CSRC = ["csrc/ovm_mailbox.c", "csrc/ovm_timer.c", "csrc/ovm_sched.c", "csrc/ovm_poll.c"]
WARNINGS = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-unused-function"]
# Cython's generated code trips a few warnings we cannot fix at the source.
CYTHON_NOISE = ["-Wno-missing-field-initializers", "-Wno-unreachable-code"]

compile_args = ["-std=c11", "-O2", *WARNINGS, *CYTHON_NOISE]
link_args = ["-pthread"]
if os.environ.get("OTPVM_DEBUG"):
    compile_args += ["-O0", "-g", "-UNDEBUG"]
else:
    # Python's own CFLAGS carry -g: without -g0 and a stripping link, debug
    # info is 85% of the release _vm.so (3.5 MB, of which 0.5 MB is code).
    # --strip-debug keeps the symbol table, so perf and gdb still name functions.
    compile_args += ["-g0"]
    link_args += ["-Wl,--strip-debug"]

vm = Extension(
    "otpvm._vm",
    sources=["otpvm/_core/_vm.pyx", *CSRC],
    include_dirs=["csrc", "otpvm/_core"],
    extra_compile_args=compile_args if sys.platform != "win32" else [],
    extra_link_args=link_args if sys.platform != "win32" else [],
    define_macros=[("_GNU_SOURCE", "1")],
)

setup(
    ext_modules=cythonize(
        [vm],
        compiler_directives={"language_level": "3", "freethreading_compatible": True},
        include_path=["otpvm/_core"],
    ),
)

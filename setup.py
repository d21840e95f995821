"""Build the mmcore Cython extensions.

All compiler directives live in ``DIRECTIVES`` below.  Set ``PYMM_DEBUG=1`` at
build time to turn bounds and wraparound checks back on (and keep asserts), e.g.::

    PYMM_DEBUG=1 pip install -e . --no-build-isolation
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("PYMM_DEBUG", "") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

CFLAGS = ["-O0", "-g"] if DEBUG else ["-O3"]

extensions = [
    Extension(
        f"mmcore.{name}",
        [f"mmcore/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=CFLAGS,
    )
    for name in ("_core", "huge_memory", "pagewalk", "check", "memory", "access", "mprotect", "mremap",
                 "fork")
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))

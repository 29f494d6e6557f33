"""Builds the cpu backend's optional fused float32 kernels (everything else is in pyproject.toml).

The extension is optional: where no C compiler is available the install still succeeds and the
cpu backend runs the same arithmetic as NumPy in-place ufuncs (slower).  ``dnn plugins`` says
which of the two is in use.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# GCC and Clang: never contract a*b+c into a fused multiply-add (that would round differently
# from NumPy), and let sqrtf vectorise (errno is never read).  MSVC neither contracts nor sets
# errno in vector code by default.
UNIX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "unix":
            for extension in self.extensions:
                extension.extra_compile_args = UNIX_FLAGS
        super().build_extensions()


setup(
    ext_modules=[Extension("dnn.backends._cpu_kernels", ["dnn/backends/_cpu_kernels.c"],
                           optional=True)],
    cmdclass={"build_ext": BuildExt},
)

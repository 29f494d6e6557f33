"""``cupy.cuda.cublas``, as far as loading goes: CuPy 14 loads libcublas through
``cuda.pathfinder`` when this module is first used (``cupy_backends/cuda/libs/__init__.py``),
and raises ImportError when it finds none.  The stand-in's own products are NumPy's: without
``cuda.pathfinder`` (CuPy depends on it, the stand-in does not) it loads nothing."""

try:
    from cuda.pathfinder import DynamicLibNotFoundError, load_nvidia_dynamic_lib
except ImportError:
    pass
else:
    try:
        load_nvidia_dynamic_lib("cublas")
    except DynamicLibNotFoundError as error:
        raise ImportError(str(error)) from error

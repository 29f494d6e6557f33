"""A stand-in for the array-api-compat package (1.16), as far as dnn's gpu path could meet it:
``array_api_compat.cupy`` (this package's ``cupy`` module).  It is not on the stand-in's path by
itself: a test that wants dnn to find array-api-compat installed, as on a machine where it is,
puts tests/standin/array_api_compat_site first on ``sys.path`` (tests/test_gpu_standin.py)."""

__version__ = "1.16.0"

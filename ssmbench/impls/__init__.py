"""Importing this package registers every impl (references always; Triton kernels when they import)."""

from ssmbench.impls import reference  # noqa: F401

"""Importing this package registers every impl: the references and the Triton kernels."""

from ssmbench.impls import reference, triton_mamba  # noqa: F401

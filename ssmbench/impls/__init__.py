"""Importing this package registers every impl: the references, the Triton kernels and the peers."""

from ssmbench.impls import flashinfer, reference, triton_checkpoint, triton_gdn, triton_mamba  # noqa: F401

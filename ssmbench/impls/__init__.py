"""Importing this package registers every impl: the references, the Triton kernels and the peers.
Registration order is the registry's order (`ssmbench list`, check, records): the references
first, then the Triton Mamba-2 chains and the peers, the checkpoint chain, GDN."""

# isort: off
from ssmbench.impls import reference  # noqa: F401
from ssmbench.impls import triton_mamba, flashinfer, triton_checkpoint, triton_gdn  # noqa: F401
# isort: on

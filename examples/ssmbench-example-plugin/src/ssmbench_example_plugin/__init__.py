"""An example ssmbench plugin (docs/plugins.md): a small Triton kernel of its own, wrapped as the
impl `example.intermediate` in `impls.py`, which the ``ssmbench.impls`` entry point names."""

"""ssmbench: profile and regression-test decode-time state-update kernels of hybrid LLMs."""

__version__ = "0.1.0"

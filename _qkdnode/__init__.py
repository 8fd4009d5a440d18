"""qkdnode: the software of one QKD node (ITU-T Y.3802 functional architecture).

Sub-packages: :mod:`qkdnode.drivers` (instruments and the simulated bench), :mod:`qkdnode.dsp`
(key distillation), :mod:`qkdnode.node` (module runtime, key manager, APIs, CLI) and
:mod:`qkdnode.bindings` (vendor C libraries).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qkdnode")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

__all__ = ["__version__"]

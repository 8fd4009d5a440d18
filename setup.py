"""Installs the repository's code folders as one package, ``qkdnode``.

The top level of the repository shows the parts of a node (``drivers/``, ``dsp/``, ``node/``,
``bindings/``); installed, they become ``qkdnode.drivers``, ``qkdnode.dsp`` and so on, so a lab
PC's environment gains one importable name, never a generic ``dsp`` or ``node``.
"""

from __future__ import annotations

from setuptools import Extension, find_packages, setup

# Code folder in the repository -> sub-package of ``qkdnode``.
CODE_FOLDERS = ("drivers", "dsp", "node", "bindings")


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = ["qkdnode"]
    package_dir = {"qkdnode": "_qkdnode"}
    for folder in CODE_FOLDERS:
        package_dir[f"qkdnode.{folder}"] = folder
        packages.append(f"qkdnode.{folder}")
        packages.extend(f"qkdnode.{folder}.{sub}" for sub in find_packages(where=folder))
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

# The C mock libraries of the vendor libraries the bindings load (bindings/mocks/*.c): plain C
# shared libraries with the vendor's ABI, built as "extension modules" only so that setuptools
# compiles them into the package; cffi dlopens them, nothing imports them.
MOCK_HEADERS = ["bindings/mocks/qkdmock_common.h", "bindings/mocks/qkdmock_t2.h"]
MOCK_LIBRARIES = [
    Extension(f"qkdnode.bindings.mocks._mock_{name}", [f"bindings/mocks/mock_{name}.c"],
              depends=MOCK_HEADERS)
    for name in ("tdcbase", "hhlib", "mhlib")
]

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    ext_modules=MOCK_LIBRARIES,
    package_data={
        "qkdnode": ["py.typed"],
        "qkdnode.dsp.codes": ["*.npz", "*.json"],
    },
)

"""Installs the repository's code folders as one package, ``qkdnode``.

The top level of the repository shows the parts of a node (``drivers/``, ``dsp/``, ``node/``,
``bindings/``); installed, they become ``qkdnode.drivers``, ``qkdnode.dsp`` and so on, so a lab
PC's environment gains one importable name, never a generic ``dsp`` or ``node``.
"""

from __future__ import annotations

from setuptools import find_packages, setup

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

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={
        "qkdnode": ["py.typed"],
        "qkdnode.dsp.codes": ["*.npz", "*.json"],
    },
)

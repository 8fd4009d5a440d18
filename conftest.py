"""Settings shared by tests/ and hil_tests/: hypothesis profiles and pytest plugins.

Profiles: ``dev`` (the default: quick) and ``ci`` (more examples, chosen when CI=true or with
``HYPOTHESIS_PROFILE=ci``). Both disable hypothesis' per-example deadline, because the first
call of a numba kernel includes its compilation.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

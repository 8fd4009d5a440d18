"""Checks of the lab file itself, before any instrument is opened."""

from __future__ import annotations

import pytest

from qkdnode.drivers.resource import parse_resource_url
from qkdnode.node.config.drivers import check_instrument_drivers

pytestmark = pytest.mark.hil


def test_every_instrument_has_a_usable_resource_url(hil_lab):
    # Raises on a role a driver does not implement or an unknown setting; warns only about
    # drivers this installation lacks.
    for warning in check_instrument_drivers(hil_lab.config):
        assert "is not available in this installation" in warning
    for instrument in hil_lab.config.instruments:
        if instrument.resource is None:
            continue  # configuration-only roles (a passive receiver's channel map)
        url = parse_resource_url(instrument.resource)
        assert url.scheme in {"visa", "serial", "lib", "sim"}
        if hil_lab.simulated:
            # The default lab must never reach for real hardware.
            assert url.scheme == "sim", instrument.name


@pytest.mark.roles("time_tagger", "detector")
def test_receiver_side_roles_are_distinct_instruments(lab_instrument):
    tagger = lab_instrument("time_tagger")
    detector = lab_instrument("detector")
    assert tagger.role == "time_tagger"
    assert detector.role == "detector"
    assert tagger.name != detector.name

"""Checks of the lab file itself, before any instrument is opened."""

from __future__ import annotations

import pytest

from qkdnode.drivers.resource import parse_resource_url

pytestmark = pytest.mark.hil


def test_every_instrument_has_a_usable_resource_url(hil_lab):
    for instrument in hil_lab.config.instruments:
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

"""Bench characterization procedures (issue 7), on the instrument roles only.

A procedure sees what the instruments report, never the simulated bench's true parameters:
on the simulated bench the tests compare its result with the configured physics.

* :mod:`.lab`: the instruments (from a configuration or a simulated lab) and their safe state;
* :mod:`.acquire`: time-tag acquisition with progress and kept partial data;
* :mod:`.gaps`: the inter-arrival model and its estimators;
* :mod:`.detector`: ``dark-counts``, ``afterpulsing``, ``dead-time``;
* :mod:`.runner`: :func:`run_procedure` (settings, safe state, ``result.json``, CSV, PNG).
"""

from __future__ import annotations

from .lab import SIM_PARAMS, Lab, open_lab, parse_sim_params, simulated_lab_config
from .runner import PROCEDURES, run_procedure, summary_table

__all__ = ["PROCEDURES", "SIM_PARAMS", "Lab", "open_lab", "parse_sim_params", "run_procedure",
           "simulated_lab_config", "summary_table"]

"""Instrument transports, drivers, roles and the simulated optical bench."""

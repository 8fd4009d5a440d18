"""Shipped LDPC codes (package data): see qkdnode.dsp.ldpc.codes."""

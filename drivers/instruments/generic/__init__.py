"""Drivers that need no transport: configuration-only roles."""

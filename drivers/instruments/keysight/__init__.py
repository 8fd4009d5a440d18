"""Keysight instrument drivers."""

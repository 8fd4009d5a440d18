"""Thorlabs instrument drivers."""

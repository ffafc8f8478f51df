"""Diff and diagnosis: pure functions of two views."""

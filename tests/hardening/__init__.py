"""Hardening tests: property-based fuzzing, path bypasses, malformed answers, load and faults."""

"""Observation: every arrival recorded (comparison), parity between paths, metrics."""

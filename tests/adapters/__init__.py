"""Tests of the adapters against real (fake) peers over loopback."""

"""Test doubles that speak the real protocols of the service's peers."""

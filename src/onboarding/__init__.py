"""onboarding: consent to personal-data processing by SMS code, and INN lookup, over gRPC."""

__version__ = "0.1.0"

"""Entrypoints: the gRPC server, the command line and the background workers."""

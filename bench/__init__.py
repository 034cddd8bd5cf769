"""Benchmarks: our RPCs against a bare grpc.aio server, measured in the same run."""

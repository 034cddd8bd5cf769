"""The gRPC transport: servicers that translate, and the server that hosts them."""

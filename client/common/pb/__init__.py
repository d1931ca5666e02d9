"""Generated gRPC stubs; regenerate with python -m client.common.genproto."""

"""Fault injection, experiments, the checker, and LocalCluster (an embedded cluster for your tests)."""


def __getattr__(name):
    # Lazy, so that importing chaos (the pytest plugin does, in every test run) does not load grpc.
    if name == "LocalCluster":
        from chaos.local_cluster import LocalCluster
        return LocalCluster
    raise AttributeError(f"module 'chaos' has no attribute {name!r}")


__all__ = ["LocalCluster"]

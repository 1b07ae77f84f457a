"""Store URLs: Redis Cluster URLs parsed into startup nodes and credentials, and every URL
shown with its password redacted (a cluster URL names several hosts)."""

from __future__ import annotations

import pytest

from flowherd.deploy.connect import redact
from flowherd.models.errors import BackendError
from flowherd.store.backend import _cluster_nodes, connect_cluster, is_cluster_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis+cluster://:s3cret@a:7000,b:7001", "redis+cluster://:***@a:7000,b:7001"),
        ("rediss+cluster://app:s3cret@a:7000,b:7001/0", "rediss+cluster://app:***@a:7000,b:7001/0"),
        ("redis://app:s3cret@h:6379/0", "redis://app:***@h:6379/0"),
        ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=***"),
        ("redis+cluster://a:7000,b:7001", "redis+cluster://a:7000,b:7001"),
    ],
)
def test_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "s3cret" not in redact(url)


def test_cluster_url_nodes_and_credentials() -> None:
    nodes, opts = _cluster_nodes("rediss+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001,h")
    assert [(n.host, n.port) for n in nodes] == [("10.0.0.1", 7000), ("::1", 7001), ("h", 6379)]
    assert opts == {"username": "app", "password": "p@ss", "ssl": True}
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1")


@pytest.mark.parametrize(
    "url", ["redis+cluster://", "redis+cluster://:pw@", "redis+cluster://h:1/3"]
)
def test_bad_cluster_url_is_one_line(url: str) -> None:
    with pytest.raises(BackendError, match="invalid Redis Cluster URL") as exc:
        connect_cluster(url, wait=0)
    assert "\n" not in str(exc.value) and "pw" not in str(exc.value)


def test_unreachable_cluster_is_one_line() -> None:
    with pytest.raises(BackendError, match="cannot reach the Redis Cluster") as exc:
        connect_cluster("redis+cluster://:topsecret@127.0.0.1:1", wait=0.2)
    assert "topsecret" not in str(exc.value)

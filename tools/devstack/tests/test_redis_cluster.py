"""CLUSTER NODES as the local stack and the benchmarks read it: which nodes are serving
primaries, and which slots each one serves (a made-up reply; no processes)."""

from __future__ import annotations

from devstack.redis_cluster import parse_cluster_nodes

# Redis 7's format: `ip:port@bus[,hostname]`; a primary during a failover (`fail`, `fail?`),
# one whose address is unknown (`noaddr`), a node just made a replica that this node still
# sees as a primary without slots, a single slot and a slot being migrated.
REPLY = """\
e7d1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5459 5460 [5461->-67ed]
67ed 127.0.0.1:7001@17001,node-1 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:7002@17002 master,fail - 1426238316000 1426238316232 3 disconnected 10923-16383
07c3 127.0.0.1:7003@17003 slave e7d1 0 1426238317239 4 connected
6ec2 127.0.0.1:7004@17004 master,fail? - 0 1426238316232 7 connected
824f :0@0 master,noaddr - 0 0 8 disconnected
a1b2 127.0.0.1:7005@17005 master - 0 1426238316232 9 connected
"""


def test_cluster_nodes_tells_ports_flags_and_the_slots_each_node_serves():
    nodes = {node.port: node for node in parse_cluster_nodes(REPLY)}
    assert sorted(nodes) == [0, 7000, 7001, 7002, 7003, 7004, 7005]
    assert nodes[7000].slots == ((0, 5459), (5460, 5460))  # the migrating slot is not its own
    assert nodes[7000].serves(5460)
    assert not nodes[7000].serves(5461)
    assert nodes[7001].serves(5461)
    assert nodes[7001].serves(10922)
    assert nodes[7003].slots == ()
    assert not nodes[7003].is_primary


def test_only_primaries_serving_slots_and_not_failing_count_as_live():
    nodes = parse_cluster_nodes(REPLY)
    assert [n.port for n in nodes if n.is_live_primary] == [7000, 7001]
    # A primary its peers mark as failing still owns its slots until a replica takes them.
    (failing,) = [n for n in nodes if n.port == 7002]
    assert failing.is_primary
    assert failing.serves(16383)


def test_an_empty_or_garbled_reply_lists_no_node():
    assert parse_cluster_nodes("") == []
    assert parse_cluster_nodes("ERR This instance has cluster support disabled\n") == []


def test_cluster_nodes_tells_ids_primaries_and_announced_hostnames():
    """The container topology knows its nodes by the names they announce (all on port
    6379), and a replica by the id of its primary."""
    nodes = {node.port: node for node in parse_cluster_nodes(REPLY)}
    assert nodes[7001].hostname == "node-1"
    assert nodes[7000].hostname == ""
    assert nodes[7003].primary_id == nodes[7000].id == "e7d1"
    assert nodes[7000].primary_id == "-"

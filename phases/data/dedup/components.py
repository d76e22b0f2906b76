"""Stage 4, components: clusters are the connected components of the verified and exact edges.

Nodes are ``"1" + id`` for a document of this run and ``"0" + cluster`` for a document indexed by an
earlier run (its whole stored cluster), and a component's label is its smallest node: the smallest
id of a run, and an indexed cluster before any new document, so an old kept document stays kept.
A graph of up to :data:`DRIVER_COMPONENTS_EDGES` edges is labelled on the driver by union-find (one
job); a larger one by the large-star / small-star algorithm (Kiveris et al., 2014) on DataFrames:
O(log^2 n) rounds, nothing collected to the driver.
"""

from __future__ import annotations

from typing import Iterable

from phases.data.dedup.frames import collect_at_most, string_frame

# Edge sets up to this size are labelled on the driver (one Spark job instead of 2-3 per star round);
# 2M string pairs are ~0.5 GB of Python objects at most.
DRIVER_COMPONENTS_EDGES = 2_000_000


def union_find(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """node -> the smallest node of its component over ``edges`` (order-independent)."""
    parent: dict[str, str] = {}

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def cluster_labels(spark, verified, exact, old=None, driver_max_edges: int | None = None):
    """(labels: (id = node, label), bridged indexed clusters) of the graph of ``verified`` (a, b) and
    ``exact`` (rep, id) edges; ``old``: the indexed (id, cluster_id) or None."""
    from pyspark.sql import functions as F

    limit = DRIVER_COMPONENTS_EDGES if driver_max_edges is None else driver_max_edges
    pairs = collect_at_most(verified.select("a", "b"), limit) if limit > 0 else None
    copies = collect_at_most(exact.select("rep", "id"), limit) if pairs is not None else None
    if copies is not None and len(pairs) + len(copies) <= limit:
        stored: dict[str, str] = {}
        ids = sorted({i for r in pairs for i in r})
        if old is not None and ids:
            wanted = F.broadcast(string_frame(spark, ("id",), [(i,) for i in ids]))
            stored = dict(old.select("id", "cluster_id").join(wanted, "id", "left_semi").collect())
        node = lambda i: "0" + stored[i] if i in stored else "1" + i  # noqa: E731
        label = union_find([(node(a), node(b)) for a, b in pairs] + [("1" + rep, "1" + i) for rep, i in copies])
        bridged = sum(1 for n, lab in label.items() if n[0] == "0" and lab[0] == "0" and n != lab)
        return string_frame(spark, ("id", "label"), sorted(label.items())), bridged
    if old is None:
        old = spark.createDataFrame([], "id string, cluster_id string")
    ids = verified.select(F.col("a").alias("id")).unionByName(verified.select(F.col("b").alias("id"))).distinct()
    nodes = (
        ids.join(old.select("id", "cluster_id"), "id", "left")
        .select("id", F.coalesce(F.concat(F.lit("0"), "cluster_id"), F.concat(F.lit("1"), "id")).alias("node"))
        .localCheckpoint()
    )
    ends = lambda s: nodes.select(F.col("id").alias(s), F.col("node").alias(f"n{s}"))  # noqa: E731
    edges = (
        verified.join(ends("a"), "a")
        .join(ends("b"), "b")
        .select(F.col("na").alias("a"), F.col("nb").alias("b"))
        .unionByName(exact.select(F.concat(F.lit("1"), "rep").alias("a"), F.concat(F.lit("1"), "id").alias("b")))
    )
    labels = connected_components(edges).localCheckpoint()
    bridged = labels.where(F.col("label").startswith("0") & F.col("id").startswith("0") & (F.col("id") != F.col("label"))).count()
    return labels, bridged


def _canonical(df, x: str, y: str):
    from pyspark.sql import functions as F

    return df.select(F.least(x, y).alias("a"), F.greatest(x, y).alias("b")).where("a != b").distinct()


def _both_ways(e):
    from pyspark.sql import functions as F

    return e.select(F.col("a").alias("u"), F.col("b").alias("v")).unionByName(e.select(F.col("b").alias("u"), F.col("a").alias("v")))


def _large_star(e):
    """Each node's larger neighbours are attached to the smallest node of its neighbourhood."""
    from pyspark.sql import functions as F

    s = _both_ways(e)
    m = s.groupBy("u").agg(F.min("v").alias("m")).withColumn("m", F.least("m", "u"))
    return _canonical(s.where("v > u").join(m, "u"), "v", "m")


def _small_star(e):
    """Each node and its smaller neighbours are attached to the smallest of them."""
    from pyspark.sql import functions as F

    s = _both_ways(e).where("v < u")
    m = s.groupBy("u").agg(F.min("v").alias("m"))
    return _canonical(s.join(m, "u").select("v", "m").unionByName(m.select(F.col("u").alias("v"), "m")), "v", "m")


def _is_star_forest(e) -> bool:
    """Every edge (a, b) is centre -> leaf: no leaf has two centres and no centre is a leaf (one job)."""
    from pyspark.sql import functions as F

    leaves = e.groupBy("b").count()
    centres_as_leaves = leaves.join(e.select("a"), leaves.b == F.col("a"), "left_semi").select("b")
    return leaves.where("count > 1").select("b").unionByName(centres_as_leaves).limit(1).count() == 0


def connected_components(edges, max_rounds: int = 64):
    """(id, label) for every node of ``edges`` (columns a, b), on Spark: label = the smallest node of
    its component (large-star / small-star rounds until the edges form a star forest)."""
    from pyspark.sql import functions as F

    e = _canonical(edges, "a", "b").localCheckpoint()
    for _ in range(max_rounds):
        if _is_star_forest(e):
            break
        # localCheckpoint cuts the lineage: the plan would otherwise grow with every round.
        e = _small_star(_large_star(e)).localCheckpoint()
    else:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
    roots = e.select(F.col("a").alias("id"), F.col("a").alias("label")).distinct()
    return e.select(F.col("b").alias("id"), F.col("a").alias("label")).unionByName(roots)

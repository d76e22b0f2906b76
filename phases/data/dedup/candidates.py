"""Stage 2, candidates: the documents sharing an LSH bucket (a band's key), as member lists.

A bucket is kept as the list of its members, not as its pairs: a near-duplicate cluster of k copies
fills each band's bucket with k ids, and k ids cost k, where its pairs would cost k^2/2 per band.
Verification (:mod:`phases.data.dedup.verify`) decides which pairs it has to compute.
"""

from __future__ import annotations


def candidate_buckets(bands):
    """Distinct buckets of two or more documents: one row per member set, ``ids`` sorted.

    ``bands``: (id, band, key) rows; with a boolean ``fresh`` column (a batch against an index),
    only buckets holding a fresh document. The same member set found by several bands (near-exact
    copies agree in most bands) is one row.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    fresh = "fresh" in bands.columns
    # Nearly every bucket holds one document: a count per bucket drops those rows first (one shuffle and
    # sort, which the grouping below reuses). Grouping all rows at once would not fit Spark's object hash
    # aggregate and fall back to sorting in it, several times slower.
    shared = bands.withColumn("_n", F.count("*").over(Window.partitionBy("key", "band"))).where("_n > 1")
    agg = [F.collect_list("id").alias("ids")] + ([F.max("fresh").alias("fresh")] if fresh else [])
    buckets = shared.groupBy("key", "band").agg(*agg)
    if fresh:
        buckets = buckets.where("fresh")
    return buckets.select(F.array_sort("ids").alias("ids")).distinct()


def bucket_pairs(buckets):
    """(a, b), a < b, of every two members of a bucket, distinct: the scale-out path's candidates
    (quadratic in a bucket's size; the grouped path of verification avoids it)."""
    from pyspark.sql import functions as F

    members = buckets.select("ids", F.posexplode("ids").alias("i", "a"))
    later = F.slice("ids", F.col("i") + 2, F.size("ids"))  # slice is 1-based: the members after position i
    return members.select("a", F.explode(later).alias("b")).distinct()

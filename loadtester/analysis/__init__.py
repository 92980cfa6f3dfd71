"""Numbers from stored or live windows: aggregate (the only place windows are merged), report (the
one report dict and its text), thresholds, compare (A/B with statistics), merge (shards into one run)."""

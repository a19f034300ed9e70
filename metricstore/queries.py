"""SQL shared by both engines, written once with ``:name`` parameters.

Engine fragments ({bucket}, {seconds}, grouped statistics,
the latest-row probes) come from the dialect; :meth:`Dialect.sql` turns the
parameters into the driver's style. Every time-range filter is half-open
``[:start, :end)`` and hits an index on (server_id, ..., collected_at).
"""

SERIES_WHERE = ("server_id = :sid AND metric_type_id = :mid "
                "AND collected_at >= :start AND collected_at < :end")

# series() pages by key: the first page from :start, each next one after the
# last time read. One round trip for a day of 15 s points, no transaction or
# snapshot held while the caller iterates, memory bounded by :limit rows.
SERIES = ("SELECT collected_at, value FROM metrics WHERE %s ORDER BY collected_at LIMIT :limit"
          % SERIES_WHERE)
SERIES_AFTER = SERIES.replace("collected_at >= :start", "collected_at > :after")

BUCKET_SOURCE = ("SELECT {bucket} AS g, collected_at AS t, value AS v "
                 "FROM metrics WHERE %s" % SERIES_WHERE)

RANGE_SOURCE = ("SELECT 0 AS g, collected_at AS t, value AS v FROM metrics WHERE %s"
                % SERIES_WHERE)

# top(), grouped: one index range scan per registered server, then GROUP BY.
TOP_SOURCE = ("SELECT server_id AS g, collected_at AS t, value AS v FROM metrics "
              "WHERE server_id IN (SELECT id FROM servers) AND metric_type_id = :mid "
              "AND collected_at >= :start AND collected_at < :end")
TOP = ('SELECT g, "{stat}" FROM ({grouped}) ranked WHERE "{stat}" IS NOT NULL '
       'ORDER BY "{stat}" {direction}, g LIMIT :n')

# top(), per server: the aggregate of each server's range in a LATERAL subquery.
TOP_PER_SERVER = (
    "SELECT s.id, a.stat FROM servers s CROSS JOIN LATERAL (SELECT {aggregate} AS stat "
    "FROM (SELECT collected_at AS t, value AS v FROM metrics WHERE server_id = s.id "
    "AND metric_type_id = :mid AND collected_at >= :start AND collected_at < :end) src) a "
    "WHERE a.stat IS NOT NULL ORDER BY a.stat {direction}, s.id LIMIT :n")

RATE = ("SELECT {bucket} AS g, "
        "SUM(CASE WHEN v >= pv THEN v - pv ELSE v END), SUM({seconds}), COUNT(*) "
        "FROM (SELECT collected_at AS t, value AS v, "
        "LAG(collected_at) OVER (ORDER BY collected_at) AS pt, "
        "LAG(value) OVER (ORDER BY collected_at) AS pv "
        "FROM metrics WHERE %s) pairs "
        "WHERE pt IS NOT NULL AND t - pt <= :gap GROUP BY g ORDER BY g" % SERIES_WHERE)

GAPS = ("SELECT pt, t FROM (SELECT collected_at AS t, "
        "LAG(collected_at) OVER (ORDER BY collected_at) AS pt "
        "FROM metrics WHERE %s) pairs WHERE t - pt > :gap ORDER BY t" % SERIES_WHERE)

SPAN = "SELECT MIN(collected_at), MAX(collected_at) FROM metrics WHERE %s" % SERIES_WHERE

SNAPSHOTS = ("SELECT collected_at, cpu_percent, memory_percent, connection_count, status "
             "FROM server_snapshots WHERE server_id = :sid "
             "AND collected_at >= :start AND collected_at < :end ORDER BY collected_at")

SILENT = ("SELECT s.id, s.name FROM servers s WHERE NOT EXISTS "
          "(SELECT 1 FROM metrics m WHERE m.server_id = s.id AND m.collected_at >= :since) "
          "AND NOT EXISTS (SELECT 1 FROM server_snapshots x "
          "WHERE x.server_id = s.id AND x.collected_at >= :since) ORDER BY s.id")

SERVER_EXISTS = "SELECT 1 FROM servers WHERE id = :sid"

PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
STATS = ("avg", "min", "max", "sum", "count", "last") + tuple(PERCENTILES)

# Per-server index probes on (server_id, collected_at): no full scan.
TIME_SPAN = ("SELECT MIN((SELECT MIN(collected_at) FROM {table} WHERE server_id = s.id)), "
             "MAX((SELECT MAX(collected_at) FROM {table} WHERE server_id = s.id)) "
             "FROM servers s")

# Rollup tier status (rollups.rebuild.tier_status): per-series index probes.
# {t}: the tier table. First and last bucket start of any series:
TIER_SPAN = ("SELECT MIN((SELECT MIN(bucket) FROM {t} WHERE server_id = s.id "
             "AND metric_type_id = m.id)), MAX((SELECT MAX(bucket) FROM {t} "
             "WHERE server_id = s.id AND metric_type_id = m.id)) FROM servers s, metric_types m")
# The newest sample (epoch us) a tier holds: last_at of each series' newest bucket.
TIER_NEWEST = ("SELECT MAX((SELECT MAX(last_at) FROM {t} WHERE server_id = s.id AND "
               "metric_type_id = m.id AND bucket = (SELECT MAX(bucket) FROM {t} WHERE "
               "server_id = s.id AND metric_type_id = m.id))) FROM servers s, metric_types m")
# The newest raw sample of any series.
RAW_NEWEST = ("SELECT MAX((SELECT MAX(collected_at) FROM metrics WHERE server_id = s.id "
              "AND metric_type_id = m.id)) FROM servers s, metric_types m")

"""The metric types every tenant starts with (story 3.1, AC 6 plus the notes).

Columns: name, unit, description, kind. A *counter* is cumulative since the
SQL Server instance started (sys.dm_io_virtual_file_stats,
sys.dm_os_wait_stats, the "Batch Requests/sec" counter of
sys.dm_os_performance_counters): query it with ``rate()``. A *gauge* is a
level at the sampling instant.
"""

METRIC_TYPES = (
    ("cpu_percent", "%", "CPU utilization percentage", "gauge"),
    ("memory_percent", "%", "Memory utilization percentage", "gauge"),
    ("disk_io_reads", "count", "Cumulative disk reads since instance start", "counter"),
    ("disk_io_writes", "count", "Cumulative disk writes since instance start", "counter"),
    ("wait_time_ms", "ms", "Cumulative wait time since instance start", "counter"),
    ("connection_count", "count", "Active connection count", "gauge"),
    ("batch_requests_sec", "req", "Cumulative batch requests (rate() gives req/s)",
     "counter"),
    ("page_life_expectancy", "sec", "Page life expectancy", "gauge"),
    ("blocked_processes", "count", "Number of blocked processes", "gauge"),
)

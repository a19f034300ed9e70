"""Synthetic fleet data for the demo: realistic, deterministic, streamed.

Gauges wander with a daily rhythm (peak at 14:00 UTC); disk I/O, waits and
batch requests are cumulative counters, one of which resets (an instance
restart). The last server goes silent two hours before the end, and the
second one misses 20 minutes in the middle of the range. Run again on the
same tenant, it catches up from the latest stored sample (as a collector
would), continuing the stored counters.
"""

import math
import random
from dataclasses import dataclass
from datetime import timedelta

from .ingest import Sample, SnapshotSample
from .timeutil import EPOCH

STEP = timedelta(seconds=15)
SILENT_FOR = timedelta(hours=2)
GAP = timedelta(minutes=20)
METRICS_PER_SAMPLE = 9
COUNTERS = (("reads", "disk_io_reads"), ("writes", "disk_io_writes"),
            ("waits", "wait_time_ms"), ("batches", "batch_requests_sec"))


@dataclass(frozen=True)
class DemoFleet:
    """Which servers, which instants: ``[start, end)`` every ``STEP``."""
    server_ids: tuple
    start: object
    end: object
    seed: int = 7
    counters: dict = None      # server_id -> {metric: last stored value}

    @property
    def steps(self):
        return int((self.end - self.start) / STEP)

    def silent_server(self):
        return self.server_ids[-1] if len(self.server_ids) > 1 else None

    def gap_server(self):
        return self.server_ids[1] if len(self.server_ids) > 2 else None

    def gap(self):
        middle = self.start + (self.end - self.start) / 2
        return middle, middle + GAP

    def reset_at(self):
        """(server, step index) where the first server's counters reset."""
        return self.server_ids[0], self.steps * 2 // 3

    def _reports(self, server_id, t):
        if server_id == self.silent_server() and t >= self.end - SILENT_FOR:
            return False
        gap_start, gap_end = self.gap()
        return not (server_id == self.gap_server() and gap_start <= t < gap_end)

    def generate(self):
        """Yield ``(samples, snapshots)`` per instant, in time order."""
        rng = random.Random(self.seed)
        state = {sid: dict(base=rng.uniform(15, 55), mem=rng.uniform(55, 85),
                           conns=rng.uniform(40, 250), ple=rng.uniform(800, 4000),
                           reads=0.0, writes=0.0, waits=0.0, batches=0.0)
                 for sid in self.server_ids}
        for sid, last in (self.counters or {}).items():
            state[sid].update({key: last.get(metric, 0.0) for key, metric in COUNTERS})
        reset_server, reset_step = self.reset_at()
        for i in range(self.steps):
            t = self.start + STEP * i
            hour = ((t - EPOCH).total_seconds() % 86400) / 3600
            daily = math.sin((hour - 8) / 24 * 2 * math.pi)       # peak at 14:00 UTC
            samples, snapshots = [], []
            for sid in self.server_ids:
                s = state[sid]
                if sid == reset_server and i == reset_step:
                    s.update(reads=0.0, writes=0.0, waits=0.0, batches=0.0)
                s["base"] += rng.gauss(0, 0.3)
                s["base"] = min(70.0, max(5.0, s["base"]))
                cpu = min(100.0, max(0.0, s["base"] + 20 * daily + rng.gauss(0, 4)))
                s["mem"] = min(98.0, max(30.0, s["mem"] + rng.gauss(0, 0.1)))
                conns = max(0, int(s["conns"] * (1 + 0.4 * daily) + rng.gauss(0, 5)))
                s["ple"] = max(60.0, s["ple"] + rng.gauss(0, 20))
                load = cpu / 100
                s["reads"] += rng.uniform(200, 400) * load * 15
                s["writes"] += rng.uniform(50, 150) * load * 15
                s["waits"] += rng.uniform(100, 900) * load * 15
                s["batches"] += rng.uniform(300, 900) * load * 15
                blocked = rng.choice((0, 0, 0, 0, 0, 0, 0, 1, 2)) if cpu > 60 else 0
                if not self._reports(sid, t):
                    continue
                for name, value in (("cpu_percent", cpu), ("memory_percent", s["mem"]),
                                    ("connection_count", conns),
                                    ("page_life_expectancy", s["ple"]),
                                    ("blocked_processes", blocked),
                                    ("disk_io_reads", round(s["reads"])),
                                    ("disk_io_writes", round(s["writes"])),
                                    ("wait_time_ms", round(s["waits"])),
                                    ("batch_requests_sec", round(s["batches"]))):
                    samples.append(Sample(sid, name, value, t))
                status = "critical" if cpu > 90 else "warning" if cpu > 75 else "online"
                snapshots.append(SnapshotSample(sid, t, round(cpu, 2), round(s["mem"], 2),
                                                conns, status))
            yield samples, snapshots


def plan(repo, server_ids, end, days):
    """The fleet to load: ``days`` up to ``end``, or from the latest stored
    sample on, continuing its counters."""
    start = end - timedelta(days=days)
    counters = {}
    for _, metric in COUNTERS:
        for row in repo.latest(metric, server_ids=server_ids):
            counters.setdefault(row.server_id, {})[metric] = row.value
            if row.server_id == server_ids[0]:
                start = max(start, row.collected_at + STEP)
    return DemoFleet(tuple(server_ids), min(start, end), end, counters=counters)


def load(repo, fleet, progress=None):
    """Write the fleet's samples and snapshots through ``repo``; return how many
    metric rows and snapshots were new.

    ``progress(n)`` is called with the number of metric rows written so far.
    """
    metrics = snapshots_new = 0
    batch, snaps = [], []
    for samples, snapshots in fleet.generate():
        batch.extend(samples)
        snaps.extend(snapshots)
        if len(batch) >= 50_000:
            metrics += repo.record_many(batch).inserted
            snapshots_new += repo.record_snapshots(snaps).inserted
            if progress:
                progress(len(batch))
            batch, snaps = [], []
    if batch:
        metrics += repo.record_many(batch).inserted
        snapshots_new += repo.record_snapshots(snaps).inserted
        if progress:
            progress(len(batch))
    return metrics, snapshots_new

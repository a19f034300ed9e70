"""metricstore: the metrics data layer of a database-monitoring service.

    import metricstore
    db = metricstore.connect("sqlite:///tenant.db")   # or postgresql://...
    metricstore.provision(db)
    repo = metricstore.MetricRepository(db)
"""

from .connection import DEFAULT_URL, connect, default_url
from .errors import (ConfigurationError, DatabaseError, MaintenanceError, MetricstoreError,
                     QueryError, SchemaError, TimeError, UnknownMetricError,
                     UnknownServerError, ValidationError)
from .distribute import distribute
from .ingest import Sample, SnapshotSample, WriteResult
from .forwarding import Forwarder, SpoolCap
from .maintenance import last_run, maintain
from .models import (MODELS, MaintenanceRun, Metric, MetricType, Server, ServerSnapshot,
                     TenantSettings)
from .provision import provision
from .repository import MetricRepository
from .settings import get_retention_days, set_retention_days

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL", "MODELS", "ConfigurationError", "DatabaseError", "Forwarder",
    "MaintenanceError", "SpoolCap",
    "MaintenanceRun", "Metric", "MetricRepository", "QueryError", "Sample",
    "SnapshotSample", "WriteResult", "MetricType", "MetricstoreError", "SchemaError", "Server",
    "ServerSnapshot", "TenantSettings", "TimeError", "UnknownMetricError",
    "UnknownServerError", "ValidationError", "connect", "default_url", "distribute",
    "get_retention_days", "last_run", "maintain", "provision", "set_retention_days",
]

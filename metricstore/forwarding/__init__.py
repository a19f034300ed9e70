"""Store and forward: the agent's SQLite spool feeds the central database.

    from metricstore.forwarding import Forwarder, SpoolCap, status
    Forwarder(local_db, central_db, cap=SpoolCap(max_rows=5_000_000)).run(follow=True)
    status(local_db).counts        # forwarded, duplicate, expired, quarantined, ...

- ``outbox``: what is not yet forwarded (triggers fill it in the write
  transaction), in arrival order;
- ``forwarder``: the shipping loop (batch in flight, central ack, lanes,
  backoff); ``central``: the destination; ``mapping``: servers by name;
- ``outcome`` / ``quarantine``: what the central side did with each row;
- ``cap``: local retention and the size cap; ``status``: where it stands.
"""

from .backoff import Backoff
from .cap import SpoolCap, enforce
from .forwarder import Forwarder
from .outbox import disable_spool, enable_spool
from .outcome import Outcome
from .quarantine import Quarantined
from .status import ForwardStatus, status

__all__ = ["Backoff", "ForwardStatus", "Forwarder", "Outcome", "Quarantined", "SpoolCap",
           "disable_spool", "enable_spool", "enforce", "status"]

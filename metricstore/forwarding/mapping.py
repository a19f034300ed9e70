"""Server ids differ between the spool and the central database: map by name.

Local servers seen for the first time are registered centrally
(``add_server``, idempotent, all of a batch's in one central transaction) and
the mapping is kept in ``forward_servers``, so later batches need no central
look-up.
"""

from ..dialects import dialect_for

SAVE = ("INSERT INTO forward_servers (local_id, central_id, name) VALUES (:l, :c, :n) "
        "ON CONFLICT (local_id) DO UPDATE SET central_id = excluded.central_id, "
        "name = excluded.name")


class ServerMap:
    """``local server id -> (central id, name)`` for one spool and destination."""

    def __init__(self, local_db):
        self.local = local_db
        self.known = {lid: (cid, name) for lid, cid, name in local_db.execute_sql(
            "SELECT local_id, central_id, name FROM forward_servers")}

    def resolve(self, local_ids, central_repo):
        """Map every id of ``local_ids`` (registering new names centrally).

        Returns ``{local id: (central id, name)}``; a local id with no row in
        the local ``servers`` table maps to ``(None, None)``.
        """
        missing = set(local_ids) - set(self.known)
        if missing:
            d = dialect_for(self.local)
            names = dict(self.local.execute_sql(
                d.sql("SELECT id, name FROM servers %s" % d.id_filter("id")),
                {"ids": d.ids_param(sorted(missing))}))
            new = {}
            with central_repo.db.atomic():   # one central commit for all of them
                for lid in sorted(missing):
                    name = names.get(lid)
                    if name is None:
                        self.known[lid] = (None, None)
                    else:
                        new[lid] = (central_repo.add_server(name), name)
            save = d.sql(SAVE)               # only ids the central database committed
            with self.local.atomic():
                for lid, (cid, name) in new.items():
                    self.local.execute_sql(save, {"l": lid, "c": cid, "n": name})
                    self.known[lid] = (cid, name)
        return self.known

    def forget(self):
        """Drop the mapping (the destination changed)."""
        self.local.execute_sql("DELETE FROM forward_servers")
        self.known = {}

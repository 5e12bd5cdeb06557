-- One row that every change able to remove an active admin (a role or is_active change, a
-- deletion) updates first, in the same transaction: those changes then run one at a time on
-- SQLite and PostgreSQL alike, so "is another active admin left?" cannot be answered from a
-- stale view while a concurrent change removes that other admin.
CREATE TABLE admin_guard (
    id         INTEGER PRIMARY KEY,
    changed_at TEXT    NOT NULL
);
INSERT INTO admin_guard (id, changed_at) VALUES (1, '');

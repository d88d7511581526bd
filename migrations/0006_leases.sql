-- Leases for work that must run on one control-plane replica at a time (leader election). Every
-- change of holder increments the epoch, the fencing token the leader attaches to what it writes.
-- Expiry is judged by PostgreSQL's clock, so replicas' clocks never disagree about it.
CREATE TABLE leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    epoch        BIGINT NOT NULL CHECK (epoch >= 1),
    acquired_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    renewed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);

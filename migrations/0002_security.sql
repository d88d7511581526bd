-- Legion security schema: Vault-style policies, API keys, the hash-chained audit trail and the
-- settings changed through the API.

-- Vault-style ACL policies (DESIGN.md section 6). `rules` is `[{"path","capabilities":[…]}]`.
CREATE TABLE policies (
    name        TEXT PRIMARY KEY,
    rules       JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- API keys. Only the SHA-256 of the key is kept; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    policies    TEXT[] NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);

CREATE INDEX api_keys_policies ON api_keys USING GIN (policies);

-- The audit trail: append-only, each record carrying the SHA-256 of the record before it. Writers
-- serialize on the single `audit_head` row, so the chain has one order across control-plane replicas.
CREATE TABLE audit_log (
    id          BIGINT PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    action      TEXT NOT NULL,
    principal   TEXT NOT NULL,
    resource    TEXT NOT NULL,
    capability  TEXT NOT NULL,
    decision    TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    source      TEXT NOT NULL,
    -- JSON text exactly as hashed (JSONB would reorder keys and renormalize numbers).
    detail      TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);

CREATE INDEX audit_log_principal ON audit_log (principal, id);
CREATE INDEX audit_log_action ON audit_log (action, id);

-- The last record of the chain (id 0 and 32 zero bytes before the first record).
CREATE TABLE audit_head (
    singleton   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_id     BIGINT NOT NULL,
    last_hash   BYTEA NOT NULL
);

INSERT INTO audit_head (singleton, last_id, last_hash) VALUES (TRUE, 0, decode(repeat('00', 32), 'hex'));

-- The append-only rule, enforced by the database as well: records are never updated or deleted by
-- Legion (an operator with table ownership can still tamper, which `audit verify` detects).
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Settings sections changed through the API (the writable ones), applied over the settings files.
CREATE TABLE config_overrides (
    section     TEXT PRIMARY KEY,
    value       JSONB NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

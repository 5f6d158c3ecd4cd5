-- Storage Commitment (issue #17): requests received by N-ACTION, kept until their report
-- (N-EVENT-REPORT) is delivered or given up, so a restart resumes them. A commitment is
-- checked by the process whose lease it carries (or by any process once that lease expired),
-- then its report is sent: on the association it came on while that is open (`association`
-- is a number local to the process holding `lease`), otherwise on a new association to the
-- requestor's [[dicom.peers]] address. Times are the database's clock (Unix milliseconds).
CREATE TABLE commitments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_uid TEXT NOT NULL,
    calling_ae      TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    state           TEXT NOT NULL,          -- 'checking' | 'ready' | 'reported' | 'given_up'
    association     BIGINT,                 -- the association it came on, in `lease`'s process
    lease           BIGINT,                 -- the process working on it
    event_type      INTEGER,                -- once checked: 1 all committed, 2 some failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    finished_at     BIGINT
);
CREATE INDEX commitments_state ON commitments (state, next_attempt_at);

-- The instances one commitment references, in request order; `failure_reason` is set once
-- checked for those that are not committed (0x0110, 0x0112, 0x0119).
CREATE TABLE commitment_items (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    commitment_fk    BIGINT NOT NULL REFERENCES commitments (id),
    position         INTEGER NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    failure_reason   INTEGER,
    UNIQUE (commitment_fk, position)
);

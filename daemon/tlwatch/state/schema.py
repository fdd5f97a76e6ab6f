"""The store's schema: numbered migrations, applied in order, one list per database (SQLite's
`PRAGMA user_version`, PostgreSQL's `tlwatch_schema` counts them). Migration 10 (PostgreSQL's 2)
brings the fleet: hosts and their heartbeats, the lease on a row taken, the shared pace. Migration
11 (PostgreSQL's 3) has the database keep each file's journal of states (`events`) itself: a
trigger on `files` writes a row for each new file and each change of its state, whatever the
statement (a claim is one UPDATE, whose row the store learns only from its answer)."""

from __future__ import annotations

MIGRATIONS = [
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        path BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        sha256 TEXT,
        mime TEXT,
        kind TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        asset_id TEXT,
        asset_status TEXT,
        duplicate_of INTEGER REFERENCES files(id) ON DELETE SET NULL,
        upload_token TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        upload_id TEXT,
        chunk_size INTEGER,
        total_chunks INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        uploaded_at REAL
    );
    CREATE INDEX files_state ON files(state, next_attempt_at);
    CREATE INDEX files_sha256 ON files(sha256);
    CREATE INDEX files_asset ON files(asset_id);
    CREATE TABLE chunks (
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        chunk_index INTEGER NOT NULL,
        etag TEXT NOT NULL,
        PRIMARY KEY (file_id, chunk_index)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        old TEXT,
        new TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_file ON events(file_id, at);
    """,
    """
    CREATE TABLE folders (
        path BLOB PRIMARY KEY,
        online INTEGER NOT NULL,
        reason TEXT,
        since REAL NOT NULL
    );
    """,
    """
    ALTER TABLE files ADD COLUMN dir BLOB;
    UPDATE files SET dir = tlwatch_dirname(path);
    CREATE INDEX files_dir ON files(dir);
    """,
    """
    ALTER TABLE files ADD COLUMN metadata TEXT;
    ALTER TABLE files ADD COLUMN metadata_pending TEXT;
    CREATE TABLE indexings (
        asset_id TEXT NOT NULL,
        index_id TEXT NOT NULL,
        file_id INTEGER REFERENCES files(id) ON DELETE SET NULL,
        state TEXT NOT NULL,
        indexed_asset_id TEXT,
        status TEXT,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        sent_at REAL,
        PRIMARY KEY (asset_id, index_id)
    );
    CREATE INDEX indexings_state ON indexings(state, next_attempt_at);
    """,
    """
    ALTER TABLE files ADD COLUMN duration REAL;
    """,
    """
    CREATE INDEX files_metadata_pending ON files(id) WHERE metadata_pending IS NOT NULL;
    """,
    """
    CREATE TABLE sent (
        file_id INTEGER REFERENCES files(id) ON DELETE SET NULL,
        at REAL NOT NULL,
        duration REAL NOT NULL
    );
    CREATE INDEX sent_at ON sent(at);
    INSERT INTO sent (file_id, at, duration)
        SELECT id, uploaded_at, COALESCE(duration, 0) FROM files WHERE uploaded_at IS NOT NULL;
    CREATE TABLE chores (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        asset_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        detail TEXT,
        target BLOB,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX chores_state ON chores(state, next_attempt_at);
    CREATE INDEX chores_file ON chores(file_id);
    INSERT INTO chores (file_id, kind, state, asset_id, size, mtime_ns, inode, detail,
                        created_at, updated_at)
        SELECT id, 'metadata', 'queued', COALESCE(asset_id, ''), size, mtime_ns, inode,
               metadata_pending, updated_at, updated_at
        FROM files WHERE metadata_pending IS NOT NULL;
    DROP INDEX files_metadata_pending;
    ALTER TABLE files DROP COLUMN metadata_pending;
    CREATE TABLE remote_assets (
        sha256 TEXT PRIMARY KEY,
        asset_id TEXT NOT NULL,
        status TEXT NOT NULL
    );
    CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE INDEX files_root_state ON files(root, state);
    """,
    """
    ALTER TABLE files ADD COLUMN width INTEGER;
    ALTER TABLE files ADD COLUMN height INTEGER;
    ALTER TABLE files ADD COLUMN aspect REAL;
    ALTER TABLE files ADD COLUMN fps REAL;
    CREATE TABLE index_models (
        index_id TEXT PRIMARY KEY,
        models TEXT NOT NULL,
        read_at REAL NOT NULL
    );
    """,
    """
    ALTER TABLE files ADD COLUMN parent_id INTEGER REFERENCES files(id) ON DELETE CASCADE;
    ALTER TABLE files ADD COLUMN part INTEGER;
    ALTER TABLE files ADD COLUMN parts INTEGER;
    ALTER TABLE files ADD COLUMN offset_seconds REAL;
    CREATE INDEX files_parent ON files(parent_id) WHERE parent_id IS NOT NULL;
    """,
    """
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL,
        lease_seconds REAL NOT NULL,
        detail TEXT
    );
    ALTER TABLE files ADD COLUMN lease_host TEXT;
    ALTER TABLE files ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE chores ADD COLUMN lease_host TEXT;
    ALTER TABLE indexings ADD COLUMN lease_host TEXT;
    CREATE TABLE pace (
        family TEXT PRIMARY KEY,
        lim INTEGER,
        remaining INTEGER,
        reset_at REAL
    );
    """,
    """
    CREATE TRIGGER files_new AFTER INSERT ON files BEGIN
        INSERT INTO events (file_id, at, kind, old, new, detail)
        VALUES (NEW.id, NEW.updated_at, 'state', NULL, NEW.state, NEW.reason);
    END;
    CREATE TRIGGER files_moved AFTER UPDATE OF state ON files
    WHEN OLD.state IS NOT NEW.state BEGIN
        INSERT INTO events (file_id, at, kind, old, new, detail)
        VALUES (NEW.id, NEW.updated_at, 'state', OLD.state, NEW.state, NEW.reason);
    END;
    """,
]


# PostgreSQL (a fleet's store) starts at the schema SQLite reached by migration 9, in its own
# types: bytes are BYTEA, seconds DOUBLE PRECISION, counts and sizes BIGINT. A new migration is
# added to both lists. `tlwatch_schema` counts them; they run under an advisory lock.
PG_MIGRATIONS = [
    """
    CREATE TABLE files (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        root BYTEA NOT NULL,
        path BYTEA NOT NULL UNIQUE,
        dir BYTEA,
        size BIGINT NOT NULL,
        mtime_ns BIGINT NOT NULL,
        inode BIGINT NOT NULL,
        sha256 TEXT,
        mime TEXT,
        kind TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        asset_id TEXT,
        asset_status TEXT,
        duplicate_of BIGINT REFERENCES files(id) ON DELETE SET NULL,
        upload_token TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        upload_id TEXT,
        chunk_size BIGINT,
        total_chunks INTEGER,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        uploaded_at DOUBLE PRECISION,
        metadata TEXT,
        duration DOUBLE PRECISION,
        width INTEGER,
        height INTEGER,
        aspect DOUBLE PRECISION,
        fps DOUBLE PRECISION,
        parent_id BIGINT REFERENCES files(id) ON DELETE CASCADE,
        part INTEGER,
        parts INTEGER,
        offset_seconds DOUBLE PRECISION
    );
    CREATE INDEX files_state ON files(state, next_attempt_at NULLS FIRST, id);
    CREATE INDEX files_sha256 ON files(sha256);
    CREATE INDEX files_asset ON files(asset_id);
    CREATE INDEX files_dir ON files(dir);
    CREATE INDEX files_root_state ON files(root, state);
    CREATE INDEX files_parent ON files(parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX files_duplicate ON files(duplicate_of) WHERE duplicate_of IS NOT NULL;
    CREATE TABLE chunks (
        file_id BIGINT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        chunk_index INTEGER NOT NULL,
        etag TEXT NOT NULL,
        PRIMARY KEY (file_id, chunk_index)
    );
    CREATE TABLE events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        file_id BIGINT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        old TEXT,
        new TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_file ON events(file_id, at);
    CREATE TABLE folders (
        path BYTEA PRIMARY KEY,
        online INTEGER NOT NULL,
        reason TEXT,
        since DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE indexings (
        asset_id TEXT NOT NULL,
        index_id TEXT NOT NULL,
        file_id BIGINT REFERENCES files(id) ON DELETE SET NULL,
        state TEXT NOT NULL,
        indexed_asset_id TEXT,
        status TEXT,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION,
        rowid BIGINT GENERATED ALWAYS AS IDENTITY,  -- the order they came in, as SQLite's
        PRIMARY KEY (asset_id, index_id)
    );
    CREATE INDEX indexings_state ON indexings(state, next_attempt_at NULLS FIRST, rowid);
    CREATE TABLE sent (
        file_id BIGINT REFERENCES files(id) ON DELETE SET NULL,
        at DOUBLE PRECISION NOT NULL,
        duration DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX sent_at ON sent(at);
    CREATE TABLE chores (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        file_id BIGINT NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        asset_id TEXT NOT NULL,
        size BIGINT NOT NULL,
        mtime_ns BIGINT NOT NULL,
        inode BIGINT NOT NULL,
        detail TEXT,
        target BYTEA,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX chores_state ON chores(state, next_attempt_at NULLS FIRST, id);
    CREATE INDEX chores_file ON chores(file_id);
    CREATE TABLE remote_assets (
        sha256 TEXT PRIMARY KEY,
        asset_id TEXT NOT NULL,
        status TEXT NOT NULL
    );
    CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE index_models (
        index_id TEXT PRIMARY KEY,
        models TEXT NOT NULL,
        read_at DOUBLE PRECISION NOT NULL
    );
    """,
    """
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL,
        lease_seconds DOUBLE PRECISION NOT NULL,
        detail TEXT
    );
    ALTER TABLE files ADD COLUMN lease_host TEXT;
    ALTER TABLE files ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE chores ADD COLUMN lease_host TEXT;
    ALTER TABLE indexings ADD COLUMN lease_host TEXT;
    CREATE TABLE pace (
        family TEXT PRIMARY KEY,
        lim BIGINT,
        remaining BIGINT,
        reset_at DOUBLE PRECISION
    );
    """,
    """
    CREATE FUNCTION tlwatch_journal() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO events (file_id, at, kind, old, new, detail) VALUES (
            NEW.id, NEW.updated_at, 'state',
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, NEW.state, NEW.reason
        );
        RETURN NULL;
    END $$;
    CREATE TRIGGER files_new AFTER INSERT ON files
    FOR EACH ROW EXECUTE FUNCTION tlwatch_journal();
    CREATE TRIGGER files_moved AFTER UPDATE OF state ON files
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION tlwatch_journal();
    """,
]

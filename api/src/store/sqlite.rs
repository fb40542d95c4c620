//! The single-process job store: SQLite for jobs, their events and file records; file bytes
//! live beside it in `files/`. Everything a client was told survives a restart.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{
    CancelRequest, FileRecord, Insert, Job, Recovered, Status, StoreError, StoredEvent,
    TERMINAL_EVENTS, now_ms,
};
use crate::job_error::JobErrorCode;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    files_dir: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error_code TEXT,
    error_message TEXT,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    completed_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    request_hash TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_type TEXT NOT NULL,
    name TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_expiry ON files(expires_ms);
";

const JOB_COLUMNS: &str = "id, owner, status, input, output, error_code, error_message, \
                           created_ms, started_ms, completed_ms, attempts";

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Job, String, Option<String>)> {
    let input: String = row.get(3)?;
    let output: Option<String> = row.get(4)?;
    Ok((
        Job {
            id: row.get(0)?,
            owner: row.get(1)?,
            status: Status::parse(&row.get::<_, String>(2)?),
            input: Value::Null,
            output: None,
            error_code: row.get(5)?,
            error_message: row.get(6)?,
            created_ms: row.get(7)?,
            started_ms: row.get(8)?,
            completed_ms: row.get(9)?,
            attempts: row.get(10)?,
            model: None,
        },
        input,
        output,
    ))
}

fn finish_job((mut job, input, output): (Job, String, Option<String>)) -> Result<Job, StoreError> {
    job.input = serde_json::from_str(&input)?;
    job.output = output.map(|o| serde_json::from_str(&o)).transpose()?;
    Ok(job)
}

/// Adds a column that databases written by an older version lack.
fn add_column_if_missing(
    conn: &Connection,
    table: &str,
    column: &str,
    definition: &str,
) -> Result<(), StoreError> {
    let has: bool = conn.query_row(
        &format!("SELECT count(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {definition}"
        ))?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (or creates) `data_dir/letterpress.sqlite3` and `data_dir/files/`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let files_dir = data_dir.join("files");
        std::fs::create_dir_all(&files_dir).map_err(|source| StoreError::Io {
            path: files_dir.clone(),
            source,
        })?;
        let conn = Connection::open(data_dir.join("letterpress.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        add_column_if_missing(
            &conn,
            "jobs",
            "cancel_requested",
            "INTEGER NOT NULL DEFAULT 0",
        )?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            files_dir,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stored file's bytes; `None` when the file is gone.
    pub fn read_file(&self, record: &FileRecord) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.files_dir.join(&record.name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// After a crash: jobs that were being worked on go back to the queue once; a job
    /// interrupted a second time fails with `interrupted`; one whose cancel was requested is
    /// canceled. Says which jobs went where, so their events can be written.
    pub fn recover_interrupted(&self, max_attempts: u32) -> Result<Recovered, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let select = |condition: &str| -> Result<Vec<(String, u32)>, StoreError> {
            let mut stmt = tx.prepare(&format!(
                "SELECT id, attempts FROM jobs
                 WHERE status IN ('planning', 'rendering', 'running') AND {condition} ORDER BY seq"
            ))?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        let canceled = select("cancel_requested = 1")?;
        let failed = select(&format!(
            "cancel_requested = 0 AND attempts >= {max_attempts}"
        ))?;
        let requeued = select(&format!(
            "cancel_requested = 0 AND attempts < {max_attempts}"
        ))?;
        let now = now_ms();
        let mut recovered = Recovered::default();
        for (id, _) in canceled {
            tx.execute(
                "UPDATE jobs SET status = 'canceled', completed_ms = ?2, error_code = ?3,
                     error_message = 'canceled by the client' WHERE id = ?1",
                params![id, now, JobErrorCode::Canceled.as_str()],
            )?;
            recovered.canceled.push(id);
        }
        for (id, attempts) in failed {
            let message = format!(
                "the server stopped while this job ran, {attempts} time(s); it was not retried again"
            );
            tx.execute(
                "UPDATE jobs SET status = 'failed', error_code = ?3, error_message = ?4,
                     completed_ms = ?2 WHERE id = ?1",
                params![id, now, JobErrorCode::Interrupted.as_str(), message],
            )?;
            recovered.failed.push((id, message));
        }
        for (id, _) in requeued {
            tx.execute(
                "UPDATE jobs SET status = 'queued', started_ms = NULL WHERE id = ?1",
                [&id],
            )?;
            recovered.requeued.push(id);
        }
        tx.commit()?;
        Ok(recovered)
    }

    /// Inserts a queued job unless the queue holds `capacity` jobs already or the owner used
    /// this idempotency key before.
    pub fn insert_job(
        &self,
        job: &Job,
        idempotency: Option<(&str, &str)>,
        capacity: usize,
    ) -> Result<Insert, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some((key, _)) = idempotency {
            let existing: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT id, request_hash FROM jobs WHERE owner = ?1 AND idempotency_key = ?2",
                    params![job.owner, key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, hash)) = existing {
                return Ok(Insert::Existing {
                    id,
                    request_hash: hash.unwrap_or_default(),
                });
            }
        }
        let queued: i64 = tx.query_row(
            "SELECT count(*) FROM jobs WHERE status = 'queued'",
            [],
            |r| r.get(0),
        )?;
        let queued = queued as usize;
        if queued >= capacity {
            return Ok(Insert::QueueFull { queued });
        }
        tx.execute(
            "INSERT INTO jobs (id, owner, status, input, created_ms, attempts, idempotency_key, request_hash)
             VALUES (?1, ?2, 'queued', ?3, ?4, 0, ?5, ?6)",
            params![
                job.id,
                job.owner,
                serde_json::to_string(&job.input)?,
                job.created_ms,
                idempotency.map(|(k, _)| k),
                idempotency.map(|(_, h)| h),
            ],
        )?;
        tx.commit()?;
        Ok(Insert::Created)
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_from_row,
            )
            .optional()?;
        row.map(finish_job).transpose()
    }

    /// Takes the oldest queued job and marks it `planning`.
    pub fn claim_next(&self) -> Result<Option<Job>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row = tx
            .query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
                ),
                [],
                job_from_row,
            )
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut job = finish_job(row)?;
        let now = now_ms();
        tx.execute(
            "UPDATE jobs SET status = 'planning', started_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![job.id, now],
        )?;
        tx.commit()?;
        job.status = Status::Planning;
        job.started_ms = Some(now);
        job.attempts += 1;
        Ok(Some(job))
    }

    pub fn set_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE jobs SET status = ?2 WHERE id = ?1",
            params![id, status.as_str()],
        )?;
        Ok(())
    }

    /// Records the end of a job and answers the status it ended in: a cancel requested while
    /// it ran wins over `status` (the client was told the job would end canceled).
    pub fn finish(
        &self,
        id: &str,
        status: Status,
        output: Option<&Value>,
        error: Option<(&str, &str)>,
    ) -> Result<Status, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let canceled = cancel_requested(&tx, id)? && status != Status::Canceled;
        let (status, output, error) = if canceled {
            let error = (JobErrorCode::Canceled.as_str(), "canceled by the client");
            (Status::Canceled, None, Some(error))
        } else {
            (status, output, error)
        };
        tx.execute(
            "UPDATE jobs SET status = ?2, output = ?3, error_code = ?4, error_message = ?5, completed_ms = ?6
             WHERE id = ?1",
            params![
                id,
                status.as_str(),
                output.map(serde_json::to_string).transpose()?,
                error.map(|e| e.0),
                error.map(|e| e.1),
                now_ms(),
            ],
        )?;
        tx.commit()?;
        Ok(status)
    }

    /// Puts an interrupted job back at the head of the queue (it keeps its place by `seq`),
    /// or cancels it when a cancel was requested; answers the status it is left in.
    pub fn requeue(&self, id: &str) -> Result<Status, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if cancel_requested(&tx, id)? {
            drop(tx);
            drop(conn);
            let error = Some((JobErrorCode::Canceled.as_str(), "canceled by the client"));
            return self.finish(id, Status::Canceled, None, error);
        }
        tx.execute(
            "UPDATE jobs SET status = 'queued', started_ms = NULL WHERE id = ?1",
            [id],
        )?;
        tx.commit()?;
        Ok(Status::Queued)
    }

    /// Cancels a queued job at once, or marks a running one so that it ends `canceled`; in
    /// one transaction, so the answer is how the job will end. `None` for an unknown job.
    pub fn request_cancel(&self, id: &str) -> Result<Option<CancelRequest>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let status: Option<String> = tx
            .query_row("SELECT status FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        let Some(status) = status.map(|s| Status::parse(&s)) else {
            return Ok(None);
        };
        let answer = match status {
            Status::Queued => {
                tx.execute(
                    "UPDATE jobs SET status = 'canceled', completed_ms = ?2, error_code = ?3,
                         error_message = 'canceled by the client before it started'
                     WHERE id = ?1",
                    params![id, now_ms(), JobErrorCode::Canceled.as_str()],
                )?;
                CancelRequest::CanceledQueued
            }
            s if s.is_terminal() => CancelRequest::AlreadyEnded(s),
            _ => {
                tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])?;
                CancelRequest::WillStop
            }
        };
        tx.commit()?;
        Ok(Some(answer))
    }

    /// Whether a cancel was requested for this job (the worker reads it when it starts one).
    pub fn is_cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        cancel_requested(&self.conn(), id)
    }

    pub fn queued_count(&self) -> Result<usize, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM jobs WHERE status = 'queued'",
            [],
            |r| r.get(0),
        )?;
        Ok(n as usize)
    }

    pub fn counts_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT status, count(*) FROM jobs GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts: Vec<(Status, u64)> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let (status, n) = row?;
            let status = Status::parse(&status);
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == status) {
                c.1 += n as u64;
            }
        }
        Ok(counts)
    }

    /// Appends an event and returns its sequence number (1-based per job).
    pub fn add_event(&self, job_id: &str, kind: &str, data: &Value) -> Result<i64, StoreError> {
        let conn = self.conn();
        let seq = next_event_seq(&conn, job_id)?;
        conn.execute(
            "INSERT INTO events (job_id, seq, kind, data) VALUES (?1, ?2, ?3, ?4)",
            params![job_id, seq, kind, serde_json::to_string(data)?],
        )?;
        Ok(seq)
    }

    /// Appends the terminal event `kind` unless the job has one already; its sequence
    /// number when it was added. For a job that ended without one (a database from a version
    /// that did not write it, or an event that failed to store).
    pub fn add_terminal_event_if_missing(
        &self,
        job_id: &str,
        kind: &str,
        data: &Value,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let has: bool = tx.query_row(
            "SELECT count(*) > 0 FROM events WHERE job_id = ?1 AND kind IN (?2, ?3, ?4)",
            params![
                job_id,
                TERMINAL_EVENTS[0],
                TERMINAL_EVENTS[1],
                TERMINAL_EVENTS[2]
            ],
            |r| r.get(0),
        )?;
        if has {
            return Ok(None);
        }
        let seq = next_event_seq(&tx, job_id)?;
        tx.execute(
            "INSERT INTO events (job_id, seq, kind, data) VALUES (?1, ?2, ?3, ?4)",
            params![job_id, seq, kind, serde_json::to_string(data)?],
        )?;
        tx.commit()?;
        Ok(Some(seq))
    }

    pub fn events_after(&self, job_id: &str, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, kind, data FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![job_id, after], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, kind, data) = row?;
            events.push(StoredEvent {
                seq,
                kind,
                data: serde_json::from_str(&data)?,
            });
        }
        Ok(events)
    }

    /// Writes `bytes` to `files/NAME` and records it.
    pub fn put_file(&self, record: &FileRecord, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.files_dir.join(&record.name);
        // Write then rename, so a reader never sees half a file.
        let tmp = self.files_dir.join(format!(".{}.tmp", record.name));
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        self.conn().execute(
            "INSERT INTO files (id, job_id, owner, kind, content_type, name, bytes, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                record.id,
                record.job_id,
                record.owner,
                record.kind,
                record.content_type,
                record.name,
                record.bytes,
                record.created_ms,
                record.expires_ms
            ],
        )?;
        Ok(())
    }

    pub fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, job_id, owner, kind, content_type, name, bytes, created_ms, expires_ms
                 FROM files WHERE id = ?1",
                [id],
                |r| {
                    Ok(FileRecord {
                        id: r.get(0)?,
                        job_id: r.get(1)?,
                        owner: r.get(2)?,
                        kind: r.get(3)?,
                        content_type: r.get(4)?,
                        name: r.get(5)?,
                        bytes: r.get(6)?,
                        created_ms: r.get(7)?,
                        expires_ms: r.get(8)?,
                    })
                },
            )
            .optional()?)
    }

    /// Deletes files whose TTL has passed (bytes and records); returns how many.
    pub fn delete_expired_files(&self, now: i64) -> Result<usize, StoreError> {
        let names: Vec<(String, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id, name FROM files WHERE expires_ms <= ?1")?;
            let rows = stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, name) in &names {
            let path = self.files_dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path, source }),
            }
            self.conn()
                .execute("DELETE FROM files WHERE id = ?1", [id])?;
        }
        Ok(names.len())
    }
}

fn next_event_seq(conn: &Connection, job_id: &str) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT coalesce(max(seq), 0) + 1 FROM events WHERE job_id = ?1",
        [job_id],
        |r| r.get(0),
    )?)
}

fn cancel_requested(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT cancel_requested FROM jobs WHERE id = ?1",
            [id],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        == Some(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job::queued(
            id.into(),
            "anonymous".into(),
            serde_json::json!({"prompt": "x"}),
        )
    }

    fn temp_store(name: &str) -> (SqliteStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("lp-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (SqliteStore::open(&dir).unwrap(), dir)
    }

    #[test]
    fn queue_bound_idempotency_and_crash_recovery() {
        let (store, dir) = temp_store("queue");
        assert!(matches!(
            store.insert_job(&job("a"), Some(("k", "h1")), 2).unwrap(),
            Insert::Created
        ));
        assert!(matches!(
            store.insert_job(&job("b"), None, 2).unwrap(),
            Insert::Created
        ));
        assert!(matches!(
            store.insert_job(&job("c"), None, 2).unwrap(),
            Insert::QueueFull { queued: 2 }
        ));
        match store.insert_job(&job("d"), Some(("k", "h2")), 2).unwrap() {
            Insert::Existing { id, request_hash } => {
                assert_eq!((id.as_str(), request_hash.as_str()), ("a", "h1"))
            }
            _ => panic!("idempotency key ignored"),
        }
        let claimed = store.claim_next().unwrap().unwrap();
        assert_eq!((claimed.id.as_str(), claimed.attempts), ("a", 1));
        drop(store);
        // The process "died" with `a` running: reopening requeues it once.
        let store = SqliteStore::open(&dir).unwrap();
        let recovered = store.recover_interrupted(2).unwrap();
        assert_eq!(recovered.requeued, ["a"]);
        assert!(recovered.failed.is_empty() && recovered.canceled.is_empty());
        assert_eq!(store.claim_next().unwrap().unwrap().id, "a");
        let recovered = store.recover_interrupted(2).unwrap();
        assert_eq!(recovered.failed.len(), 1);
        assert_eq!(recovered.failed[0].0, "a");
        let a = store.job("a").unwrap().unwrap();
        assert_eq!(
            (a.status, a.error_code.as_deref()),
            (Status::Failed, Some("interrupted"))
        );
        // A job whose cancel was requested when the process died ends canceled.
        assert_eq!(store.claim_next().unwrap().unwrap().id, "b");
        assert_eq!(
            store.request_cancel("b").unwrap(),
            Some(CancelRequest::WillStop)
        );
        assert_eq!(store.recover_interrupted(2).unwrap().canceled, ["b"]);
        assert_eq!(store.job("b").unwrap().unwrap().status, Status::Canceled);
    }

    #[test]
    fn a_requested_cancel_wins_over_the_outcome() {
        let (store, _dir) = temp_store("cancel");
        for id in ["a", "b", "c"] {
            store.insert_job(&job(id), None, 8).unwrap();
        }
        assert_eq!(
            store.request_cancel("a").unwrap(),
            Some(CancelRequest::CanceledQueued)
        );
        assert_eq!(store.request_cancel("zz").unwrap(), None);
        // b runs; the cancel arrives before it finishes: the success is recorded as canceled.
        assert_eq!(store.claim_next().unwrap().unwrap().id, "b");
        assert_eq!(
            store.request_cancel("b").unwrap(),
            Some(CancelRequest::WillStop)
        );
        assert!(store.is_cancel_requested("b").unwrap());
        let output = serde_json::json!({"images": []});
        assert_eq!(
            store
                .finish("b", Status::Succeeded, Some(&output), None)
                .unwrap(),
            Status::Canceled
        );
        let b = store.job("b").unwrap().unwrap();
        assert_eq!((b.status, b.output), (Status::Canceled, None));
        // c finished first: the cancel comes too late and changes nothing.
        assert_eq!(store.claim_next().unwrap().unwrap().id, "c");
        store
            .finish("c", Status::Succeeded, Some(&output), None)
            .unwrap();
        assert_eq!(
            store.request_cancel("c").unwrap(),
            Some(CancelRequest::AlreadyEnded(Status::Succeeded))
        );
        assert_eq!(store.job("c").unwrap().unwrap().status, Status::Succeeded);
    }

    #[test]
    fn a_missing_terminal_event_is_added_once() {
        let (store, _dir) = temp_store("terminal");
        store
            .add_event("a", "queued", &serde_json::json!({}))
            .unwrap();
        let data = serde_json::json!({"error": {"code": "interrupted"}});
        assert_eq!(
            store
                .add_terminal_event_if_missing("a", "failed", &data)
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            store
                .add_terminal_event_if_missing("a", "failed", &data)
                .unwrap(),
            None
        );
        let kinds: Vec<String> = store
            .events_after("a", 0)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["queued", "failed"]);
    }

    #[test]
    fn files_expire() {
        let (store, dir) = temp_store("files");
        let record = FileRecord {
            id: "file_1".into(),
            job_id: "a".into(),
            owner: "anonymous".into(),
            kind: "mask".into(),
            content_type: "image/png".into(),
            name: "file_1.png".into(),
            bytes: 3,
            created_ms: 0,
            expires_ms: 10,
        };
        store.put_file(&record, b"png").unwrap();
        assert!(dir.join("files/file_1.png").exists());
        assert_eq!(store.delete_expired_files(5).unwrap(), 0);
        assert_eq!(store.delete_expired_files(10).unwrap(), 1);
        assert!(store.file("file_1").unwrap().is_none());
        assert!(!dir.join("files/file_1.png").exists());
    }
}

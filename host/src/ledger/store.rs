//! The ledger: an embedded SQLite database, created on first use, holding identities,
//! standings (reputation, calibration), rewards and every round's transcript.

use super::transcript::Transcript;
use crate::consensus::scoring::{ReputationParams, Standing};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("round {0} is not in the ledger")]
    NoSuchRound(String),
    #[error("round {id} in the ledger is unreadable: {message}")]
    Corrupt { id: String, message: String },
}

pub struct Ledger {
    db: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS domain_standings (
    key TEXT NOT NULL,
    domain TEXT NOT NULL,
    reputation REAL NOT NULL,
    calibration_correct INTEGER NOT NULL,
    calibration_total INTEGER NOT NULL,
    known TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (key, domain)
);
CREATE TABLE IF NOT EXISTS rounds (
    id TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    transcript TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rewards (
    round TEXT NOT NULL REFERENCES rounds(id),
    key TEXT NOT NULL,
    points REAL NOT NULL,
    PRIMARY KEY (round, key)
);
";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn put_standing(db: &Connection, key: &str, domain: &str, s: &Standing) -> Result<(), LedgerError> {
    let known = if s.known.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&s.known)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
    };
    db.execute(
        "INSERT INTO domain_standings (key, domain, reputation, calibration_correct, calibration_total, known) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(key, domain) DO UPDATE SET reputation = ?3, calibration_correct = ?4, calibration_total = ?5, known = ?6",
        params![key, domain, s.reputation, s.calibration_correct, s.calibration_total, known],
    )?;
    Ok(())
}

impl Ledger {
    /// Open (or create) `<dir>/ledger.sqlite`.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let db = Connection::open(dir.join("ledger.sqlite"))?;
        db.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")?;
        Self::prepare(db)
    }

    /// A ledger that lives only as long as this value (simulated nodes).
    pub fn in_memory() -> Result<Ledger, LedgerError> {
        Self::prepare(Connection::open_in_memory()?)
    }

    /// The schema, and the columns later versions added to a ledger made before them.
    fn prepare(db: Connection) -> Result<Ledger, LedgerError> {
        db.execute_batch(SCHEMA)?;
        let has_known = db
            .prepare("SELECT 1 FROM pragma_table_info('domain_standings') WHERE name = 'known'")?
            .exists([])?;
        if !has_known {
            db.execute_batch(
                "ALTER TABLE domain_standings ADD COLUMN known TEXT NOT NULL DEFAULT ''",
            )?;
        }
        Ok(Ledger { db })
    }

    pub fn remember_identity(&self, id: &str) -> Result<(), LedgerError> {
        self.db.execute(
            "INSERT OR IGNORE INTO identities (id, first_seen) VALUES (?1, ?2)",
            params![id, now()],
        )?;
        Ok(())
    }

    /// A member's standing in `domain` (see `round::domain_of`): reputation is earned
    /// and spent per domain, and a member new to a domain starts there as anyone does.
    pub fn standing(
        &self,
        key: &str,
        domain: &str,
        p: &ReputationParams,
    ) -> Result<Standing, LedgerError> {
        Ok(self
            .db
            .query_row(
                "SELECT reputation, calibration_correct, calibration_total, known FROM domain_standings WHERE key = ?1 AND domain = ?2",
                params![key, domain],
                |r| {
                    let known: String = r.get(3)?;
                    Ok(Standing {
                        reputation: r.get(0)?,
                        calibration_correct: r.get(1)?,
                        calibration_total: r.get(2)?,
                        // '' in rows from before known-answer rounds: no record yet.
                        known: serde_json::from_str(&known).unwrap_or_default(),
                    })
                },
            )
            .optional()?
            .unwrap_or_else(|| Standing::new(p)))
    }

    pub fn set_standing(&self, key: &str, domain: &str, s: &Standing) -> Result<(), LedgerError> {
        put_standing(&self.db, key, domain, s)
    }

    /// Store a round: its transcript, its rewards, and the members' new standings, at once.
    pub fn record(&mut self, t: &Transcript) -> Result<(), LedgerError> {
        let tx = self.db.transaction()?;
        let json = serde_json::to_string(t)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.execute(
            "INSERT INTO rounds (id, created, prompt, transcript) VALUES (?1, ?2, ?3, ?4)",
            params![t.id, now(), t.prompt, json],
        )?;
        for (a, points) in t.answers.iter().zip(&t.result.payload.rewards) {
            if let Some(m) = t.members.get(a.payload.member) {
                tx.execute(
                    "INSERT INTO rewards (round, key, points) VALUES (?1, ?2, ?3)
                     ON CONFLICT(round, key) DO UPDATE SET points = points + ?3",
                    params![t.id, m.key, points],
                )?;
            }
        }
        for (m, s) in t.members.iter().zip(&t.result.payload.after) {
            put_standing(&tx, &m.key, &t.domain, s)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn round(&self, id: &str) -> Result<Transcript, LedgerError> {
        let json: String = self
            .db
            .query_row(
                "SELECT transcript FROM rounds WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| LedgerError::NoSuchRound(id.to_string()))?;
        serde_json::from_str(&json).map_err(|e| LedgerError::Corrupt {
            id: id.to_string(),
            message: e.to_string(),
        })
    }

    /// Most recent rounds first: (id, created, prompt).
    pub fn rounds(&self, limit: usize) -> Result<Vec<(String, i64, String)>, LedgerError> {
        let mut stmt = self
            .db
            .prepare("SELECT id, created, prompt FROM rounds ORDER BY created DESC, id LIMIT ?1")?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn total_rewards(&self, key: &str) -> Result<f64, LedgerError> {
        Ok(self.db.query_row(
            "SELECT COALESCE(SUM(points), 0) FROM rewards WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )?)
    }

    /// For tests and forensics: overwrite a stored transcript as-is.
    pub fn overwrite_transcript(&self, id: &str, json: &str) -> Result<(), LedgerError> {
        self.db.execute(
            "UPDATE rounds SET transcript = ?2 WHERE id = ?1",
            params![id, json],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::identity::NodeKey;

    #[test]
    fn records_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::generate();
        let t = crate::ledger::transcript::tests::sample(&key);
        {
            let mut l = Ledger::open(dir.path()).unwrap();
            l.remember_identity(&key.id()).unwrap();
            l.record(&t).unwrap();
            assert!(l.record(&t).is_err(), "a round id is recorded once");
        }
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.round("r1").unwrap(), t);
        assert!(matches!(l.round("nope"), Err(LedgerError::NoSuchRound(_))));
        let p = ReputationParams::default();
        assert_eq!(
            l.standing(&t.members[0].key, &t.domain, &p).unwrap(),
            t.result.payload.after[0]
        );
        // Reputation is per domain: the same member elsewhere starts fresh.
        assert_ne!(t.result.payload.after[0], Standing::new(&p));
        assert_eq!(
            l.standing(&t.members[0].key, "elsewhere", &p).unwrap(),
            Standing::new(&p)
        );
        assert_eq!(
            l.standing("unknown", &t.domain, &p).unwrap(),
            Standing::new(&p)
        );
        assert!(l.total_rewards(&t.members[0].key).unwrap() > 0.0);
        assert_eq!(l.rounds(10).unwrap().len(), 1);
    }

    #[test]
    fn known_answer_records_persist_and_old_ledgers_gain_the_column() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A ledger from before known-answer rounds.
            let db = Connection::open(dir.path().join("ledger.sqlite")).unwrap();
            db.execute_batch(&SCHEMA.replace("    known TEXT NOT NULL DEFAULT '',\n", ""))
                .unwrap();
            db.execute(
                "INSERT INTO domain_standings VALUES ('old', 'choice', 0.7, 5, 5)",
                [],
            )
            .unwrap();
        }
        let l = Ledger::open(dir.path()).unwrap();
        let p = ReputationParams::default();
        let old = l.standing("old", "choice", &p).unwrap();
        assert_eq!((old.reputation, old.known), (0.7, Default::default()));
        let mut s = Standing::new(&p);
        s.known.record(true, Some(&[0.3, -1.0, 2.0]), 2);
        l.set_standing("new", "choice", &s).unwrap();
        assert_eq!(l.standing("new", "choice", &p).unwrap(), s);
        drop(l);
        let again = Ledger::open(dir.path()).unwrap();
        assert_eq!(again.standing("new", "choice", &p).unwrap(), s);
    }
}

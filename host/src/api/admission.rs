//! How many chat requests a node works on at once.
//!
//! Why: every chat request starts a round, and a round costs this node's plugins and its
//! peers' time. Without a door a burst of requests starts as many rounds as arrive, each
//! slower than the last, until every one misses its deadlines. So at most `max_rounds` run;
//! up to `queue` more wait their turn in arrival order; past that a request is told at once
//! to come back later (HTTP 429 with `Retry-After`), which is what OpenAI's SDKs expect and
//! retry on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The operator's limits (`run --max-rounds`, `--queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Rounds started through the API that run at once.
    pub max_rounds: usize,
    /// Requests that may wait for a slot beyond those.
    pub queue: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_rounds: 4,
            queue: 16,
        }
    }
}

/// Held while a round runs; the slot frees when it drops.
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    running: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every slot taken and the queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub running: usize,
    pub waiting: usize,
}

/// The door: shared by every handler of one node's API.
#[derive(Clone)]
pub struct Door {
    limits: Admission,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

impl Door {
    pub fn new(limits: Admission) -> Door {
        let limits = Admission {
            max_rounds: limits.max_rounds.max(1),
            ..limits
        };
        Door {
            slots: Arc::new(Semaphore::new(limits.max_rounds)),
            waiting: Arc::new(AtomicUsize::new(0)),
            running: Arc::new(AtomicUsize::new(0)),
            limits,
        }
    }

    /// A slot now, a place in the queue, or `Busy` at once.
    pub async fn enter(&self) -> Result<Ticket, Busy> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
                if queued >= self.limits.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Busy {
                        running: self.running(),
                        waiting: queued,
                    });
                }
                // A waiter whose client goes away is dropped here, and so leaves the queue.
                let left = Leave(&self.waiting);
                let p = self.slots.clone().acquire_owned().await;
                drop(left);
                // The semaphore is never closed.
                p.map_err(|_| Busy {
                    running: 0,
                    waiting: 0,
                })?
            }
        };
        self.running.fetch_add(1, Ordering::SeqCst);
        Ok(Ticket {
            _permit: permit,
            running: self.running.clone(),
        })
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn limits(&self) -> Admission {
        self.limits
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_then_queue_then_busy() {
        let door = Door::new(Admission {
            max_rounds: 2,
            queue: 1,
        });
        let a = door.enter().await.unwrap();
        let _b = door.enter().await.unwrap();
        assert_eq!(door.running(), 2);
        let d = door.clone();
        let queued = tokio::spawn(async move { d.enter().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(door.waiting(), 1);
        assert_eq!(
            door.enter().await.err(),
            Some(Busy {
                running: 2,
                waiting: 1
            })
        );
        drop(a);
        queued.await.unwrap().unwrap();
        assert_eq!(door.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let door = Door::new(Admission {
            max_rounds: 1,
            queue: 1,
        });
        let _a = door.enter().await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(30), door.enter()).await;
        assert!(gave_up.is_err());
        assert_eq!(door.waiting(), 0);
        assert!(
            tokio::time::timeout(Duration::from_millis(30), door.enter())
                .await
                .is_err(),
            "the queue has room again, so this one waits rather than being refused"
        );
    }
}

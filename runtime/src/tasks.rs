//! Long-lived tasks with names: each returns `Result<(), TaskError>`, and the set reports
//! one that ends as "task `ingest` stopped: <why>" (returned, failed with its error, or
//! panicked with its message), so a log line or an exit error says which task and why.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};

/// Why a task failed: any error, kept whole for its chain of causes.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A set of named tasks (a [`JoinSet`] that remembers each task's name).
#[derive(Debug, Default)]
pub struct Tasks {
    set: JoinSet<Result<(), TaskError>>,
    names: HashMap<Id, Cow<'static, str>>,
}

/// How a task ended.
#[derive(Debug)]
pub enum Why {
    /// It returned `Ok(())`.
    Returned,
    /// It returned an error.
    Failed(TaskError),
    /// It panicked, with this message.
    Panicked(String),
    /// It was aborted.
    Cancelled,
}

/// A task that ended, by name.
#[derive(Debug)]
pub struct Stopped {
    pub name: Cow<'static, str>,
    pub why: Why,
}

impl Stopped {
    /// Whether it ended by returning `Ok(())`.
    pub fn returned(&self) -> bool {
        matches!(self.why, Why::Returned)
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Returned => f.write_str("it returned"),
            Why::Failed(e) => {
                write!(f, "{e}")?;
                let mut source = e.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Why::Panicked(message) => write!(f, "it panicked: {message}"),
            Why::Cancelled => f.write_str("it was cancelled"),
        }
    }
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task `{}` stopped: {}", self.name, self.why)
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task` on the current runtime under `name`.
    pub fn spawn<F>(&mut self, name: impl Into<Cow<'static, str>>, task: F)
    where
        F: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name.into());
    }

    /// The next task to end, or `None` when none is left.
    pub async fn join_next(&mut self) -> Option<Stopped> {
        let ended = self.set.join_next_with_id().await?;
        let (id, why) = match ended {
            Ok((id, Ok(()))) => (id, Why::Returned),
            Ok((id, Err(e))) => (id, Why::Failed(e)),
            Err(e) => (e.id(), join_error(e)),
        };
        let name = self.names.remove(&id).unwrap_or(Cow::Borrowed("(unnamed)"));
        Some(Stopped { name, why })
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

fn join_error(e: JoinError) -> Why {
    if e.is_cancelled() {
        return Why::Cancelled;
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    Why::Panicked(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the link failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[tokio::test]
    async fn each_task_is_reported_by_name_with_its_reason() {
        let mut tasks = Tasks::new();
        tasks.spawn("ingest", async {
            Err(Outer(std::io::Error::other("broker gone")).into())
        });
        let mut stopped = tasks.join_next().await.expect("one task");
        assert_eq!(
            stopped.to_string(),
            "task `ingest` stopped: the link failed: broker gone"
        );
        assert!(!stopped.returned());

        tasks.spawn("core", async { Ok(()) });
        stopped = tasks.join_next().await.expect("one task");
        assert_eq!(stopped.to_string(), "task `core` stopped: it returned");
        assert!(stopped.returned());

        tasks.spawn(String::from("outputs/webhook-0"), async {
            #[allow(clippy::panic)]
            if true {
                panic!("bad state");
            }
            Ok(())
        });
        stopped = tasks.join_next().await.expect("one task");
        assert_eq!(
            stopped.to_string(),
            "task `outputs/webhook-0` stopped: it panicked: bad state"
        );
        assert!(tasks.is_empty() && tasks.join_next().await.is_none());
    }
}

//! One scheduler for everything cron-driven (database backups; workflows and
//! certificate renewals register jobs the same way). Jobs are keyed by an id and
//! replaced when a revision changes them; times are the host's local time; a job still
//! running when it is due again skips that run, and the skip is published.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Local};
use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use super::events::{Bus, Event};
use crate::manifest::units::Cron;

pub use super::events::JobId;

/// What a job does when due.
pub type JobRun = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A job to schedule.
#[derive(Clone)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// When it is due (host local time).
    pub schedule: Cron,
    /// What it does.
    pub run: JobRun,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

/// The wall clock the schedules are read against.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The host's local time.
    System,
    /// Tests: `wall` at `at`, moving as Tokio's (pausable) clock does.
    Fixed {
        /// The local time at `at`.
        wall: DateTime<Local>,
        /// When it was that time.
        at: Instant,
    },
}

impl Clock {
    /// A clock reading `wall` now and following Tokio's time from here (tests).
    pub fn starting_at(wall: DateTime<Local>) -> Clock {
        Clock::Fixed {
            wall,
            at: Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Local> {
        match self {
            Clock::System => Local::now(),
            Clock::Fixed { wall, at } => {
                *wall
                    + chrono::Duration::from_std(Instant::now() - *at)
                        .unwrap_or(chrono::Duration::zero())
            }
        }
    }
}

struct Entry {
    schedule: Cron,
    run: JobRun,
    running: Arc<AtomicBool>,
}

#[derive(Default)]
struct Jobs {
    entries: BTreeMap<JobId, Entry>,
    skipped: BTreeMap<JobId, u64>,
    runs: BTreeMap<JobId, u64>,
}

/// The scheduler: a cheap handle; [`Scheduler::run`] is its loop.
#[derive(Clone)]
pub struct Scheduler {
    jobs: Arc<Mutex<Jobs>>,
    changed: Arc<Notify>,
    clock: Clock,
    bus: Bus,
}

impl Scheduler {
    /// A scheduler with no jobs, reading times from `clock`, publishing skips on `bus`.
    pub fn new(clock: Clock, bus: Bus) -> Scheduler {
        Scheduler {
            jobs: Arc::default(),
            changed: Arc::new(Notify::new()),
            clock,
            bus,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `jobs` the jobs for `purpose`: others of that purpose are removed, a job
    /// whose schedule changed is replaced, a run under way finishes.
    pub fn set(&self, purpose: &'static str, jobs: Vec<Job>) {
        let mut changed = false;
        {
            let mut all = self.lock();
            let before = all.entries.len();
            let wanted: Vec<&JobId> = jobs.iter().map(|j| &j.id).collect();
            all.entries
                .retain(|id, _| id.purpose() != purpose || wanted.contains(&id));
            changed |= all.entries.len() != before;
            for job in jobs {
                let running = match all.entries.get(&job.id) {
                    Some(e) => {
                        changed |= e.schedule != job.schedule;
                        e.running.clone()
                    }
                    None => {
                        changed = true;
                        Arc::default()
                    }
                };
                all.entries.insert(
                    job.id,
                    Entry {
                        schedule: job.schedule,
                        run: job.run,
                        running,
                    },
                );
            }
        }
        if changed {
            self.changed.notify_one();
        }
    }

    /// The ids of the jobs scheduled.
    pub fn ids(&self) -> Vec<JobId> {
        self.lock().entries.keys().cloned().collect()
    }

    /// How often `id` was started.
    pub fn runs(&self, id: &JobId) -> u64 {
        self.lock().runs.get(id).copied().unwrap_or(0)
    }

    /// How often `id` was due while still running, and skipped.
    pub fn skipped(&self, id: &JobId) -> u64 {
        self.lock().skipped.get(id).copied().unwrap_or(0)
    }

    /// Runs jobs when due, until the task is dropped.
    pub async fn run(self) {
        // The last time jobs were started: never start the same occurrence twice,
        // even if the clock reads a little early after the sleep.
        let mut last: Option<DateTime<Local>> = None;
        loop {
            let now = self.clock.now();
            let from = last.map_or(now, |l| l.max(now));
            let next = {
                let all = self.lock();
                all.entries
                    .values()
                    .filter_map(|e| {
                        e.schedule
                            .schedule()
                            .find_next_occurrence(&from, false)
                            .ok()
                    })
                    .min()
            };
            let Some(at) = next else {
                self.changed.notified().await;
                continue;
            };
            let wait = (at - now).to_std().unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified() => continue,
            }
            last = Some(at);
            self.start_due(&from, at);
        }
    }

    /// Starts every job due at `at` (the next occurrence after `from`).
    fn start_due(&self, from: &DateTime<Local>, at: DateTime<Local>) {
        let mut all = self.lock();
        let due: Vec<(JobId, JobRun, Arc<AtomicBool>)> = all
            .entries
            .iter()
            .filter(|(_, e)| {
                e.schedule.schedule().find_next_occurrence(from, false).ok() == Some(at)
            })
            .map(|(id, e)| (id.clone(), e.run.clone(), e.running.clone()))
            .collect();
        for (id, run, running) in due {
            if running.swap(true, Ordering::SeqCst) {
                warn!(job = %id, "still running when due again: this run is skipped");
                *all.skipped.entry(id.clone()).or_default() += 1;
                self.bus.publish(Event::JobSkipped { job: id });
                continue;
            }
            info!(job = %id, "due");
            *all.runs.entry(id).or_default() += 1;
            tokio::spawn(async move {
                run().await;
                running.store(false, Ordering::SeqCst);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{ResourceId, ResourceKind};
    use chrono::TimeZone;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    fn id(name: &str) -> JobId {
        JobId::backup(ResourceId::new(ResourceKind::Database, name))
    }

    /// A job counting its runs, each taking `takes`.
    fn counting(name: &str, cron: &str, takes: Duration) -> (Job, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let job = Job {
            id: id(name),
            schedule: cron.parse().unwrap(),
            run: Arc::new(move || {
                let c = c.clone();
                Box::pin(async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(takes).await;
                })
            }),
        };
        (job, count)
    }

    /// Lets the scheduler's tasks run, then moves time on by `secs`.
    async fn pass_time(secs: u64) {
        for _ in 0..secs {
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    }

    fn start(bus: &Bus) -> Scheduler {
        // 03:00:30 local time.
        let wall = Local.with_ymd_and_hms(2026, 3, 10, 3, 0, 30).unwrap();
        let scheduler = Scheduler::new(Clock::starting_at(wall), bus.clone());
        tokio::spawn(scheduler.clone().run());
        scheduler
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_run_when_due_in_local_time() {
        let s = start(&Bus::new());
        let (every_minute, minutely) = counting("a", "* * * * *", Duration::from_secs(1));
        let (at_four, daily) = counting("b", "0 4 * * *", Duration::from_secs(1));
        s.set("backup", vec![every_minute, at_four]);
        pass_time(29).await;
        assert_eq!(minutely.load(Ordering::SeqCst), 0, "not before 03:01");
        pass_time(2).await;
        assert_eq!(minutely.load(Ordering::SeqCst), 1, "at 03:01");
        pass_time(60).await;
        assert_eq!(minutely.load(Ordering::SeqCst), 2, "at 03:02");
        assert_eq!(daily.load(Ordering::SeqCst), 0);
        pass_time(58 * 60).await;
        assert_eq!(daily.load(Ordering::SeqCst), 1, "at 04:00");
        assert_eq!(minutely.load(Ordering::SeqCst), 60);
        assert_eq!(s.runs(&id("a")), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revision_replaces_and_removes_jobs() {
        let s = start(&Bus::new());
        let (job, first) = counting("a", "* * * * *", Duration::from_secs(1));
        s.set("backup", vec![job]);
        pass_time(31).await;
        assert_eq!(first.load(Ordering::SeqCst), 1);
        // The next revision makes it hourly: the old schedule is gone.
        let (job, second) = counting("a", "0 * * * *", Duration::from_secs(1));
        s.set("backup", vec![job]);
        pass_time(5 * 60).await;
        assert_eq!(first.load(Ordering::SeqCst), 1);
        assert_eq!(second.load(Ordering::SeqCst), 0);
        pass_time(55 * 60).await;
        assert_eq!(second.load(Ordering::SeqCst), 1, "at 04:00");
        // Then the database loses its backup: nothing runs any more.
        s.set("backup", vec![]);
        assert!(s.ids().is_empty());
        pass_time(2 * 3600).await;
        assert_eq!(second.load(Ordering::SeqCst), 1);
        // Jobs of another purpose are not touched by a backup revision.
        let (mut other, _) = counting("a", "0 * * * *", Duration::from_secs(1));
        other.id = JobId::new("workflow", other.id.resource().clone());
        s.set("workflow", vec![other]);
        s.set("backup", vec![]);
        assert_eq!(s.ids().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_still_running_when_due_again_is_skipped_and_recorded() {
        let bus = Bus::new();
        let mut events = bus.subscribe();
        let s = start(&bus);
        // Every minute, taking 90 s: every other run is skipped.
        let (job, runs) = counting("slow", "* * * * *", Duration::from_secs(90));
        s.set("backup", vec![job]);
        pass_time(30 + 60 * 4 + 1).await;
        // Due at 03:01, :02 (skipped), :03, :04 (skipped), :05.
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(s.skipped(&id("slow")), 2);
        assert_eq!(
            events.try_recv().ok(),
            Some(Event::JobSkipped { job: id("slow") })
        );
        assert_eq!(id("slow").to_string(), "backup/Database/slow");
    }
}

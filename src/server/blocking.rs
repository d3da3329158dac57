//! The API port's blocking threads: what an API worker must not wait for runs here.
//!
//! An API worker serves all of its connections on one thread, so one request that waits for a
//! disk (an older date read from the history store and decompressed) would stall every other
//! client of that worker. Such a request is parked by its worker and handed here as a job; the
//! job answers it and sends the answer back to the worker, which sends it on and goes on with
//! the connection. The worker never waits: handing over a job never blocks.
//!
//! Bounded twice, so cold reads cannot take the machine: a fixed number of threads, and a
//! fixed number of jobs waiting for them. A job that does not fit is given back at once, and
//! the worker answers its request `503` with `Retry-After`. The threads run at a lower
//! scheduling priority than the workers (nice 10, per thread): on a machine with as many cores
//! as workers, a burst of cold reads takes only the CPU that clients of data in memory leave.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// How much lower the blocking threads' priority is than the workers' (`nice`, 0–19).
const NICENESS: i32 = 10;

/// The threads, and the queue in front of them; each job is a `J` given to one function.
pub(super) struct Pool<J> {
    queue: Option<SyncSender<J>>,
    threads: Vec<JoinHandle<()>>,
}

/// What a worker holds to hand jobs over.
pub(super) struct Handoff<J> {
    queue: SyncSender<J>,
}

impl<J: Send + 'static> Pool<J> {
    /// Starts `threads` threads, named `name-N`, that give each job to `work`, behind a queue
    /// of `waiting` jobs.
    pub(super) fn start(
        name: &str,
        threads: usize,
        waiting: usize,
        work: fn(J),
    ) -> io::Result<Self> {
        let (queue, jobs) = mpsc::sync_channel::<J>(waiting);
        let jobs = Arc::new(Mutex::new(jobs));
        let threads = (0..threads)
            .map(|id| {
                let jobs = Arc::clone(&jobs);
                thread::Builder::new().name(format!("{name}-{id}")).spawn(move || run(&jobs, work))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { queue: Some(queue), threads })
    }

    /// A handle for a worker. Every handle must be dropped before [`Pool::finish`] returns.
    pub(super) fn handoff(&self) -> Option<Handoff<J>> {
        self.queue.as_ref().map(|queue| Handoff { queue: queue.clone() })
    }

    /// Lets the threads finish the jobs already queued, then waits for them. Call once the
    /// workers, which hold the other senders, are gone.
    pub(super) fn finish(mut self) {
        self.queue = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                // `run` catches a job's panic; one that escapes it is a bug in this file.
                log::error!("an api blocking thread panicked outside a job");
            }
        }
    }
}

impl<J> Handoff<J> {
    /// Queues `job`, or gives it back at once when the queue is full.
    pub(super) fn try_submit(&self, job: J) -> Result<(), J> {
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }
}

fn run<J>(jobs: &Mutex<Receiver<J>>, work: fn(J)) {
    lower_priority();
    loop {
        // Only the blocking threads share this lock, and it is held only to take a job.
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            // A thread that panicked while holding it left nothing half done: a receiver.
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        if panic::catch_unwind(AssertUnwindSafe(|| work(job))).is_err() {
            log::error!("an api blocking job panicked (a bug); the thread goes on");
        }
    }
}

/// Lowers this thread's scheduling priority. Linux keeps a nice value per thread; lowering it
/// needs no privilege. Failing leaves the thread at the workers' priority, which only costs
/// the workers some CPU under a burst of cold reads: worth a line in the log, not a refusal
/// to serve.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), NICENESS) {
        log::warn!("cannot lower the priority of an api blocking thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Sender, channel};
    use std::time::Duration;

    /// A job for the tests: wait for `hold` (if any), then say `n` on `done`.
    struct Say {
        n: u32,
        hold: Option<Receiver<()>>,
        done: Sender<u32>,
    }

    fn say(job: Say) {
        if let Some(hold) = job.hold {
            let _ = hold.recv_timeout(Duration::from_secs(30));
        }
        assert_ne!(job.n, 13, "a bug in a job");
        let _ = job.done.send(job.n);
    }

    #[test]
    fn a_full_queue_gives_the_job_back_at_once() {
        let pool = Pool::start("test", 1, 1, say).unwrap();
        let handoff = pool.handoff().unwrap();
        let (done, finished) = channel();
        let (hold, held) = channel();
        let (started, starting) = channel();
        // The thread is up once job 0 is done; job 1 then holds it until told.
        assert!(handoff.try_submit(Say { n: 0, hold: None, done: started }).is_ok());
        assert_eq!(starting.recv_timeout(Duration::from_secs(30)).unwrap(), 0);
        assert!(handoff.try_submit(Say { n: 1, hold: Some(held), done: done.clone() }).is_ok());
        // Poll until the thread took job 1 (the queue is empty again), then fill the queue.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut queued = Say { n: 2, hold: None, done: done.clone() };
        while let Err(back) = handoff.try_submit(queued) {
            assert!(std::time::Instant::now() < deadline, "the thread never took job 1");
            queued = back;
            std::thread::yield_now();
        }
        let refused = handoff.try_submit(Say { n: 3, hold: None, done });
        assert_eq!(refused.err().map(|job| job.n), Some(3), "a full queue gives the job back");
        hold.send(()).unwrap();
        assert_eq!(finished.recv_timeout(Duration::from_secs(30)).unwrap(), 1);
        assert_eq!(finished.recv_timeout(Duration::from_secs(30)).unwrap(), 2);
        drop(handoff);
        pool.finish();
    }

    #[test]
    fn a_panicking_job_does_not_take_its_thread() {
        let pool = Pool::start("test", 1, 4, say).unwrap();
        let handoff = pool.handoff().unwrap();
        let (done, finished) = channel();
        assert!(handoff.try_submit(Say { n: 13, hold: None, done: done.clone() }).is_ok());
        assert!(handoff.try_submit(Say { n: 14, hold: None, done }).is_ok());
        assert_eq!(finished.recv_timeout(Duration::from_secs(30)).unwrap(), 14);
        drop(handoff);
        pool.finish();
    }
}

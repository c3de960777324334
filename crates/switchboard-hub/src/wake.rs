//! Wake-ups sent from a thread outside the async runtime, so the tasks woken take their turn.
//!
//! A task woken on a tokio worker goes to the front of that worker's queue (its LIFO slot,
//! then its local queue), ahead of the shared queue where the other runnable tasks wait. A
//! broadcast wakes every connection that has read everything; under load those are the few
//! that were polled last. Woken on the worker, they were polled again at once and wrote one
//! message each, again and again, while the rest waited behind them: at 700 broadcasts/s to
//! 10,000 connections, 27% of the node's writes carried a single message, and the node made
//! twice the writes of the floor (each one a system call and a wake-up of its reader). Woken
//! from another thread, a task goes to the back of the shared queue; every connection takes its
//! turn and writes what arrived since its last.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, mpsc};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A [`Notify`] whose [`notify_waiters`](Self::notify_waiters) runs on the wake thread.
#[derive(Default)]
pub(crate) struct Wakeup {
    notify: Notify,
    /// A wake is on its way: the appends made before it runs need no other.
    pending: AtomicBool,
}

impl Wakeup {
    /// Resolves at the next wake after it is [enabled](Notified::enable) or first polled.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Wakes every task waiting now, soon, from the wake thread. What the caller wrote before
    /// this call is visible to the tasks it wakes.
    pub(crate) fn notify_waiters(self: &Arc<Self>) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let sent = WAKE_THREAD.as_ref().is_some_and(|thread| thread.send(self.clone()).is_ok());
        if !sent {
            // No wake thread (it could not be started): wake from here rather than not at all.
            self.wake_now();
        }
    }

    fn wake_now(&self) {
        // Acquire: the writes before every `notify_waiters` this wake covers happen before the
        // tasks wake. Cleared first, so a call from now on asks for another wake.
        self.pending.swap(false, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// Runs the wakes, in the order asked. One thread for the process: a wake costs it a channel
/// receive and the wake-ups themselves. A waker that panics is not allowed to end the thread,
/// which would leave every hub's broadcasts waking nobody.
static WAKE_THREAD: LazyLock<Option<mpsc::Sender<Arc<Wakeup>>>> = LazyLock::new(|| {
    let (sender, receiver) = mpsc::channel::<Arc<Wakeup>>();
    std::thread::Builder::new()
        .name("switchboard-wake".into())
        .spawn(move || {
            for wakeup in receiver {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wakeup.wake_now()));
            }
        })
        .ok()
        .map(|_| sender)
});

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Waker;
    use std::time::Duration;

    /// A task waiting on `wakeup`, returned once its wait is registered.
    async fn waiter(wakeup: Arc<Wakeup>) -> tokio::task::JoinHandle<()> {
        let (enabled, is_enabled) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let mut notified = pin!(wakeup.notified());
            notified.as_mut().enable();
            let _ = enabled.send(());
            notified.await;
        });
        is_enabled.await.unwrap();
        waiter
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_wakes_and_a_wake_after_a_wake_is_not_lost() {
        let wakeup = Arc::new(Wakeup::default());
        for _ in 0..1_000 {
            let mut waiters = Vec::new();
            for _ in 0..4 {
                waiters.push(waiter(wakeup.clone()).await);
            }
            wakeup.notify_waiters();
            for waiter in waiters {
                tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("a waiter slept through").unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waker_that_panics_does_not_lose_the_wakes_queued_behind_it() {
        /// Says it is being woken, waits for the word, then panics.
        struct Panics {
            waking: std::sync::mpsc::Sender<()>,
            go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
        }
        impl std::task::Wake for Panics {
            fn wake(self: Arc<Self>) {
                let _ = self.waking.send(());
                let _ = self.go.lock().unwrap().recv_timeout(Duration::from_secs(10));
                panic!("a waker that panics");
            }
        }
        let (waking, is_waking) = std::sync::mpsc::channel();
        let (go, gone) = std::sync::mpsc::channel();
        let panics = Waker::from(Arc::new(Panics { waking, go: std::sync::Mutex::new(gone) }));
        let (first, second) = (Arc::new(Wakeup::default()), Arc::new(Wakeup::default()));
        let mut doomed = pin!(first.notified());
        assert!(doomed.as_mut().poll(&mut std::task::Context::from_waker(&panics)).is_pending());
        let waiter = waiter(second.clone()).await;
        first.notify_waiters();
        tokio::task::spawn_blocking(move || is_waking.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the wake thread did not wake the first waiter");
        // Queued while the wake thread is inside the waker that is about to panic.
        second.notify_waiters();
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("the second wake was lost").unwrap();
    }
}

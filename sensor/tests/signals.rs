//! The live commands' stop signal: its handlers are in place from the moment
//! `cli::shutdown_signal` is called, before its future is first polled. The commands log that
//! they are watching between the two, and a SIGTERM there (a service manager stopping the
//! sensor right after its start) must end the loop cleanly, not kill the process.
//!
//! A test binary of its own: it sends SIGTERM to its own process, whose handlers are
//! process-wide.

use std::time::Duration;

#[test]
fn a_sigterm_before_the_first_poll_resolves_the_stop_signal() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stop = sensor::cli::shutdown_signal(None);
        // SAFETY: raise sends a signal to this process; no memory is involved. Had the
        // handler not been installed yet, SIGTERM's default action would end the test
        // process here.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        tokio::time::timeout(Duration::from_secs(10), stop)
            .await
            .expect("the stop signal resolved on SIGTERM");
    });
}

#[test]
fn the_stop_signal_resolves_at_its_limit() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stop = sensor::cli::shutdown_signal(Some(Duration::from_millis(50)));
        tokio::time::timeout(Duration::from_secs(10), stop)
            .await
            .expect("the stop signal resolved at its limit");
    });
}
